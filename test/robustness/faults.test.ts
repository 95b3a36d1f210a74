// Faults around the runtime: cancelled and racing stops, processes killed behind its back, runc state
// lost, bad runtime handlers, long run roots. What the runtime reports must be true, and a force-kill must kill.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitFor } from '../helpers/pods.js';
import { readUntil } from '../helpers/stream-clients.js';
import { openRemoteCommand } from '../../src/streaming/client.js';
import { randomBytes } from 'node:crypto';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-faults-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

async function newPod(name: string, daemon = d) {
  const config = sandboxConfig(name, path.join(logDir, name));
  const { pod_sandbox_id } = await daemon.client.runtime('RunPodSandbox', { config });
  return { id: pod_sandbox_id as string, config };
}

/** Notes SIGTERM in its log and keeps running: only SIGKILL stops it. */
async function stubbornContainer(pod: { id: string; config: any }, name: string, daemon = d): Promise<string> {
  return runContainer(daemon.client, pod.id, pod.config, containerConfig(name, BUSYBOX, ['sh', '-c', "trap 'echo got-term' TERM; echo ready; while :; do sleep 1; done"]));
}

/** Waits until the container's log shows `text`. */
async function logShows(id: string, text: string, daemon = d): Promise<void> {
  const { log_path } = await containerState(id, daemon);
  await waitFor(`${text} in the log of ${id.slice(0, 12)}`, async () => (await fsp.readFile(log_path, 'utf8').catch(() => '')).includes(text));
}

async function containerState(id: string, daemon = d): Promise<any> {
  return (await daemon.client.runtime('ContainerStatus', { container_id: id })).status;
}

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  const value = await p;
  return { value, ms: Date.now() - started };
}

test('a cancelled graceful StopContainer holds nothing: a timeout-0 stop kills at once', async () => {
  const pod = await newPod('cancelled-stop');
  const id = await stubbornContainer(pod, 'stubborn');
  await logShows(id, 'ready');
  await assert.rejects(d.client.runtime('StopContainer', { container_id: id, timeout: 120 }, { deadlineMs: 2000 }), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    return true;
  });
  const { ms } = await timed(d.client.runtime('StopContainer', { container_id: id, timeout: 0 }, { deadlineMs: 15_000 }));
  assert.ok(ms < 10_000, `force stop took ${ms} ms`);
  const status = await containerState(id);
  assert.equal(status.state, 'CONTAINER_EXITED');
  assert.equal(status.exit_code, 137);
  await d.client.runtime('RemoveContainer', { container_id: id }, { deadlineMs: 15_000 });
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
});

test('a timeout-0 stop escalates a stop waiting on its grace period; remove and pod stop are not queued behind it', async () => {
  const pod = await newPod('escalate');
  const a = await stubbornContainer(pod, 'a');
  const b = await stubbornContainer(pod, 'b');
  const graceful = timed(d.client.runtime('StopContainer', { container_id: a, timeout: 120 }));
  // The graceful stop has sent its signal and waits: the container noted it and runs on.
  await logShows(a, 'got-term');
  assert.equal((await containerState(a)).state, 'CONTAINER_RUNNING');
  const force = await timed(d.client.runtime('StopContainer', { container_id: a, timeout: 0 }, { deadlineMs: 15_000 }));
  assert.ok(force.ms < 10_000, `force stop took ${force.ms} ms`);
  const first = await graceful;
  assert.ok(first.ms < 15_000, `the graceful stop was escalated (${first.ms} ms)`);
  assert.equal((await containerState(a)).exit_code, 137);

  // A graceful stop in flight on b: RemoveContainer and StopPodSandbox answer promptly and kill it.
  const pending = d.client.runtime('StopContainer', { container_id: b, timeout: 120 }).catch((e: unknown) => e);
  await logShows(b, 'got-term');
  const podStop = await timed(d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id }, { deadlineMs: 20_000 }));
  assert.ok(podStop.ms < 15_000, `pod stop took ${podStop.ms} ms`);
  assert.equal((await containerState(b)).state, 'CONTAINER_EXITED');
  const removed = await timed(d.client.runtime('RemoveContainer', { container_id: b }, { deadlineMs: 15_000 }));
  assert.ok(removed.ms < 10_000);
  const settled = await pending;
  assert.ok(!(settled instanceof Error), `the pending stop ended well: ${String(settled)}`);
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
});

