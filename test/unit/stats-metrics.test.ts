// The cAdvisor metrics: cgroup v1 and v2 detail reads against the fixture trees, /proc figures, and the
// descriptor table against the samples built from them (names critest expects, label keys vs values).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CgroupV1Reader } from '../../src/stats/cgroup-v1.js';
import { CgroupV2Reader } from '../../src/stats/cgroup-v2.js';
import { parseBlkioV1, parseIoStat, parsePressure, sharesFromWeight, type CgroupDetail } from '../../src/stats/cgroup.js';
import { readProcessFigures, softOpenFilesLimit } from '../../src/stats/proc.js';
import { filesystemOf, majorMinor, mountSourceOf } from '../../src/stats/disk-usage.js';
import { CONTAINER_LABEL_KEYS, metricDescriptors, podSandboxMetrics, type MetricsInput } from '../../src/stats/metrics.js';
import type { ContainerRecord, SandboxRecord } from '../../src/runtime/records.js';
import { CRITEST_METRIC_NAMES as CRITEST_NAMES } from '../helpers/critest-metrics.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures');
const V1 = path.join(FIXTURES, 'cgroup-v1');
const V2 = path.join(FIXTURES, 'cgroup-v2');
const V2_SCOPE = '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1d7f0e.slice/nodelet-9a8b7c6d5e4f.scope';


test('v1 detail: CPU split and throttling, memory extras, spec, procs, blkio, hugetlb and pressure from the unified mount', async () => {
  const d = await new CgroupV1Reader(V1).readDetail('/nodelet/0f3c1a2b4d5e');
  assert.ok(d);
  assert.deepEqual(d.cpu, { usageNs: 1234567890123, userNs: 120000 * 10_000_000, systemNs: 3456 * 10_000_000, periods: 40, throttledPeriods: 5, throttledNs: 2_500_000_000 });
  assert.deepEqual(d.spec, { cpuPeriodUs: 100000, cpuQuotaUs: 20000, cpuShares: 2, memoryLimitBytes: 0, memoryReservationBytes: 0, memorySwapLimitBytes: 0 });
  assert.deepEqual(d.memory, {
    usageBytes: 71303168, workingSetBytes: 71303168 - 1757184, rssBytes: 67108864, cacheBytes: 2703360, mappedFileBytes: 1351680, swapBytes: 0,
    kernelBytes: 1048576, maxUsageBytes: 75497472, failcnt: 2, oomKills: 1,
    faults: { container: { minor: 18563, major: 3 }, hierarchy: { minor: 18563, major: 3 } },
  });
  assert.equal(d.threads, 2);
  assert.equal(d.threadsMax, 0, 'pids.max "max" is no limit');
  assert.deepEqual(d.procs, [100, 101]);
  assert.deepEqual(d.blockIo, [{ major: 8, minor: 0, readBytes: 4096, writeBytes: 8192, reads: 1, writes: 2 }]);
  assert.deepEqual(d.hugetlb, [{ pagesize: '2MB', usageBytes: 4194304, maxUsageBytes: 6291456 }]);
  assert.deepEqual(d.pressure, { cpu: { someUs: 3000000, fullUs: 1000000 }, memory: { someUs: 5000000, fullUs: 2000000 }, io: { someUs: 7000000, fullUs: 4000000 } });

  // A pod cgroup: hierarchy faults from total_*, its own from the plain keys; no controller files → nothing invented.
  const pod = await new CgroupV1Reader(V1).readDetail('/kubepods/burstable/pod6b1d7f0e');
  assert.deepEqual(pod?.memory?.faults, { container: { minor: 0, major: 0 }, hierarchy: { minor: 40000, major: 11 } });
  assert.equal(pod?.cpu?.userNs, undefined);
  assert.deepEqual(pod?.blockIo, []);
  assert.deepEqual(pod?.pressure, { cpu: undefined, memory: undefined, io: undefined });
  assert.equal(await new CgroupV1Reader(V1).readDetail('/nodelet/gone'), undefined);
});

