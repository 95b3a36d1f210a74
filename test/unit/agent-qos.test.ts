// QoS class, pod cgroup path and limits, container resources, and the cgroup files for v1 and v2: tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { computeQosClass, containerLinuxResources, oomScoreAdj, podCgroupLimits, podCgroupParent, qosClassOf, sharesToWeight } from '../../src/agent/qos.js';
import { PodCgroups, cgroupLayoutFromMounts, cgroupLimitWrites, subtreeControlWrites } from '../../src/agent/pod-cgroups.js';
import { logger } from '../../src/common/log.js';

const c = (name: string, requests?: Record<string, string>, limits?: Record<string, string>, extra: Partial<V1Container> = {}): V1Container => ({
  name,
  image: 'i',
  resources: { ...(requests ? { requests } : {}), ...(limits ? { limits } : {}) },
  ...extra,
});
const pod = (containers: V1Container[], initContainers: V1Container[] = [], overhead?: Record<string, string>): V1Pod => ({
  metadata: { name: 'p', namespace: 'ns', uid: 'u1' },
  spec: { containers, initContainers, ...(overhead ? { overhead } : {}) },
});

test('QoS class as the kubelet computes it', () => {
  const cases: [string, V1Pod, string][] = [
    ['no resources', pod([c('a')]), 'BestEffort'],
    ['only zero requests', pod([c('a', { cpu: '0', memory: '0' })]), 'BestEffort'],
    ['only extended resources', pod([c('a', { 'example.com/gpu': '1' }, { 'example.com/gpu': '1' })]), 'BestEffort'],
    ['limits = requests, cpu and memory', pod([c('a', { cpu: '500m', memory: '64Mi' }, { cpu: '0.5', memory: '64Mi' })]), 'Guaranteed'],
    ['limits only (requests default to them)', pod([c('a', undefined, { cpu: '1', memory: '1Gi' })]), 'Guaranteed'],
    ['cpu limit only', pod([c('a', undefined, { cpu: '1' })]), 'Burstable'],
    ['request below limit', pod([c('a', { cpu: '100m', memory: '64Mi' }, { cpu: '200m', memory: '64Mi' })]), 'Burstable'],
    ['one container without limits', pod([c('a', undefined, { cpu: '1', memory: '1Gi' }), c('b')]), 'Burstable'],
    ['init container counts', pod([c('a', undefined, { cpu: '1', memory: '1Gi' })], [c('i', { cpu: '100m' })]), 'Burstable'],
    ['requests only', pod([c('a', { memory: '10Mi' })]), 'Burstable'],
  ];
  for (const [what, p, want] of cases) assert.equal(computeQosClass(p), want, what);
  const admitted = pod([c('a', { cpu: '2' }, { cpu: '2', memory: '1Gi' })]);
  admitted.status = { qosClass: 'Guaranteed' };
  assert.equal(qosClassOf(admitted), 'Guaranteed', 'the class the API holds wins (a resize never changes it)');
});

test('pod cgroup parent per QoS class', () => {
  assert.equal(podCgroupParent('/', 'Guaranteed', 'u1'), '/kubepods/podu1');
  assert.equal(podCgroupParent('/', 'Burstable', 'u1'), '/kubepods/burstable/podu1');
  assert.equal(podCgroupParent('/', 'BestEffort', 'u1'), '/kubepods/besteffort/podu1');
  assert.equal(podCgroupParent('/test-root/', 'Burstable', 'u1'), '/test-root/kubepods/burstable/podu1');
});

test('pod cgroup limits: sums, init peaks, sidecars, overhead', () => {
  const Mi = 2 ** 20;
  const cases: [string, V1Pod, ReturnType<typeof podCgroupLimits>][] = [
    ['best effort', pod([c('a')]), { cpuShares: 2, cpuPeriodUs: 100_000 }],
    ['burstable, requests only: shares, no quota, no memory limit', pod([c('a', { cpu: '250m', memory: '64Mi' })]), { cpuShares: 256, cpuPeriodUs: 100_000 }],
    ['burstable, every container limited: quota and memory', pod([c('a', { cpu: '100m' }, { cpu: '200m', memory: '64Mi' }), c('b', undefined, { cpu: '300m', memory: '32Mi' })]),
      { cpuShares: 409, cpuQuotaUs: 50_000, cpuPeriodUs: 100_000, memoryLimitBytes: 96 * Mi }],
    ['one container unlimited: no pod quota', pod([c('a', undefined, { cpu: '200m', memory: '64Mi' }), c('b', { cpu: '100m' })]),
      { cpuShares: 307, cpuPeriodUs: 100_000 }],
    ['guaranteed with overhead', pod([c('a', undefined, { cpu: '1', memory: '128Mi' })], [], { cpu: '250m', memory: '32Mi' }),
      { cpuShares: 1280, cpuQuotaUs: 125_000, cpuPeriodUs: 100_000, memoryLimitBytes: 160 * Mi }],
    ['init container larger than the app containers', pod([c('a', undefined, { cpu: '100m', memory: '16Mi' })], [c('i', undefined, { cpu: '2', memory: '256Mi' })]),
      { cpuShares: 2048, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000, memoryLimitBytes: 256 * Mi }],
    ['sidecar adds to the app containers and to later init containers',
      pod([c('a', undefined, { cpu: '100m', memory: '16Mi' })], [c('s', undefined, { cpu: '100m', memory: '16Mi' }, { restartPolicy: 'Always' } as any), c('i', undefined, { cpu: '500m', memory: '16Mi' })]),
      { cpuShares: 614, cpuQuotaUs: 60_000, cpuPeriodUs: 100_000, memoryLimitBytes: 32 * Mi }],
  ];
  for (const [what, p, want] of cases) assert.deepEqual(podCgroupLimits(p, computeQosClass(p)), want, what);
});

