// GetContainerEvents through the socket: a container's whole life in order, and an exit that
// happened while the daemon was down still produces its STOPPED event after the restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp } from 'node:fs';
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
  const config = sandboxConfig('events', path.join(logDir, 'events'));
  const { pod_sandbox_id: pod } = await d.client.runtime('RunPodSandbox', { config });
  // Both subscriptions are open once each has the sandbox's first event (a late one would time out here).
  for (const [name, s] of [['first', sub], ['second', other]] as const) {
    await waitFor(`the ${name} subscriber to see the sandbox created`, () => s.events.some((e) => e.container_id === pod && e.container_event_type === 'CONTAINER_CREATED_EVENT'), 10_000);
  }
  const id = await runContainer(d.client, pod, config, containerConfig('life', BUSYBOX, ['sh', '-c', 'sleep 1; exit 2']));
  await waitFor('STOPPED event', async () => sub.events.some((e) => e.container_id === id && e.container_event_type === 'CONTAINER_STOPPED_EVENT'));
  await d.client.runtime('RemoveContainer', { container_id: id });
  for (const s of [sub, other]) {
    await waitFor('DELETED event', async () => s.events.some((e) => e.container_id === id && e.container_event_type === 'CONTAINER_DELETED_EVENT'));
  }
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
  // A second subscriber sees the same events in the same order (each up to the container's DELETED).
  const upToDeleted = (events: any[]) => {
    const end = events.findIndex((e) => e.container_id === id && e.container_event_type === 'CONTAINER_DELETED_EVENT');
    return events.slice(0, end + 1).map((e) => `${e.container_id} ${e.container_event_type}`);
  };
  assert.ok(upToDeleted(other.events).length >= 6, 'the second subscriber saw the sandbox and the container events');
  assert.deepEqual(upToDeleted(other.events), upToDeleted(sub.events), 'a second subscriber sees the same stream');
  sub.stop();
  other.stop();
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod });
});

test('an exit that happened while the daemon was down produces its STOPPED event after the restart', async () => {
  const config = sandboxConfig('restart-events', path.join(logDir, 'restart-events'));
  const { pod_sandbox_id: pod } = await d.client.runtime('RunPodSandbox', { config });
  const id = await runContainer(d.client, pod, config, containerConfig('quitter', BUSYBOX, ['sh', '-c', 'sleep 1; exit 4']));
  await d.kill();
  // conmon records the exit in <run root>/exits/<id>: the restart must come after it.
  await waitFor('the container to exit while the daemon is down', () => existsSync(path.join(d.runRoot, 'exits', id)), 10_000);
  await d.restart();
  const sub = collect();
  const ev = await waitFor('STOPPED after restart', async () => sub.events.find((e) => e.container_id === id && e.container_event_type === 'CONTAINER_STOPPED_EVENT'));
  assert.equal(ev.containers_statuses.find((c: any) => c.id === id).exit_code, 4);
  sub.stop();
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod });
});