test('v2 detail: cpu.max and cpu.weight, memory.events, swap, io.stat, hugetlb.*.current, PSI files', async () => {
  const d = await new CgroupV2Reader(V2).readDetail(V2_SCOPE);
  assert.ok(d);
  assert.deepEqual(d.cpu, { usageNs: 2_500_000_000, userNs: 2_000_000_000, systemNs: 500_000_000, periods: 0, throttledPeriods: 0, throttledNs: 0 });
  assert.deepEqual(d.spec, {
    cpuPeriodUs: 100000, cpuQuotaUs: 20000, cpuShares: sharesFromWeight(100),
    memoryLimitBytes: 268435456, memoryReservationBytes: 16777216, memorySwapLimitBytes: 0,
  });
  assert.deepEqual(d.memory, {
    usageBytes: 52428800, workingSetBytes: 52428800 - 6291456, rssBytes: 41943040, cacheBytes: 8388608, mappedFileBytes: 2097152, swapBytes: 1048576,
    kernelBytes: 1212416, maxUsageBytes: 60000000, failcnt: 4, oomKills: 1,
    faults: { container: { minor: 12345, major: 7 }, hierarchy: { minor: 12345, major: 7 } },
  });
  assert.equal(d.threads, 3);
  assert.equal(d.threadsMax, 1024);
  assert.deepEqual(d.procs, [4242, 4250, 4251]);
  assert.deepEqual(d.blockIo, [{ major: 8, minor: 0, readBytes: 1048576, writeBytes: 2097152, reads: 10, writes: 20 }]);
  assert.deepEqual(d.hugetlb, [{ pagesize: '1GB', usageBytes: 0 }, { pagesize: '2MB', usageBytes: 2097152 }]);
  assert.deepEqual(d.pressure.io, { someUs: 9000000, fullUs: 8000000 });
  // The pod slice has neither cpu.max nor hugetlb files: those stay empty.
  const pod = await new CgroupV2Reader(V2).readDetail('/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1d7f0e.slice');
  assert.equal(pod?.spec.cpuQuotaUs, undefined);
  assert.deepEqual(pod?.hugetlb, []);
  assert.equal(await new CgroupV2Reader(V2).readDetail('/nodelet/gone'), undefined);
});

test('parsers: PSI, blkio, io.stat, weight to shares, open-files limit, dev numbers, mountinfo', () => {
  assert.deepEqual(parsePressure('some avg10=1.00 avg60=0.00 avg300=0.00 total=42\n'), { someUs: 42, fullUs: undefined });
  assert.equal(parsePressure(undefined), undefined);
  assert.deepEqual(parseBlkioV1('Total 0\n', undefined), []);
  assert.deepEqual(parseIoStat('253:1 rbytes=5 wbytes=6 rios=7 wios=8\n\n'), [{ major: 253, minor: 1, readBytes: 5, writeBytes: 6, reads: 7, writes: 8 }]);
  assert.equal(sharesFromWeight(1), 2);
  assert.equal(sharesFromWeight(10000), 262144);
  assert.equal(softOpenFilesLimit('Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n'), 1024);
  assert.equal(softOpenFilesLimit('Max open files            unlimited            unlimited            files\n'), undefined);
  assert.equal(majorMinor(0x803), '8:3');
  assert.equal(majorMinor(259 * 256 + 1), '259:1');
  const mountinfo = '22 1 0:21 / /proc rw - proc proc rw\n29 1 8:3 / / rw,relatime - ext4 /dev/sda3 rw\n';
  assert.equal(mountSourceOf(mountinfo, '8:3'), '/dev/sda3');
  assert.equal(mountSourceOf(mountinfo, '8:4'), undefined);
});