/** True while the process exists and is not a zombie. */
async function alive(pid: number): Promise<boolean> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/** The container's own pid and its conmon's, from conmon's pid files. */
async function pidsOf(id: string, daemon = d): Promise<{ pid: number; conmon: number }> {
  const dir = path.join(daemon.runRoot, 'conmon', id);
  const read = async (f: string) => Number.parseInt(await fsp.readFile(path.join(dir, f), 'utf8'), 10);
  return { pid: await read('pidfile'), conmon: await read('conmon.pid') };
}

async function killOutOfBand(id: string): Promise<void> {
  const { pid, conmon } = await pidsOf(id);
  process.kill(conmon, 'SIGKILL');
  process.kill(pid, 'SIGKILL');
  await waitFor('both processes gone', async () => !(await alive(conmon)) && !(await alive(pid)));
}

async function waitState(id: string, state: string): Promise<any> {
  return waitFor(`${id.slice(0, 12)} ${state}`, async () => {
    const status = await containerState(id);
    return status.state === state ? status : undefined;
  });
}

test('conmon and the container SIGKILLed out of band: EXITED 137 with a reason, live and after a restart', async () => {
  const pod = await newPod('killed-behind');
  const live = await runContainer(d.client, pod.id, pod.config, containerConfig('live', BUSYBOX, ['sleep', '3600']));
  const away = await runContainer(d.client, pod.id, pod.config, containerConfig('away', BUSYBOX, ['sleep', '3600']));
  await killOutOfBand(live);
  const status = await waitState(live, 'CONTAINER_EXITED');
  assert.equal(status.exit_code, 137);
  assert.equal(status.reason, 'Error');
  assert.match(status.message, /conmon/);

  // The same while the daemon is down: found at recovery.
  await d.kill();
  await killOutOfBand(away);
  await d.restart();
  const found = await waitState(away, 'CONTAINER_EXITED');
  assert.equal(found.exit_code, 137);
  assert.match(found.message, /conmon/);
  assert.equal((await containerState(live)).exit_code, 137, 'kept across the restart');

  // The pod's infra process killed with its conmon: the pod is not ready.
  await killOutOfBand(pod.id);
  await waitFor('pod not ready', async () => (await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id })).status.state === 'SANDBOX_NOTREADY');
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
});

test("runc's state deleted while the processes live: stop and remove kill them by cgroup before saying done", async () => {
  const pod = await newPod('state-lost');
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('orphan', BUSYBOX, ['sleep', '3600']));
  const { pid } = await pidsOf(id);
  const infra = (await pidsOf(pod.id)).pid;
  await d.kill();
  for (const lost of [id, pod.id]) await fsp.rm(path.join(d.runRoot, 'runtime', 'runc', lost), { recursive: true, force: true });
  await d.restart();
  assert.ok(await alive(pid), 'the process outlived its runc state');
  assert.equal((await containerState(id)).state, 'CONTAINER_RUNNING', 'a running process is reported running');

  await d.client.runtime('StopContainer', { container_id: id, timeout: 0 }, { deadlineMs: 20_000 });
  assert.equal(await alive(pid), false, 'StopContainer killed it');
  const status = await containerState(id);
  assert.equal(status.state, 'CONTAINER_EXITED');
  assert.equal(status.exit_code, 137);
  await d.client.runtime('RemoveContainer', { container_id: id });

  const netns = (JSON.parse((await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id, verbose: true })).info.info) as { netnsPath: string }).netnsPath;
  assert.ok(await alive(infra));
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id }, { deadlineMs: 20_000 });
  assert.equal(await alive(infra), false, 'StopPodSandbox killed the infra process');
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  await assert.rejects(fsp.stat(netns), 'the netns is gone');
});

/** Sandbox records under the daemon's root (any phase). */
async function sandboxRecords(daemon: TestDaemon): Promise<string[]> {
  return fsp.readdir(path.join(daemon.root, 'sandboxes')).catch(() => []);
}