test('container resources and oom_score_adj', () => {
  assert.deepEqual(containerLinuxResources(c('a', { cpu: '250m', memory: '100Mi' }, { cpu: '500m', memory: '200Mi' }), 'Burstable', 1000 * 2 ** 20), {
    cpu_period: 100_000, cpu_shares: 256, cpu_quota: 50_000, memory_limit_in_bytes: 200 * 2 ** 20, oom_score_adj: 900,
  });
  assert.deepEqual(containerLinuxResources(c('a'), 'BestEffort'), { cpu_period: 100_000, cpu_shares: 2, oom_score_adj: 1000 });
  assert.deepEqual(containerLinuxResources(c('a', undefined, { cpu: '1m', memory: '1Gi' }), 'Guaranteed'), {
    cpu_period: 100_000, cpu_shares: 2, cpu_quota: 1000, memory_limit_in_bytes: 2 ** 30, oom_score_adj: -997,
  });
  assert.equal(oomScoreAdj('Burstable', 999, 1000), 2, 'never as low as a guaranteed pod');
  assert.equal(oomScoreAdj('Burstable', 0, 1000), 999, 'never as high as a best-effort pod');
});

const V1_MOUNTS = `cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`;
const V2_MOUNTS = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n';

test('cgroup layout and files: v1 (hybrid) and v2', () => {
  const v1 = cgroupLayoutFromMounts(V1_MOUNTS);
  assert.equal(v1.version, 1);
  const limits = { cpuShares: 512, cpuQuotaUs: 50_000, cpuPeriodUs: 100_000, memoryLimitBytes: 1 << 26 };
  assert.deepEqual(cgroupLimitWrites(v1, '/kubepods/burstable/podu1', limits).map((w) => `${w.dir}/${w.file}=${w.value}`), [
    '/sys/fs/cgroup/cpu/kubepods/burstable/podu1/cpu.shares=512',
    '/sys/fs/cgroup/cpu/kubepods/burstable/podu1/cpu.cfs_period_us=100000',
    '/sys/fs/cgroup/cpu/kubepods/burstable/podu1/cpu.cfs_quota_us=50000',
    '/sys/fs/cgroup/memory/kubepods/burstable/podu1/memory.limit_in_bytes=67108864',
  ]);
  assert.deepEqual(cgroupLimitWrites(v1, '/p', { cpuShares: 2, cpuPeriodUs: 100_000 }).slice(2).map((w) => w.value), ['-1', '-1'], 'absent limits are lifted');
  assert.deepEqual(subtreeControlWrites(v1, '/p'), []);
  const v2 = cgroupLayoutFromMounts(V2_MOUNTS);
  assert.deepEqual(v2, { version: 2, root: '/sys/fs/cgroup' });
  assert.deepEqual(cgroupLimitWrites(v2, '/kubepods/podu1', limits).map((w) => `${w.file}=${w.value}`), ['cpu.weight=20', 'cpu.max=50000 100000', 'memory.max=67108864']);
  assert.deepEqual(cgroupLimitWrites(v2, '/p', { cpuShares: 2, cpuPeriodUs: 100_000 }).map((w) => w.value), ['1', 'max 100000', 'max']);
  assert.deepEqual(subtreeControlWrites(v2, '/kubepods/burstable/podu1').map((w) => w.dir), ['/sys/fs/cgroup', '/sys/fs/cgroup/kubepods', '/sys/fs/cgroup/kubepods/burstable']);
  assert.equal(sharesToWeight(1024), 39);
  assert.equal(sharesToWeight(262_144), 10_000);
});

test('v2 pod cgroup made, limited and removed in a fixture tree', async () => {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cg2-'));
  try {
    const cg = new PodCgroups({ version: 2, root }, logger({ component: 'test' }));
    await cg.ensure('/kubepods/burstable/podu1', { cpuShares: 1024, cpuQuotaUs: 20_000, cpuPeriodUs: 100_000 });
    const dir = path.join(root, 'kubepods/burstable/podu1');
    assert.equal(await fsp.readFile(path.join(dir, 'cpu.max'), 'utf8'), '20000 100000');
    assert.equal(await fsp.readFile(path.join(dir, 'memory.max'), 'utf8'), 'max');
    assert.equal(await fsp.readFile(path.join(root, 'kubepods/cgroup.subtree_control'), 'utf8'), '+cpu +memory +pids');
    // A real cgroup directory holds only interface files, which rmdir ignores; the fixture's files stand in for none.
    for (const f of await fsp.readdir(dir)) await fsp.rm(path.join(dir, f));
    await cg.remove('/kubepods/burstable/podu1');
    await assert.rejects(fsp.stat(dir), { code: 'ENOENT' });
    await fsp.stat(path.join(root, 'kubepods/burstable'));
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
});