test('process figures: descriptors and sockets of every process, the open-files limit of the container process', async () => {
  const proc = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-proc-'));
  try {
    const fds = async (pid: number, targets: string[]) => {
      await fsp.mkdir(path.join(proc, String(pid), 'fd'), { recursive: true });
      for (const [i, t] of targets.entries()) await fsp.symlink(t, path.join(proc, String(pid), 'fd', String(i)));
    };
    await fds(10, ['/dev/null', 'socket:[1234]', 'pipe:[55]']);
    await fds(11, ['socket:[99]', 'socket:[100]']);
    await fsp.writeFile(path.join(proc, '10', 'limits'), 'Max open files            2048                 4096                 files\n');
    await fsp.writeFile(path.join(proc, '11', 'limits'), 'Max open files            512                  4096                 files\n');
    assert.deepEqual(await readProcessFigures([10, 11, 12], { procRoot: proc }), { fileDescriptors: 5, sockets: 3, maxOpenFilesSoft: 2048 });
    assert.equal((await readProcessFigures([10, 11], { procRoot: proc, rootPid: 11 })).maxOpenFilesSoft, 512);
    assert.deepEqual(await readProcessFigures([], { procRoot: proc }), { fileDescriptors: 0, sockets: 0 });
  } finally {
    await fsp.rm(proc, { recursive: true, force: true });
  }
});

test('filesystem figures: capacity and inodes of the directory\'s filesystem', async () => {
  const fs = await filesystemOf(os.tmpdir());
  assert.ok(fs && fs.capacityBytes > 0 && fs.inodesTotal >= fs.inodesFree && fs.device !== '');
  assert.equal(await filesystemOf(path.join(os.tmpdir(), 'no-such-dir-nodelet')), undefined);
});

function sandbox(): SandboxRecord {
  return {
    id: 'pod1', phase: 'ready', state: 'SANDBOX_READY', reservedName: 'p', createdAt: '1700000000000000000', runtimeHandler: 'runc',
    hostNetwork: false, ips: [], networkAttached: true, shmPath: '', shmMounted: false,
    config: { metadata: { name: 'web', namespace: 'ns1', uid: 'u', attempt: 0 } } as any,
  };
}

function container(id: string): ContainerRecord {
  return {
    id, sandboxId: 'pod1', phase: 'ready', state: 'CONTAINER_RUNNING', reservedName: id, runtimeHandler: 'runc', imageName: 'busybox:1.36',
    imageId: 'sha256:1', imageRef: 'busybox@sha256:1', logPath: '', rootfs: '', rootfsMounted: true, stopSignal: 'SIGTERM', createdAt: '0',
    config: { metadata: { name: `ctr-${id}`, attempt: 0 } } as any,
  };
}

function containerInput(detail: CgroupDetail): MetricsInput {
  return {
    timestampNs: 1_700_000_100_000_000_000n,
    cgroup: detail,
    processes: { fileDescriptors: 7, sockets: 2, maxOpenFilesSoft: 1024 },
    rootfs: { fs: { device: '/dev/sda3', capacityBytes: 1e10, inodesTotal: 1000, inodesFree: 600 }, usageBytes: 8192 },
    blockDevices: new Map([['8:0', '/dev/sda']]),
    startTimeSeconds: 1_700_000_050,
  };
}