test('a handler whose runtime is missing is left out at start and its pods are refused up front', async () => {
  const bad = await startTestDaemon({ args: ['--runtime-handler', 'bad=/nonexistent/nodelet-test/runc'] });
  try {
    const status = await bad.client.runtime('Status', {});
    const names = status.runtime_handlers.map((h: any) => h.name);
    assert.ok(names.includes('runc') && !names.includes('bad'), `listed: ${names}`);
    await assert.rejects(bad.client.runtime('RunPodSandbox', { config: sandboxConfig('bad-handler', path.join(logDir, 'bad')), runtime_handler: 'bad' }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION, err.details);
      assert.match(err.details, /runtime_handler "bad" is not usable: \/nonexistent\/nodelet-test\/runc does not exist/);
      return true;
    });
    assert.deepEqual(await sandboxRecords(bad), []);
  } finally {
    await bad.cleanup();
  }
});

test('a default handler whose runtime is missing stops the daemon from starting, with one line saying why', async () => {
  await assert.rejects(startTestDaemon({ args: ['--runtime-handler', 'bad=/nonexistent/nodelet-test/runc', '--default-runtime', 'bad'] }), (err: Error) => {
    assert.match(err.message, /default runtime handler \\?"bad\\?" is not usable: \/nonexistent\/nodelet-test\/runc does not exist/);
    return true;
  });
});

test('the runtime binary gone after start: the failed RunPodSandbox is undone fully, and restarts recover nothing', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-gone-'));
  const copy = path.join(dir, 'runc');
  await fsp.copyFile('/usr/sbin/runc', copy);
  await fsp.chmod(copy, 0o755);
  const gone = await startTestDaemon({ args: ['--runtime-handler', `gone=${copy}`] });
  try {
    await fsp.rm(dir, { recursive: true, force: true });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(gone.client.runtime('RunPodSandbox', { config: sandboxConfig(`gone-${i}`, path.join(logDir, 'gone')), runtime_handler: 'gone' }));
    }
    assert.deepEqual(await sandboxRecords(gone), [], 'no record left, not even a creating one');
    const log = await fsp.readFile(gone.logFile, 'utf8');
    const ids = [...log.matchAll(/"sandbox":"([0-9a-f]{12})"[^\n]*sandbox set-up failed/g)].map((m) => m[1]!);
    assert.equal(ids.length, 2, 'both set-ups failed');
    const namespaces = await fsp.readdir('/run/netns').catch(() => []);
    for (const id of ids) assert.ok(!namespaces.some((n) => n.includes(id)), `netns of ${id} removed`);
    assert.doesNotMatch(log, /undo failed|undo step failed/);
    await gone.kill();
    await gone.restart();
    assert.deepEqual(await sandboxRecords(gone), []);
    const { items } = await gone.client.runtime('ListPodSandbox', {});
    assert.deepEqual(items, []);
  } finally {
    await gone.cleanup();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

async function attachUnder(runRoot: string): Promise<void> {
  const long = await startTestDaemon({ args: ['--run-root', runRoot] });
  try {
    await long.client.image('PullImage', { image: { image: BUSYBOX } });
    const pod = await newPod('long-root', long);
    const id = await runContainer(
      long.client,
      pod.id,
      pod.config,
      containerConfig('echoer', BUSYBOX, ['sh', '-c', 'echo up; while read l; do echo got:$l; done'], { stdin: true, stdin_once: false }),
    );
    const { url } = await long.client.runtime('Attach', { container_id: id, stdin: true, stdout: true, stderr: true, tty: false });
    const session = await openRemoteCommand({ url, family: 'websocket', stdin: true, stdout: true, stderr: true, tty: false });
    const reply = readUntil(session.stdout, /got:through-the-root/);
    session.stdin.write('through-the-root\n');
    await reply;
    session.close();
  } finally {
    await long.cleanup();
    await fsp.rm(runRoot, { recursive: true, force: true });
  }
}

test('a long --run-root: pods run and attach works (conmon sockets reached through short paths)', async () => {
  // 90+ bytes: the attach socket path under it is far beyond sun_path's 108.
  const runRoot = path.join('/run', `nodelet-test-long-run-root-${randomBytes(4).toString('hex')}`, 'x'.repeat(60));
  assert.ok(path.join(runRoot, 's', 'f'.repeat(64), 'attach').length > 108);
  await attachUnder(runRoot);
  await fsp.rm(path.dirname(runRoot), { recursive: true, force: true });
});

test('a --run-root of 40 bytes: conmon shortens its 107-byte socket link, attach finds it', async () => {
  const runRoot = `/run/nodelet-test-r${randomBytes(4).toString('hex')}`.padEnd(40, 'x');
  assert.equal(path.join(runRoot, 's', 'f'.repeat(64)).length, 107);
  await attachUnder(runRoot);
});
