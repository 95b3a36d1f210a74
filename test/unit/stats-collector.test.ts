// The stats cache over a copied fixture tree: nano-cores over a window, pod sums, network counters,
// writable layers, filters and metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { StatsCollector, nanoCoresBetween, sumParts, type Clock, type StatsSource } from '../../src/stats/collector.js';
import { CgroupV1Reader } from '../../src/stats/cgroup-v1.js';
import { CgroupV2Reader } from '../../src/stats/cgroup-v2.js';
import { diskUsage } from '../../src/stats/disk-usage.js';
import { containerSelected, sandboxSelected } from '../../src/stats/filters.js';
import { metricDescriptors, podSandboxMetrics } from '../../src/stats/metrics.js';
import type { ContainerRecord, SandboxRecord } from '../../src/runtime/records.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures');
const SLICE = 'kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1d7f0e.slice';
const SCOPE = `${SLICE}/nodelet-9a8b7c6d5e4f.scope`;

function sandbox(id: string, extra: Partial<SandboxRecord> = {}, parent = ''): SandboxRecord {
  return {
    id, phase: 'ready', state: 'SANDBOX_READY', reservedName: id, createdAt: '0', runtimeHandler: 'runc',
    hostNetwork: false, ips: [], networkAttached: true, shmPath: '', shmMounted: false,
    config: { metadata: { name: `pod-${id}`, namespace: 'ns1', uid: 'u', attempt: 0 }, labels: { app: id }, annotations: {}, linux: { cgroup_parent: parent } } as any,
    ...extra,
  };
}

function container(id: string, sandboxId: string, extra: Partial<ContainerRecord> = {}): ContainerRecord {
  return {
    id, sandboxId, phase: 'ready', state: 'CONTAINER_RUNNING', reservedName: id, runtimeHandler: 'runc',
    imageName: 'busybox:latest', imageId: 'sha256:1', imageRef: 'busybox@sha256:1', logPath: '', rootfs: '', rootfsMounted: true,
    stopSignal: 'SIGTERM', createdAt: '0',
    config: { metadata: { name: `ctr-${id}`, attempt: 0 }, labels: { tier: 'web', name: id }, annotations: {} } as any,
    ...extra,
  };
}

class FakeClock implements Clock {
  mono = 1_000_000_000n;
  wall = 1_700_000_000_000_000_000n;
  wallNs() { return this.wall; }
  monoNs() { return this.mono; }
  advance(seconds: number) {
    this.mono += BigInt(seconds * 1e9);
    this.wall += BigInt(seconds * 1e9);
  }
}

const NET_DEV = (rx: number, tx: number) => `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0: ${rx}      40    1    0    0     0          0         0   ${tx}      30    2    0    0     0       0          0
`;

async function tempCopy(name: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-stats-'));
  await fsp.cp(path.join(FIXTURES, name), path.join(dir, 'cgroup'), { recursive: true });
  return dir;
}

test('nano-cores: CPU ns per wall ns over the window, times 1e9', () => {
  assert.equal(nanoCoresBetween({ monoNs: 0n, usageNs: 0 }, { monoNs: 2_000_000_000n, usageNs: 1_000_000_000 }), 500_000_000);
  assert.equal(nanoCoresBetween({ monoNs: 0n, usageNs: 0 }, { monoNs: 1_000_000_000n, usageNs: 2_000_000_000 }), 2_000_000_000);
  assert.equal(nanoCoresBetween({ monoNs: 5n, usageNs: 0 }, { monoNs: 5n, usageNs: 10 }), undefined, 'empty window');
  assert.equal(nanoCoresBetween({ monoNs: 0n, usageNs: 10 }, { monoNs: 10n, usageNs: 5 }), undefined, 'counter reset');
});

test('pod sums: figures add up; the pod rate waits for every member', () => {
  const m = { usageBytes: 10, workingSetBytes: 8, rssBytes: 5, pageFaults: 3, majorPageFaults: 1 };
  const sum = sumParts([{ cpu: { usageNs: 100, nanoCores: 7 }, memory: m, pids: 1 }, { cpu: { usageNs: 50, nanoCores: 3 }, memory: m, pids: 2 }]);
  assert.deepEqual(sum, { cpu: { usageNs: 150, nanoCores: 10 }, memory: { usageBytes: 20, workingSetBytes: 16, rssBytes: 10, pageFaults: 6, majorPageFaults: 2 }, pids: 3 });
  assert.equal(sumParts([{ cpu: { usageNs: 1, nanoCores: 7 } }, { cpu: { usageNs: 1 } }]).cpu?.nanoCores, undefined);
  assert.deepEqual(sumParts([]), {});
});

