// GetContainerEvents through the socket: a container's whole life in order, and an exit that
// happened while the daemon was down still produces its STOPPED event after the restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitFor } from '../helpers/pods.js';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-events-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

function collect(): { events: any[]; stop: () => void } {
  const events: any[] = [];
  const stream = d.client.runtimeStream('GetContainerEvents', {});
  stream.on('data', (e: any) => events.push(e));
  stream.on('error', () => undefined);
  return { events, stop: () => stream.cancel() };
}

test('a container life produces CREATED, STARTED, STOPPED, DELETED in order, with statuses', async () => {
  const sub = collect();
  const other = collect();
  await new Promise((r) => setTimeout(r, 200));
  const config = sandboxConfig('events', path.join(logDir, 'events'));
  const { pod_sandbox_id: pod } = await d.client.runtime('RunPodSandbox', { config });
  const id = await runContainer(d.client, pod, config, containerConfig('life', BUSYBOX, ['sh', '-c', 'sleep 1; exit 2']));
  await waitFor('STOPPED event', async () => sub.events.some((e) => e.container_id === id && e.container_event_type === 'CONTAINER_STOPPED_EVENT'));
  await d.client.runtime('RemoveContainer', { container_id: id });
  await waitFor('DELETED event', async () => sub.events.some((e) => e.container_id === id && e.container_event_type === 'CONTAINER_DELETED_EVENT'));
  const mine = sub.events.filter((e) => e.container_id === id);
  assert.deepEqual(mine.map((e) => e.container_event_type), ['CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT', 'CONTAINER_STOPPED_EVENT', 'CONTAINER_DELETED_EVENT']);
  const stopped = mine[2];
  assert.equal(stopped.pod_sandbox_status.id, pod);
  assert.equal(stopped.pod_sandbox_status.state, 'SANDBOX_READY');
  const st = stopped.containers_statuses.find((c: any) => c.id === id);
  assert.equal(st.state, 'CONTAINER_EXITED');
  assert.equal(st.exit_code, 2);
  const podEvents = sub.events.filter((e) => e.container_id === pod).map((e) => e.container_event_type);
  assert.deepEqual(podEvents.slice(0, 2), ['CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT']);
  assert.deepEqual(other.events.map((e) => e.container_id), sub.events.map((e) => e.container_id).slice(0, other.events.length), 'a second subscriber sees the same stream');
  sub.stop();
  other.stop();
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod });
});

test('an exit that happened while the daemon was down produces its STOPPED event after the restart', async () => {
  const config = sandboxConfig('restart-events', path.join(logDir, 'restart-events'));
  const { pod_sandbox_id: pod } = await d.client.runtime('RunPodSandbox', { config });
  const id = await runContainer(d.client, pod, config, containerConfig('quitter', BUSYBOX, ['sh', '-c', 'sleep 1; exit 4']));
  await d.kill();
  await new Promise((r) => setTimeout(r, 2000));
  await d.restart();
  const sub = collect();
  const ev = await waitFor('STOPPED after restart', async () => sub.events.find((e) => e.container_id === id && e.container_event_type === 'CONTAINER_STOPPED_EVENT'));
  assert.equal(ev.containers_statuses.find((c: any) => c.id === id).exit_code, 4);
  sub.stop();
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod });
});
