// Container and pod stats end to end: real containers burning CPU, holding memory, serving traffic and writing files.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, testBackends, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitFor } from '../helpers/pods.js';
import { criProto } from '../../src/cri/grpc.js';

const MiB = 1024 * 1024;

for (const backend of testBackends()) {
describe(`stats (${backend})`, { concurrency: false }, () => {
  let d: TestDaemon;
  let reg: Registries;
  let tmp: string;
  let BUSYBOX: string;

  before(async () => {
    reg = await useRegistries();
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-stats-it-'));
    const configFile = path.join(tmp, 'config.yaml');
    await fsp.writeFile(configFile, 'stats:\n  writableLayerPeriodSeconds: 1\n');
    d = await startTestDaemon({ backend, args: ['--stats-period', '1', '--config', configFile] });
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

  async function containerStats(id: string): Promise<any> {
    return (await d.client.runtime('ContainerStats', { container_id: id })).stats;
  }

  /** Collects every message of a server-streaming RuntimeService call. */
  async function collectStream(method: string, request: object): Promise<any[]> {
    const proto = criProto();
    const client = new proto.runtime.v1.RuntimeService(`unix://${d.socket}`, grpc.credentials.createInsecure());
    try {
      return await new Promise<any[]>((resolve, reject) => {
        const got: any[] = [];
        const call = (client as any)[method](request);
        call.on('data', (m: any) => got.push(m));
        call.on('end', () => resolve(got));
        call.on('error', reject);
      });
    } finally {
      client.close();
    }
  }

  test('a container burning CPU shows usage_nano_cores well above an idle one', async () => {
    const pod = await newPod('cpu');
    const burner = await runContainer(d.client, pod.id, pod.config, containerConfig('burner', BUSYBOX, ['sh', '-c', 'while :; do :; done'], { labels: { role: 'burner' } }));
    const idle = await runContainer(d.client, pod.id, pod.config, containerConfig('idle', BUSYBOX, ['sleep', '3600'], { labels: { role: 'idle' } }));
    const busy = await waitFor('the burner at over 0.3 core, with over 0.3 s of CPU counted', async () => {
      const s = await containerStats(burner);
      return s.cpu?.usage_nano_cores?.value > 300_000_000 && s.cpu.usage_core_nano_seconds.value > 300_000_000 ? s : undefined;
    }, 20_000);
    assert.equal(busy.attributes.id, burner);
    assert.equal(busy.attributes.metadata.name, 'burner');
    assert.ok(Number(busy.cpu.timestamp) > (Date.now() - 60_000) * 1e6, 'timestamp in ns since the epoch');
    const quiet = await waitFor('a rate for the idle container', async () => {
      const s = await containerStats(idle);
      return s.cpu?.usage_nano_cores ? s : undefined;
    });
    assert.ok(quiet.cpu.usage_nano_cores.value < 30_000_000, `idle at ${quiet.cpu.usage_nano_cores.value} nano-cores`);
    assert.ok(busy.cpu.usage_nano_cores.value > 10 * quiet.cpu.usage_nano_cores.value);

    // Filters.
    const byPod = await d.client.runtime('ListContainerStats', { filter: { pod_sandbox_id: pod.id } });
    assert.deepEqual(byPod.stats.map((s: any) => s.attributes.id).sort(), [burner, idle].sort());
    const byLabel = await d.client.runtime('ListContainerStats', { filter: { pod_sandbox_id: pod.id, label_selector: { role: 'idle' } } });
    assert.deepEqual(byLabel.stats.map((s: any) => s.attributes.id), [idle]);
    const byId = await d.client.runtime('ListContainerStats', { filter: { id: burner } });
    assert.deepEqual(byId.stats.map((s: any) => s.attributes.id), [burner]);
    await assert.rejects(d.client.runtime('ContainerStats', { container_id: 'no-such-container' }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.match(err.details, /no-such-container/);
      return true;
    });
    // The pod's CPU is its members' together.
    const podStats = (await d.client.runtime('PodSandboxStats', { pod_sandbox_id: pod.id })).stats;
    assert.ok(podStats.linux.cpu.usage_core_nano_seconds.value >= busy.cpu.usage_core_nano_seconds.value);
    assert.equal(podStats.linux.containers.length, 2);
    assert.ok(podStats.linux.process.process_count.value >= 3, 'pause, the burner and sleep');
    // Streamed in pages, then the stream ends.
    const pages = await collectStream('StreamContainerStats', { filter: { pod_sandbox_id: pod.id } });
    assert.deepEqual(pages.flatMap((p) => p.container_stats.map((s: any) => s.attributes.id)).sort(), [burner, idle].sort());
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('a container holding 64 MiB shows it in its working set', async () => {
    const pod = await newPod('mem');
    // dd fills a 64 MiB buffer, then blocks writing it to a pipe nobody reads: it stays resident.
    const holder = await runContainer(d.client, pod.id, pod.config, containerConfig('holder', BUSYBOX, ['sh', '-c', 'dd if=/dev/zero bs=64M count=1 | sleep 3600']));
    let last: any;
    const s = await waitFor('64 MiB in the working set', async () => {
      last = await containerStats(holder);
      return last.memory?.working_set_bytes?.value >= 60 * MiB ? last : undefined;
    }, 60_000).catch((err) => {
      throw new Error(`${err.message}; last memory: ${JSON.stringify(last?.memory)}`);
    });
    assert.ok(s.memory.usage_bytes.value >= s.memory.working_set_bytes.value);
    assert.ok(s.memory.rss_bytes.value >= 60 * MiB, `rss ${s.memory.rss_bytes.value}`);
    assert.ok(s.memory.page_faults.value > 0);
    assert.ok(s.memory.major_page_faults !== null);
    const podStats = (await d.client.runtime('PodSandboxStats', { pod_sandbox_id: pod.id })).stats;
    assert.ok(podStats.linux.memory.working_set_bytes.value >= 60 * MiB);
    // The same figure through the metrics the kubelet scrapes.
    const { pod_metrics } = await d.client.runtime('ListPodSandboxMetrics', {});
    const mine = pod_metrics.find((p: any) => p.pod_sandbox_id === pod.id);
    const ws = mine.container_metrics.find((c: any) => c.container_id === holder).metrics.find((m: any) => m.name === 'container_memory_working_set_bytes');
    assert.ok(ws.value.value >= 60 * MiB);
    assert.equal(ws.metric_type, 'GAUGE');
    const { descriptors } = await d.client.runtime('ListMetricDescriptors', {});
    const desc = descriptors.find((x: any) => x.name === 'container_memory_working_set_bytes');
    assert.equal(desc.label_keys.length, ws.label_values.length);
    assert.equal(ws.label_values[desc.label_keys.indexOf('container')], 'holder');
    assert.equal(ws.label_values[desc.label_keys.indexOf('pod')], 'mem');
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('pod network rx/tx grow after traffic; the writable layer grows after writing a file', async () => {
    const pod = await newPod('net');
    const web = await runContainer(d.client, pod.id, pod.config, containerConfig('web', BUSYBOX, ['httpd', '-f', '-p', '8080', '-h', '/bin']));
    const status = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id });
    const ip = status.status.network.ip;
    const before = await waitFor('network stats', async () => {
      const st = (await d.client.runtime('PodSandboxStats', { pod_sandbox_id: pod.id })).stats;
      return st.linux.network?.default_interface ? st.linux.network : undefined;
    });
    assert.equal(before.default_interface.name, 'eth0');
    let fetched = 0;
    await waitFor('httpd answers', async () => (await fetch(`http://${ip}:8080/busybox`)).ok);
    for (let i = 0; i < 3; i++) fetched += (await (await fetch(`http://${ip}:8080/busybox`)).arrayBuffer()).byteLength;
    assert.ok(fetched > MiB);
    const after = await waitFor('tx to count the downloads', async () => {
      const n = (await d.client.runtime('PodSandboxStats', { pod_sandbox_id: pod.id })).stats.linux.network;
      return n.default_interface.tx_bytes.value >= before.default_interface.tx_bytes.value + fetched ? n : undefined;
    });
    assert.ok(after.default_interface.rx_bytes.value > before.default_interface.rx_bytes.value, 'requests and acks arrived');
    assert.ok(after.default_interface.rx_errors !== null && after.default_interface.tx_errors !== null);

    const layer0 = await waitFor('writable layer figures', async () => (await containerStats(web)).writable_layer);
    const exec = await d.client.runtime('ExecSync', { container_id: web, cmd: ['dd', 'if=/dev/zero', 'of=/written', 'bs=1048576', 'count=8'], timeout: 20 });
    assert.equal(exec.exit_code, 0, exec.stderr.toString());
    const layer1 = await waitFor('the writable layer to count 8 MiB more', async () => {
      const w = (await containerStats(web)).writable_layer;
      return w.used_bytes.value >= layer0.used_bytes.value + 8 * MiB ? w : undefined;
    });
    assert.ok(layer1.inodes_used.value > layer0.inodes_used.value);
    assert.ok(layer1.fs_id.mountpoint.startsWith(d.root));
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('ListPodSandboxStats covers every pod; filters and the stream agree', async () => {
    const a = await newPod('list-a');
    const b = await newPod('list-b');
    await runContainer(d.client, a.id, a.config, containerConfig('s', BUSYBOX, ['sleep', '3600']));
    await runContainer(d.client, b.id, b.config, containerConfig('s', BUSYBOX, ['sleep', '3600']));
    const all = await waitFor('both pods with process counts', async () => {
      const { stats } = await d.client.runtime('ListPodSandboxStats', {});
      const ours = stats.filter((s: any) => s.attributes.id === a.id || s.attributes.id === b.id);
      return ours.length === 2 && ours.every((s: any) => s.linux.process?.process_count?.value >= 2 && s.linux.memory) ? stats : undefined;
    });
    const { items } = await d.client.runtime('ListPodSandbox', {});
    assert.deepEqual(all.map((s: any) => s.attributes.id).sort(), items.map((s: any) => s.id).sort());
    const byLabel = await d.client.runtime('ListPodSandboxStats', { filter: { label_selector: { app: 'list-b' } } });
    assert.deepEqual(byLabel.stats.map((s: any) => s.attributes.id), [b.id]);
    assert.equal(byLabel.stats[0].attributes.metadata.name, 'list-b');
    assert.equal(byLabel.stats[0].linux.containers.length, 1);
    const pages = await collectStream('StreamPodSandboxStats', {});
    assert.deepEqual(pages.flatMap((p) => p.pod_sandbox_stats.map((s: any) => s.attributes.id)).sort(), items.map((s: any) => s.id).sort());
    await assert.rejects(d.client.runtime('PodSandboxStats', { pod_sandbox_id: 'no-such-pod' }), (err: grpc.ServiceError) => err.code === grpc.status.NOT_FOUND);
  });
});
}
