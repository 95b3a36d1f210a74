// Stats and metrics asked for right after StartContainer, as critest does: the background sampler is set
// to an hour here, so every figure in these answers comes from the on-demand read of the new container.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer } from '../helpers/pods.js';

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
