// Stats and metrics asked for right after StartContainer, as critest does: the background sampler is set
// to an hour here, so every figure in these answers comes from the on-demand read of the new container.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer } from '../helpers/pods.js';
import { CRITEST_METRIC_NAMES } from '../helpers/critest-metrics.js';

let d: TestDaemon;
let reg: Registries;
let tmp: string;
let BUSYBOX: string;

before(async () => {
  reg = await useRegistries();
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-stats-now-it-'));
  const configFile = path.join(tmp, 'config.yaml');
  await fsp.writeFile(configFile, 'stats:\n  writableLayerPeriodSeconds: 3600\n');
  d = await startTestDaemon({ args: ['--stats-period', '3600', '--config', configFile] });
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

async function newPod(name: string) {
  const config = sandboxConfig(name, path.join(tmp, 'logs', name));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  return { id: pod_sandbox_id as string, config };
}

/** What critest (and containerd's CRI tests) require of one container's stats. */
function assertFullContainerStats(s: any, id: string, name: string): void {
  assert.equal(s.attributes.id, id);
  assert.equal(s.attributes.metadata.name, name);
  assert.deepEqual(s.attributes.labels, { container: name, role: 'fresh' });
  assert.ok(Number(s.cpu?.timestamp) > 0, 'cpu timestamp');
  assert.ok(Number(s.cpu.usage_core_nano_seconds?.value) > 0, 'cpu usage');
  assert.ok(Number(s.memory?.timestamp) > 0, 'memory timestamp');
  assert.ok(Number(s.memory.working_set_bytes?.value) > 0, 'working set');
  assert.ok(Number(s.writable_layer?.timestamp) > 0, 'writable layer timestamp');
  assert.ok(s.writable_layer.fs_id?.mountpoint, 'writable layer mountpoint');
  assert.ok(Number(s.writable_layer.used_bytes?.value) > 0, 'writable layer bytes');
  assert.ok(Number(s.writable_layer.inodes_used?.value) > 0, 'writable layer inodes');
}

test('stats right after StartContainer: cpu, memory and writable layer with timestamps in the first answer', async () => {
  const pod = await newPod('fresh');
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('fresh', BUSYBOX, ['sleep', '3600'], { labels: { container: 'fresh', role: 'fresh' } }));
  // No wait of any kind between StartContainer and these calls: all four at once.
  const [listed, single, podStats, podList] = await Promise.all([
    d.client.runtime('ListContainerStats', { filter: { id } }),
    d.client.runtime('ContainerStats', { container_id: id }),
    d.client.runtime('PodSandboxStats', { pod_sandbox_id: pod.id }),
    d.client.runtime('ListPodSandboxStats', { filter: { id: pod.id } }),
  ]);
  assert.equal(listed.stats.length, 1);
  assertFullContainerStats(listed.stats[0], id, 'fresh');
  assertFullContainerStats(single.stats, id, 'fresh');

  for (const p of [podStats.stats, podList.stats[0]]) {
    assert.equal(p.attributes.id, pod.id);
    assert.ok(Number(p.linux.cpu?.timestamp) > 0, 'pod cpu timestamp');
    assert.ok(Number(p.linux.cpu.usage_core_nano_seconds.value) > 0, 'pod cpu usage');
    assert.ok(Number(p.linux.memory?.timestamp) > 0, 'pod memory timestamp');
    assert.ok(Number(p.linux.memory.working_set_bytes.value) > 0, 'pod working set');
    assert.ok(Number(p.linux.process?.process_count?.value) >= 2, 'pause and sleep');
    assert.equal(p.linux.network?.default_interface?.name, 'eth0');
    assert.equal(p.linux.containers.length, 1);
    assertFullContainerStats(p.linux.containers[0], id, 'fresh');
  }

  // Three containers started back to back all show up in an unfiltered list (critest's nil-filter case).
  const more = [];
  for (const n of ['a', 'b', 'c']) {
    more.push(await runContainer(d.client, pod.id, pod.config, containerConfig(`fresh-${n}`, BUSYBOX, ['sleep', '3600'], { labels: { container: `fresh-${n}`, role: 'fresh' } })));
  }
  const all = await d.client.runtime('ListContainerStats', {});
  for (const [i, cid] of more.entries()) {
    const s = all.stats.find((x: any) => x.attributes.id === cid);
    assert.ok(s, `stats for ${cid}`);
    assertFullContainerStats(s, cid, `fresh-${['a', 'b', 'c'][i]}`);
  }
  const byLabel = await d.client.runtime('ListContainerStats', { filter: { pod_sandbox_id: pod.id, label_selector: { container: 'fresh-b' } } });
  assert.deepEqual(byLabel.stats.map((s: any) => s.attributes.id), [more[1]]);
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
});

// Hugetlb figures need the hugetlb controller, PSI figures a unified hierarchy with pressure files (on a
// hybrid host runc puts containers in it too); cri-tools lists both as not implemented by every runtime.
const v2Controllers = existsSync('/sys/fs/cgroup/cgroup.controllers') ? readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8') : '';
const HAS_HUGETLB = existsSync('/sys/fs/cgroup/hugetlb') || /\bhugetlb\b/.test(v2Controllers);
const HAS_PSI = existsSync('/sys/fs/cgroup/cpu.pressure') || existsSync('/sys/fs/cgroup/unified/cpu.pressure');
const HOST_DEPENDENT = new Set([
  ...(HAS_HUGETLB ? [] : ['container_hugetlb_max_usage_bytes', 'container_hugetlb_usage_bytes']),
  ...(HAS_PSI ? [] : [
    'container_pressure_cpu_stalled_seconds_total', 'container_pressure_cpu_waiting_seconds_total', 'container_pressure_io_stalled_seconds_total',
    'container_pressure_io_waiting_seconds_total', 'container_pressure_memory_stalled_seconds_total', 'container_pressure_memory_waiting_seconds_total',
  ]),
]);
/** Block I/O accounting: only present once the container has done I/O the block layer saw (critest treats them as optional). */
const BLOCK_IO = new Set(['container_blkio_device_usage_total', 'container_fs_reads_bytes_total', 'container_fs_reads_total', 'container_fs_writes_bytes_total', 'container_fs_writes_total']);

test('metrics right after StartContainer: every descriptor critest checks has samples whose labels match its keys', async () => {
  const pod = await newPod('metrics');
  const MiB = 1024 * 1024;
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('metered', BUSYBOX, ['sleep', '3600'], {
    linux: { resources: { cpu_period: 100000, cpu_quota: 20000, cpu_shares: 1024, memory_limit_in_bytes: 64 * MiB, memory_swap_limit_in_bytes: 64 * MiB } },
  }));
  const exec = await d.client.runtime('ExecSync', {
    container_id: id, timeout: 20,
    cmd: ['/bin/sh', '-c', 'mkdir -p /var/lib/mydisktest && for i in $(seq 1 10); do echo hi >> /var/lib/mydisktest/inode_test_file_$i; done; sync'],
  });
  assert.equal(exec.exit_code, 0, String(exec.stderr));
  const { descriptors } = await d.client.runtime('ListMetricDescriptors', {});
  const { pod_metrics } = await d.client.runtime('ListPodSandboxMetrics', {});
  const mine = pod_metrics.find((p: any) => p.pod_sandbox_id === pod.id);
  assert.ok(mine, 'metrics for the new pod');
  const samples = [...mine.metrics, ...mine.container_metrics.flatMap((c: any) => c.metrics)];
  const described = new Set(descriptors.map((x: any) => x.name));
  assert.deepEqual(CRITEST_METRIC_NAMES.filter((n) => !described.has(n)), [], 'names critest expects, all described');
  const missing: string[] = [];
  const mismatched: string[] = [];
  for (const desc of descriptors) {
    assert.ok(desc.help && desc.label_keys.length > 0, `${desc.name} has help and label keys`);
    const got = samples.filter((m: any) => m.name === desc.name);
    if (got.length === 0) {
      if (!HOST_DEPENDENT.has(desc.name) && !BLOCK_IO.has(desc.name)) missing.push(desc.name);
      continue;
    }
    for (const m of got) if (m.label_values.length !== desc.label_keys.length) mismatched.push(`${desc.name}{${m.label_values.join(',')}}`);
  }
  assert.deepEqual(missing, [], 'descriptors without samples');
  assert.deepEqual(mismatched, [], 'samples whose labels do not match their descriptor');

  const ctr = mine.container_metrics.find((c: any) => c.container_id === id).metrics;
  const keys = (name: string) => descriptors.find((x: any) => x.name === name).label_keys as string[];
  const value = (name: string, labels: Record<string, string> = {}) => {
    const k = keys(name);
    const m = ctr.find((x: any) => x.name === name && Object.entries(labels).every(([key, v]) => x.label_values[k.indexOf(key)] === v));
    assert.ok(m, `${name} ${JSON.stringify(labels)}`);
    return Number(m.value.value);
  };
  // The limits the container was created with, read back from its cgroup.
  assert.equal(value('container_spec_cpu_quota'), 20000);
  assert.equal(value('container_spec_cpu_period'), 100000);
  assert.equal(value('container_spec_memory_limit_bytes'), 64 * MiB);
  assert.ok(value('container_memory_working_set_bytes', { container: 'metered', pod: 'metrics', namespace: 'nodelet-test' }) > 0);
  assert.ok(value('container_fs_usage_bytes') > 0, 'the writable layer holds the files written');
  assert.ok(value('container_fs_inodes_total') >= value('container_fs_inodes_free'));
  assert.ok(value('container_processes') >= 1);
  assert.ok(value('container_file_descriptors') >= 3, 'stdio at least');
  assert.ok(value('container_start_time_seconds') > Date.now() / 1000 - 600);
  const rx = mine.metrics.find((m: any) => m.name === 'container_network_receive_bytes_total');
  assert.equal(rx.label_values[keys('container_network_receive_bytes_total').indexOf('interface')], 'eth0');
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
});