for (const [version, read] of [
  ['v1', () => new CgroupV1Reader(V1).readDetail('/nodelet/0f3c1a2b4d5e')],
  ['v2', () => new CgroupV2Reader(V2).readDetail(V2_SCOPE)],
] as const) {
  test(`${version}: every descriptor has samples, with as many label values as it has label keys`, async () => {
    const descriptors = metricDescriptors();
    const byName = new Map(descriptors.map((d) => [d.name, d]));
    for (const name of CRITEST_NAMES) assert.ok(byName.has(name), `descriptor ${name}`);
    for (const d of descriptors) {
      assert.ok(d.help, `${d.name} help`);
      assert.deepEqual(d.label_keys.slice(0, 6), [...CONTAINER_LABEL_KEYS], `${d.name} base labels`);
    }
    assert.equal(byName.size, descriptors.length, 'no name twice');

    const detail = (await read())!;
    const pod: MetricsInput = {
      timestampNs: 1_700_000_100_000_000_000n,
      cgroup: detail,
      network: [{ name: 'eth0', rxBytes: 10, rxPackets: 1, rxErrors: 0, rxDropped: 0, txBytes: 20, txPackets: 2, txErrors: 0, txDropped: 0 }],
      startTimeSeconds: 1_700_000_000,
    };
    const msg = podSandboxMetrics(sandbox(), pod, [{ rec: container('c1'), input: containerInput(detail) }, { rec: container('gone'), input: undefined }]);
    const all = [...msg.metrics, ...msg.container_metrics.flatMap((c) => c.metrics)];
    const v2MissesHugetlbPeak = version === 'v2' ? ['container_hugetlb_max_usage_bytes'] : [];
    for (const d of descriptors) {
      const samples = all.filter((m) => m.name === d.name);
      if (v2MissesHugetlbPeak.includes(d.name)) {
        assert.equal(samples.length, 0, 'v2 keeps no hugetlb high-water mark');
        continue;
      }
      assert.ok(samples.length > 0, `samples for ${d.name}`);
      for (const s of samples) assert.equal(s.label_values.length, d.label_keys.length, `${d.name} labels ${s.label_values.join(',')}`);
    }
    for (const m of all) assert.ok(byName.has(m.name), `${m.name} is described`);
    assert.deepEqual(msg.container_metrics.find((c) => c.container_id === 'gone')?.metrics, []);

    const ctr = msg.container_metrics.find((c) => c.container_id === 'c1')!.metrics;
    const get = (name: string, extra: string[] = []) => ctr.find((m) => m.name === name && m.label_values.slice(6).join('|') === extra.join('|'));
    assert.deepEqual(get('container_memory_working_set_bytes')?.label_values, ['ctr-c1', 'c1', 'busybox:1.36', 'c1', 'ns1', 'web']);
    assert.equal(get('container_memory_working_set_bytes')?.value.value, detail.memory!.workingSetBytes);
    assert.equal(get('container_memory_failures_total', ['pgmajfault', 'container'])?.value.value, detail.memory!.faults.container.major);
    assert.equal(get('container_spec_cpu_quota')?.value.value, 20000);
    assert.equal(get('container_cpu_cfs_throttled_seconds_total')?.value.value, version === 'v1' ? 2 : 0);
    assert.equal(get('container_blkio_device_usage_total', ['/dev/sda', '8', '0', 'Write'])?.value.value, detail.blockIo[0]!.writeBytes);
    assert.equal(get('container_fs_reads_total', ['/dev/sda'])?.value.value, detail.blockIo[0]!.reads);
    assert.equal(get('container_fs_usage_bytes', ['/dev/sda3'])?.value.value, 8192);
    assert.equal(get('container_fs_inodes_free', ['/dev/sda3'])?.value.value, 600);
    assert.equal(get('container_ulimits_soft', ['max_open_files'])?.value.value, 1024);
    assert.equal(get('container_processes')?.value.value, detail.procs.length);
    assert.equal(get('container_oom_events_total')?.value.value, 1);
    assert.equal(get('container_start_time_seconds')?.value.value, 1_700_000_050);
    assert.equal(get('container_last_seen')?.value.value, 1_700_000_100);
    assert.equal(get('container_cpu_usage_seconds_total', ['total'])?.metric_type, 'COUNTER');
    assert.equal(get('container_pressure_io_stalled_seconds_total')?.value.value, version === 'v1' ? 4 : 8);
    assert.equal(get('container_hugetlb_usage_bytes', ['2MB'])?.value.value, version === 'v1' ? 4194304 : 2097152);
    assert.equal(ctr.find((m) => m.name.startsWith('container_network_')), undefined, 'network is the pod\'s');
    const rx = msg.metrics.find((m) => m.name === 'container_network_receive_bytes_total');
    assert.deepEqual(rx?.label_values, ['', 'pod1', '', 'pod1', 'ns1', 'web', 'eth0']);
    assert.equal(rx?.value.value, 10);
    assert.equal(rx?.timestamp, '1700000100000000000');
  });
}
