// Connections that send nothing, or stop sending, are not kept for ever: the streaming and metrics
// HTTP servers close silent and half-sent requests; exec/attach/port-forward sessions are closed after
// --stream-idle-timeout without traffic (their exec killed), and a SPDY client gets a bounded time to
// open its streams. HEAD /metrics answers like GET without a body.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { freePort, useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer } from '../helpers/pods.js';
import { FAMILIES, execCollect, readUntil, withTimeout } from '../helpers/stream-clients.js';
import { openRemoteCommand, upgradeToSpdy } from '../../src/streaming/client.js';
import { rawSpdy, rawWebSocket, type RawConnection } from '../helpers/raw-streams.js';

const IDLE_SECONDS = 5;
const CREATION_SECONDS = 1;

let d: TestDaemon;
let reg: Registries;
let base: string;
let metricsPort: number;
let BUSYBOX: string;
let pod: { id: string; config: any };
let worker: string;

before(async () => {
  reg = await useRegistries();
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-robust-timeouts-'));
  const configFile = path.join(base, 'config.yaml');
  await fsp.writeFile(configFile, `streaming:\n  streamCreationTimeoutSeconds: ${CREATION_SECONDS}\n`);
  metricsPort = await freePort();
  d = await startTestDaemon({
    args: ['--config', configFile, '--stream-idle-timeout', `${IDLE_SECONDS}s`, '--metrics-address', `127.0.0.1:${metricsPort}`],
  });
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
  const config = sandboxConfig('timeouts', path.join(base, 'logs'));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  pod = { id: pod_sandbox_id as string, config };
  worker = await runContainer(d.client, pod.id, pod.config, containerConfig('worker', BUSYBOX, ['sleep', '3600']));
  await runContainer(d.client, pod.id, pod.config, containerConfig('httpd', BUSYBOX, ['httpd', '-f', '-p', '8080', '-h', '/etc']));
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (base) await fsp.rm(base, { recursive: true, force: true });
});

async function execUrl(cmd: string[], stdin = false): Promise<string> {
  return (await d.client.runtime('Exec', { container_id: worker, cmd, stdin, stdout: true, stderr: true, tty: false })).url as string;
}

const pfUrl = async (): Promise<string> => (await d.client.runtime('PortForward', { pod_sandbox_id: pod.id, port: [8080] })).url as string;

/** Seconds until `closed` settles, failing past `maxSeconds`. */
async function secondsUntil(closed: Promise<unknown>, maxSeconds: number, what: string): Promise<number> {
  const started = Date.now();
  await withTimeout(closed, maxSeconds * 1000, what);
  return (Date.now() - started) / 1000;
}

test(`sessions with no traffic are closed after --stream-idle-timeout (${IDLE_SECONDS}s): exec (its process killed), attach, port-forward`, async () => {
  const checks: Array<Promise<void>> = [];
  for (const family of FAMILIES) {
    checks.push(
      (async () => {
        const marker = family === 'spdy' ? '3011' : '3012';
        const session = await openRemoteCommand({ url: await execUrl(['sleep', marker], true), family, stdin: true, stdout: true, stderr: true, tty: false });
        session.stdout.resume();
        session.stderr.resume();
        const took = await secondsUntil(session.done, IDLE_SECONDS + 10, `idle ${family} exec to be closed`);
        assert.ok(took >= IDLE_SECONDS - 1, `${family} exec closed after ${took}s, before the idle timeout`);
        const ps = await execCollect(await execUrl(['sh', '-c', `ps | grep -c "[s]leep ${marker}" || true`]), family);
        assert.equal(ps.stdout.trim(), '0', `the idle ${family} exec's process is still running`);
      })(),
    );
  }
  const raw: Array<[string, () => Promise<RawConnection>]> = [
    ['websocket attach', async () => rawWebSocket((await d.client.runtime('Attach', { container_id: worker, stdout: true })).url, 'v5.channel.k8s.io')],
    ['websocket port-forward', async () => rawWebSocket(await pfUrl(), 'v2.portforward.k8s.io')],
    ['spdy port-forward', async () => rawSpdy(await pfUrl(), 'portforward.k8s.io')],
  ];
  for (const [name, open] of raw) {
    checks.push(
      (async () => {
        const conn = await open();
        try {
          const took = await secondsUntil(conn.closed, IDLE_SECONDS + 10, `idle ${name} to be closed`);
          assert.ok(took >= IDLE_SECONDS - 1, `${name} closed after ${took}s, before the idle timeout`);
        } finally {
          conn.destroy();
        }
      })(),
    );
  }
  await Promise.all(checks);
});

