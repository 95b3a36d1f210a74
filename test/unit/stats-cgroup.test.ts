// cgroup v1 and v2 readers against fixture trees (test/fixtures/cgroup-v1, cgroup-v2), and the cgroup path rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CgroupV1Reader } from '../../src/stats/cgroup-v1.js';
import { CgroupV2Reader } from '../../src/stats/cgroup-v2.js';
import { cgroupReaderFor } from '../../src/stats/readers.js';
import { cgroupDirFor, detectCgroupVersion, expandSlice, limitFrom, parseFlatKeyed, workingSet } from '../../src/stats/cgroup.js';
import { cgroupDirOf, podCgroupDir } from '../../src/stats/collector.js';

// dist/test/unit → the repository's test/fixtures
const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures');
const V1 = path.join(FIXTURES, 'cgroup-v1');
const V2 = path.join(FIXTURES, 'cgroup-v2');

test('detection: the unified root is v2, a per-controller root is v1', () => {
  assert.equal(detectCgroupVersion(V2), 2);
  assert.equal(detectCgroupVersion(V1), 1);
  assert.equal(cgroupReaderFor(V2).version, 2);
  assert.equal(cgroupReaderFor(V1).version, 1);
});

test('v1: an unlimited container holding 64 MiB', async () => {
  const s = await new CgroupV1Reader(V1).read('/nodelet/0f3c1a2b4d5e');
  assert.deepEqual(s, {
    cpuUsageNs: 1234567890123,
    pids: 2,
    memory: {
      usageBytes: 71303168,
      workingSetBytes: 71303168 - 1757184,
      rssBytes: 67108864,
      pageFaults: 18563,
      majorPageFaults: 3,
      limitBytes: undefined,
    },
  });
});

test('v1: a pod cgroup reads the hierarchical total_* figures; a child reads its own', async () => {
  const reader = new CgroupV1Reader(V1);
  const pod = await reader.read('/kubepods/burstable/pod6b1d7f0e');
  assert.equal(pod?.cpuUsageNs, 5_000_000_000);
  assert.equal(pod?.pids, 4);
  assert.deepEqual(pod?.memory, {
    usageBytes: 20971520,
    workingSetBytes: 20971520 - 4194304,
    rssBytes: 12582912,
    pageFaults: 40000,
    majorPageFaults: 11,
    limitBytes: 268435456,
  });
  const child = await reader.read('kubepods/burstable/pod6b1d7f0e/9a8b7c6d5e4f');
  assert.equal(child?.cpuUsageNs, 4_200_000_000);
  assert.equal(child?.memory?.workingSetBytes, 16777216 - 3145728);
  assert.equal(child?.memory?.limitBytes, 134217728);
  assert.equal(child?.pids, 3);
});

test('v1: missing controllers leave their figures undefined; a missing cgroup reads as undefined', async () => {
  const reader = new CgroupV1Reader(V1);
  const memOnly = await reader.read('/nodelet/memonly');
  assert.equal(memOnly?.cpuUsageNs, undefined);
  assert.equal(memOnly?.pids, undefined);
  assert.equal(memOnly?.memory?.usageBytes, 4096);
  assert.equal(memOnly?.memory?.rssBytes, 4096);
  assert.equal(await reader.read('/nodelet/gone'), undefined);
});

test('v2: a container scope inside a systemd pod slice', async () => {
  const dir = cgroupDirFor('kubepods-besteffort-pod6b1d7f0e.slice:nodelet:9a8b7c6d5e4f');
  assert.equal(dir, '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1d7f0e.slice/nodelet-9a8b7c6d5e4f.scope');
  const s = await new CgroupV2Reader(V2).read(dir);
  assert.deepEqual(s, {
    cpuUsageNs: 2_500_000_000,
    pids: 3,
    memory: {
      usageBytes: 52428800,
      workingSetBytes: 52428800 - 6291456,
      rssBytes: 41943040,
      pageFaults: 12345,
      majorPageFaults: 7,
      limitBytes: 268435456,
    },
  });
});

test('v2: the pod slice and a cgroupfs container; memory.max "max" is no limit', async () => {
  const reader = new CgroupV2Reader(V2);
  const pod = await reader.read(podCgroupDir('kubepods-besteffort-pod6b1d7f0e.slice')!);
  assert.equal(pod?.cpuUsageNs, 7_500_000_000);
  assert.equal(pod?.memory?.usageBytes, 60817408);
  assert.equal(pod?.memory?.workingSetBytes, 60817408 - 6291456);
  assert.equal(pod?.memory?.rssBytes, 50331648);
  assert.equal(pod?.memory?.limitBytes, undefined);
  assert.equal(pod?.pids, 5);
  const c = await reader.read(cgroupDirOf(undefined, '0f3c1a2b4d5e'));
  assert.equal(c?.cpuUsageNs, 1_000_000);
  assert.equal(c?.memory?.workingSetBytes, 1048576 - 131072);
  assert.equal(await reader.read('/nodelet/gone'), undefined);
});

test('cgroup path rules follow the OCI cgroupsPath nodelet writes', () => {
  assert.equal(cgroupDirOf(undefined, 'abc'), '/nodelet/abc');
  assert.equal(cgroupDirOf('/kubepods/burstable/pod1', 'abc'), '/kubepods/burstable/pod1/abc');
  assert.equal(cgroupDirOf('kubepods/pod1', 'abc'), '/kubepods/pod1/abc');
  assert.equal(cgroupDirOf('kubepods-pod1.slice', 'abc'), '/kubepods.slice/kubepods-pod1.slice/nodelet-abc.scope');
  assert.equal(expandSlice('-.slice'), '/');
  assert.equal(expandSlice('a.slice'), '/a.slice');
  assert.equal(podCgroupDir(''), undefined);
  assert.equal(podCgroupDir('kubepods/pod1'), '/kubepods/pod1');
});

test('parsing helpers: flat keyed files, limits, working set never negative', () => {
  const m = parseFlatKeyed('usage_usec 12\nuser_usec 10\n\nbogus\n');
  assert.equal(m.get('usage_usec'), 12);
  assert.equal(m.get('user_usec'), 10);
  assert.equal(m.size, 2);
  assert.equal(limitFrom('max\n'), undefined);
  assert.equal(limitFrom('9223372036854771712\n'), undefined);
  assert.equal(limitFrom('134217728\n'), 134217728);
  assert.equal(workingSet(100, 30), 70);
  assert.equal(workingSet(100, 300), 0);
});