test('collector (v2): two samples give usage_nano_cores; pod from its slice; network from the infra pid', async () => {
  const dir = await tempCopy('cgroup-v2');
  try {
    const root = path.join(dir, 'cgroup');
    const proc = path.join(dir, 'proc');
    await fsp.mkdir(path.join(proc, '4242', 'net'), { recursive: true });
    await fsp.writeFile(path.join(proc, '4242', 'net', 'dev'), NET_DEV(1000, 500));
    const pod = sandbox('s1', { infraPid: 4242 }, 'kubepods-besteffort-pod6b1d7f0e.slice');
    const records = { sandboxes: [pod], containers: [container('9a8b7c6d5e4f', 's1'), container('exited', 's1', { state: 'CONTAINER_EXITED' })] };
    const source: StatsSource = { containers: () => records.containers, sandboxes: () => records.sandboxes, upperDirOf: (id) => path.join(dir, 'upper', id) };
    const clock = new FakeClock();
    const collector = new StatsCollector({ source, reader: new CgroupV2Reader(root), periodMs: 1000, writableLayerPeriodMs: 1000, procRoot: proc, clock });

    await collector.sample();
    const first = collector.container('9a8b7c6d5e4f');
    assert.equal(first?.cpu?.usageNs, 2_500_000_000);
    assert.equal(first?.cpu?.nanoCores, undefined, 'no window after one sample');
    assert.equal(first?.memory?.workingSetBytes, 52428800 - 6291456);
    assert.equal(first?.timestampNs, clock.wall);
    assert.equal(collector.container('exited'), undefined, 'only running containers are sampled');

    // 2 s later: the container used 1 s of CPU (half a core), the pod 2 s (one core).
    clock.advance(2);
    await fsp.writeFile(path.join(root, SCOPE, 'cpu.stat'), 'usage_usec 3500000\nuser_usec 3000000\nsystem_usec 500000\n');
    await fsp.writeFile(path.join(root, SLICE, 'cpu.stat'), 'usage_usec 9500000\nuser_usec 8000000\nsystem_usec 1500000\n');
    await fsp.writeFile(path.join(proc, '4242', 'net', 'dev'), NET_DEV(5000, 2500));
    await collector.sample();
    const second = collector.container('9a8b7c6d5e4f');
    assert.equal(second?.cpu?.usageNs, 3_500_000_000);
    assert.equal(second?.cpu?.nanoCores, 500_000_000);
    const podSnap = collector.sandbox('s1');
    assert.equal(podSnap?.cpu?.nanoCores, 1_000_000_000);
    assert.equal(podSnap?.memory?.usageBytes, 60817408);
    assert.equal(podSnap?.pids, 5);
    assert.deepEqual(podSnap?.network?.interfaces.map((i) => [i.name, i.rxBytes, i.txBytes, i.rxErrors, i.txErrors]), [['eth0', 5000, 2500, 1, 2]]);

    // Metrics for the pod: pod-level usage and network under container="", each container under its name.
    const metrics = podSandboxMetrics(
      pod,
      await collector.sandboxMetrics(pod),
      await Promise.all(records.containers.map(async (rec) => ({ rec, input: await collector.containerMetrics(rec) }))),
    );
    const rx = metrics.metrics.find((m) => m.name === 'container_network_receive_bytes_total');
    assert.deepEqual(rx?.label_values, ['', 's1', '', 's1', 'ns1', 'pod-s1', 'eth0']);
    assert.equal(rx?.value.value, 5000);
    assert.equal(rx?.metric_type, 'COUNTER');
    const ctrMetrics = metrics.container_metrics.find((c) => c.container_id === '9a8b7c6d5e4f')!.metrics;
    const ws = ctrMetrics.find((m) => m.name === 'container_memory_working_set_bytes');
    assert.equal(ws?.value.value, 52428800 - 6291456);
    assert.equal(ws?.metric_type, 'GAUGE');
    assert.deepEqual(ws?.label_values, ['ctr-9a8b7c6d5e4f', '9a8b7c6d5e4f', 'busybox:latest', '9a8b7c6d5e4f', 'ns1', 'pod-s1']);
    const cpu = ctrMetrics.find((m) => m.name === 'container_cpu_usage_seconds_total');
    assert.equal(cpu?.value.value, 3);
    assert.deepEqual(cpu?.label_values.slice(6), ['total']);
    assert.deepEqual(metrics.container_metrics.find((c) => c.container_id === 'exited')?.metrics, []);
    const names = new Set(metricDescriptors().map((d) => d.name));
    for (const m of [...metrics.metrics, ...ctrMetrics]) assert.ok(names.has(m.name), `${m.name} has a descriptor`);

    // The container goes away: its entry is dropped at the next pass.
    records.containers = [];
    await collector.sample();
    assert.equal(collector.container('9a8b7c6d5e4f'), undefined);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('collector (v1): a pod without a cgroup of its own is the sum of its members; host network has no network stats', async () => {
  const dir = await tempCopy('cgroup-v1');
  try {
    const root = path.join(dir, 'cgroup');
    const records = { sandboxes: [sandbox('s2', { hostNetwork: true, infraPid: 1 })], containers: [container('0f3c1a2b4d5e', 's2')] };
    const collector = new StatsCollector({
      source: { containers: () => records.containers, sandboxes: () => records.sandboxes, upperDirOf: (id) => path.join(dir, 'upper', id) },
      reader: new CgroupV1Reader(root), periodMs: 1000, writableLayerPeriodMs: 1000, clock: new FakeClock(),
    });
    await collector.sample();
    const pod = collector.sandbox('s2');
    assert.equal(pod?.cpu?.usageNs, 1234567890123);
    assert.equal(pod?.memory?.workingSetBytes, 71303168 - 1757184);
    assert.equal(pod?.pids, 2);
    assert.equal(pod?.network, undefined);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('writable layer: bytes and inodes of the upper dir, walked in the background pass', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-upper-'));
  try {
    const upper = path.join(dir, 'c1', 'upper');
    await fsp.mkdir(path.join(upper, 'etc'), { recursive: true });
    await fsp.writeFile(path.join(upper, 'etc', 'big'), Buffer.alloc(1024 * 1024, 1));
    await fsp.link(path.join(upper, 'etc', 'big'), path.join(upper, 'hardlink'));
    await fsp.symlink('etc/big', path.join(upper, 'symlink'));
    const usage = await diskUsage(upper);
    assert.equal(usage?.inodes, 4, 'upper, etc, big (once for two links), symlink');
    assert.ok(usage!.bytes >= 1024 * 1024 && usage!.bytes < 1024 * 1024 + 64 * 1024, `bytes ${usage!.bytes}`);
    assert.equal(await diskUsage(path.join(dir, 'missing')), undefined);

    const records = { sandboxes: [] as SandboxRecord[], containers: [container('c1', 's'), container('c2', 's')] };
    const collector = new StatsCollector({
      source: { containers: () => records.containers, sandboxes: () => records.sandboxes, upperDirOf: (id) => path.join(dir, id, 'upper') },
      reader: new CgroupV2Reader(path.join(dir, 'no-cgroups')), periodMs: 1000, writableLayerPeriodMs: 1000, clock: new FakeClock(),
    });
    await collector.walkWritableLayers();
    assert.equal(collector.writableLayer('c1')?.inodes, 4);
    assert.equal(collector.writableLayer('c2'), undefined, 'no upper dir yet');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('filters: ids by prefix, pod id, labels exactly; records still being created are never listed', () => {
  const c = container('abcdef', 'pod123');
  assert.ok(containerSelected(c, null));
  assert.ok(containerSelected(c, { id: 'abc', pod_sandbox_id: '', label_selector: {} }));
  assert.ok(!containerSelected(c, { id: 'abd' }));
  assert.ok(containerSelected(c, { pod_sandbox_id: 'pod1' }));
  assert.ok(!containerSelected(c, { pod_sandbox_id: 'pod2' }));
  assert.ok(containerSelected(c, { label_selector: { tier: 'web' } }));
  assert.ok(!containerSelected(c, { label_selector: { tier: 'web', extra: 'x' } }));
  assert.ok(!containerSelected(container('x', 'p', { phase: 'creating' }), null));
  const s = sandbox('sbx1');
  assert.ok(sandboxSelected(s, { id: 'sbx', label_selector: { app: 'sbx1' } }));
  assert.ok(!sandboxSelected(s, { id: '', label_selector: { app: 'other' } }));
  assert.ok(!sandboxSelected(sandbox('sbx2', { phase: 'creating' }), null));
});

test('on demand: a container or pod not sampled yet is read once, however many callers ask at the same time', async () => {
  const dir = await tempCopy('cgroup-v2');
  try {
    const inner = new CgroupV2Reader(path.join(dir, 'cgroup'));
    const reads: string[] = [];
    const reader = { version: 2 as const, read: (p: string) => (reads.push(p), inner.read(p)), readDetail: (p: string) => inner.readDetail(p) };
    const pod = sandbox('s1', {}, 'kubepods-besteffort-pod6b1d7f0e.slice');
    const ctr = container('9a8b7c6d5e4f', 's1');
    const records = { sandboxes: [pod], containers: [ctr, container('created', 's1', { state: 'CONTAINER_CREATED' })] };
    const clock = new FakeClock();
    const collector = new StatsCollector({
      source: { containers: () => records.containers, sandboxes: () => records.sandboxes, upperDirOf: (id) => path.join(dir, 'upper', id) },
      reader, periodMs: 3_600_000, writableLayerPeriodMs: 3_600_000, clock,
    });
    assert.equal(collector.container(ctr.id), undefined, 'the timer has not run');
    const answers = await Promise.all([collector.containerNow(ctr), collector.containerNow(ctr), collector.containerNow(ctr)]);
    assert.deepEqual(reads, [`/${SCOPE}`], 'one read for three callers');
    for (const a of answers) {
      assert.equal(a?.cpu?.usageNs, 2_500_000_000);
      assert.equal(a?.memory?.workingSetBytes, 52428800 - 6291456);
      assert.equal(a?.timestampNs, clock.wall);
    }
    await collector.containerNow(ctr);
    assert.equal(reads.length, 1, 'answered from the cache afterwards');
    assert.equal(await collector.containerNow(records.containers[1]!), undefined, 'a created container has no cgroup figures');
    assert.equal(reads.length, 1);

    const [p1, p2] = await Promise.all([collector.sandboxNow(pod), collector.sandboxNow(pod)]);
    assert.equal(p1, p2);
    assert.equal(p1?.cpu?.usageNs, 7_500_000_000);
    assert.deepEqual(reads, [`/${SCOPE}`, `/${SLICE}`]);

    // A member sampled after the pod (a container started since, or the timer between the two): the pod is re-read.
    clock.advance(1);
    const late = container('late', 's1');
    records.containers.push(late);
    const lateDir = path.join(dir, 'cgroup', SLICE, 'nodelet-late.scope');
    await fsp.mkdir(lateDir);
    await fsp.writeFile(path.join(lateDir, 'cpu.stat'), 'usage_usec 1000\n');
    assert.equal((await collector.containerNow(late))?.cpu?.usageNs, 1_000_000);
    await collector.sandboxNow(pod);
    assert.deepEqual(reads.slice(2), [`/${SLICE}/nodelet-late.scope`, `/${SLICE}`]);
    await collector.sandboxNow(pod);
    assert.equal(reads.length, 4, 'then cached again');

    await fsp.mkdir(path.join(dir, 'upper', ctr.id), { recursive: true });
    const [l1, l2] = await Promise.all([collector.writableLayerNow(ctr.id), collector.writableLayerNow(ctr.id)]);
    assert.equal(l1, l2);
    assert.equal(l1?.inodes, 1);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('nano-cores after an on-demand read: a window under half a period keeps the older point', async () => {
  const dir = await tempCopy('cgroup-v2');
  try {
    const root = path.join(dir, 'cgroup');
    const ctr = container('9a8b7c6d5e4f', 's1');
    const records = { sandboxes: [sandbox('s1', {}, 'kubepods-besteffort-pod6b1d7f0e.slice')], containers: [ctr] };
    const clock = new FakeClock();
    const collector = new StatsCollector({
      source: { containers: () => records.containers, sandboxes: () => records.sandboxes, upperDirOf: (id) => path.join(dir, 'upper', id) },
      reader: new CgroupV2Reader(root), periodMs: 1000, writableLayerPeriodMs: 1000, clock,
    });
    await collector.containerNow(ctr); // usage 2.5 s
    clock.advance(0.01);
    await fsp.writeFile(path.join(root, SCOPE, 'cpu.stat'), 'usage_usec 2510000\n');
    await collector.sample();
    assert.equal(collector.container(ctr.id)?.cpu?.nanoCores, undefined, 'no rate over 10 ms');
    assert.equal(collector.container(ctr.id)?.cpu?.usageNs, 2_510_000_000, 'usage is still current');
    clock.advance(0.99);
    await fsp.writeFile(path.join(root, SCOPE, 'cpu.stat'), 'usage_usec 3000000\n');
    await collector.sample();
    assert.equal(collector.container(ctr.id)?.cpu?.nanoCores, 500_000_000, 'measured from the on-demand point, 1 s back');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