test('traffic keeps a session open well past the idle timeout', async () => {
  await Promise.all(
    FAMILIES.map(async (family) => {
      const session = await openRemoteCommand({ url: await execUrl(['cat'], true), family, stdin: true, stdout: true, stderr: true, tty: false });
      session.stderr.resume();
      let closed = false;
      void session.done.then(() => (closed = true));
      // Twice the idle timeout, a line every half second, each echoed before the next.
      const until = Date.now() + 2 * IDLE_SECONDS * 1000;
      for (let i = 0; Date.now() < until; i++) {
        const seen = readUntil(session.stdout, new RegExp(`line-${i}\\n`), 5000);
        session.stdin.write(`line-${i}\n`);
        await seen;
        assert.equal(closed, false, `${family} session closed while busy`);
        await new Promise((r) => setTimeout(r, 500));
      }
      session.stdin.end();
      const outcome = await withTimeout(session.done, 10_000, 'cat to exit');
      assert.equal(outcome.exitCode, 0, outcome.message);
    }),
  );
});

test(`a SPDY client that does not open its streams within ${CREATION_SECONDS}s is dropped (exec), or its half stream pair reset (port-forward)`, async () => {
  // Exec: only the error stream, never stdout.
  const exec = await upgradeToSpdy(await execUrl(['echo', 'never'], false), ['v4.channel.k8s.io']);
  exec.session.openStream({ streamtype: 'error' }).end();
  const took = await secondsUntil(exec.session.closed, IDLE_SECONDS - 1, 'the exec session to be dropped');
  assert.ok(took >= CREATION_SECONDS - 0.5, `dropped after ${took}s`);

  // Port-forward: an error stream whose data stream never comes; the session itself stays.
  const pf = await upgradeToSpdy(await pfUrl(), ['portforward.k8s.io']);
  try {
    const error = pf.session.openStream({ streamtype: 'error', port: '8080', requestid: '0' });
    error.end();
    let message = '';
    error.on('data', (c: Buffer) => (message += c.toString()));
    await withTimeout(new Promise((r) => error.once('end', r)), (IDLE_SECONDS - 1) * 1000, 'the half pair to be given up');
    assert.match(message, /timed out waiting for complete stream pair/);
    assert.equal(pf.session.isClosed, false);
  } finally {
    pf.session.destroy();
  }
});

/** A TCP connection that sends `send` (maybe nothing); resolves with what came back once the server closed it. */
function silentConnection(port: number, send = ''): { closed: Promise<string>; socket: net.Socket } {
  const socket = net.connect(port, '127.0.0.1');
  let got = '';
  socket.on('data', (c: Buffer) => (got += c.toString()));
  socket.on('error', () => undefined);
  if (send) socket.write(send);
  return { socket, closed: new Promise((resolve) => socket.once('close', () => resolve(got))) };
}

test('the streaming and metrics servers close connections that send nothing, or only part of a request', async () => {
  const streamingPort = Number(new URL(await execUrl(['true'])).port);
  const cases = [
    { name: 'streaming, silent', c: silentConnection(streamingPort) },
    { name: 'metrics, silent', c: silentConnection(metricsPort) },
    { name: 'streaming, half a request line', c: silentConnection(streamingPort, 'GET /exec/') },
    { name: 'metrics, headers never finished', c: silentConnection(metricsPort, 'GET /metrics HTTP/1.1\r\nHost: x\r\n') },
    { name: 'metrics, kept alive after a request', c: silentConnection(metricsPort, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n') },
  ];
  try {
    const results = await Promise.all(cases.map(async ({ name, c }) => ({ name, got: await withTimeout(c.closed, 25_000, `${name} to be closed`) })));
    const byName = Object.fromEntries(results.map((r) => [r.name, r.got]));
    assert.match(byName['metrics, headers never finished']!, /^HTTP\/1\.1 408/);
    assert.match(byName['metrics, kept alive after a request']!, /^HTTP\/1\.1 200/);
  } finally {
    for (const { c } of cases) c.socket.destroy();
  }
});

test('HEAD /metrics and /healthz answer like GET without a body; other methods get 405 with Allow', async () => {
  const get = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  assert.equal(get.status, 200);
  assert.match((await get.text()), /nodelet_cri_requests_total/);
  const head = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-type'), get.headers.get('content-type'));
  assert.ok(Number(head.headers.get('content-length')) > 0, 'HEAD gives the length of the GET body');
  assert.equal(await head.text(), '');
  const health = await fetch(`http://127.0.0.1:${metricsPort}/healthz`, { method: 'HEAD' });
  assert.equal(health.status, 200);
  assert.equal(health.headers.get('content-length'), '3');
  const post = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
});
