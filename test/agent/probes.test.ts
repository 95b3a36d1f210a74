// nodelet-agent probes and lifecycle hooks end to end with real containers, plus the probe actions against real servers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { configureLogger } from '../../src/common/log.js';
import { grpcAction, httpGetAction, tcpSocketAction } from '../../src/agent/probes/actions.js';
import { waitFor } from '../helpers/pods.js';
import type { TestDaemon } from '../helpers/daemon.js';
import type { TestApiServer } from './apiserver.js';
import { LOOP_SCRIPT, execCapture, startAgentHarness, waitPod as waitPodIn, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

let d: TestDaemon;
let api: TestApiServer;
let base: string;
let BUSYBOX: string;
const NS = 'probe-test';
const nodeName = `node-${randomBytes(3).toString('hex')}`;
const LOOP = LOOP_SCRIPT;

let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({ name: 'nodelet-agent-probe-', nodeName });
  ({ daemon: d, api, base, busybox: BUSYBOX } = h as Required<AgentHarness>);
});

after(() => h?.close());

function podManifest(name: string, spec: Record<string, any>): any {
  return { metadata: { name, namespace: NS, labels: { app: name } }, spec: { nodeName, terminationGracePeriodSeconds: 10, ...spec } };
}

function container(name: string, script: string, extra: Record<string, any> = {}): any {
  return { name, image: BUSYBOX, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', script], ...extra };
}

function waitPod(name: string, what: string, pred: (pod: any) => boolean, timeoutMs?: number): Promise<any> {
  return waitPodIn(api, NS, name, what, pred, timeoutMs);
}

const cs = (pod: any, name = 'main') => pod.status.containerStatuses?.find((s: any) => s.name === name);
const cond = (pod: any, type: string) => pod.status.conditions?.find((c: any) => c.type === type)?.status;
const idOf = (pod: any, name = 'main') => cs(pod, name).containerID.replace('nodelet://', '');

function exec(containerId: string, cmd: string[]): Promise<{ code: number; out: string }> {
  return execCapture(d.client, containerId, cmd);
}

const eventsOf = (name: string, reason: string) => api.list('events').filter((e) => e.involvedObject.name === name && e.reason === reason);

async function deleteAndWait(name: string, grace = 10): Promise<void> {
  api.remove('pods', NS, name, grace);
  await waitFor(`${name} gone`, async () => !api.get('pods', NS, name), 30_000);
}

test('probe actions: httpGet status codes and headers, tcpSocket, grpc health against real servers', async () => {
  const server = http.createServer((req, res) => {
    if (req.url === '/redirect') res.writeHead(302, { Location: '/elsewhere' }).end();
    else if (req.url === '/header') res.writeHead(req.headers['x-probe'] === 'yes' ? 200 : 403).end();
    else res.writeHead(req.url === '/ok' ? 200 : 503).end('body');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const named = { name: 'c', ports: [{ name: 'web', containerPort: port }] };
  try {
    assert.equal((await httpGetAction({ path: '/ok', port }, '127.0.0.1', undefined, 1)).ok, true);
    assert.equal((await httpGetAction({ path: '/ok', port: 'web' }, '127.0.0.1', named, 1)).ok, true, 'named port');
    assert.equal((await httpGetAction({ path: '/redirect', port }, '127.0.0.1', undefined, 1)).ok, true, '3xx is success');
    const bad = await httpGetAction({ path: '/fail', port }, '127.0.0.1', undefined, 1);
    assert.equal(bad.ok, false);
    assert.match(bad.output, /statuscode: 503/);
    assert.equal((await httpGetAction({ path: '/header', port }, '127.0.0.1', undefined, 1)).ok, false);
    assert.equal((await httpGetAction({ path: '/header', port, httpHeaders: [{ name: 'X-Probe', value: 'yes' }] }, '127.0.0.1', undefined, 1)).ok, true);
    assert.equal((await tcpSocketAction({ port }, '127.0.0.1', undefined, 1)).ok, true);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
  // The port is closed now.
  assert.equal((await tcpSocketAction({ port }, '127.0.0.1', undefined, 1)).ok, false);
  assert.equal((await httpGetAction({ port }, '127.0.0.1', undefined, 1)).ok, false);

  const health = new grpc.Server();
  health.register(
    '/grpc.health.v1.Health/Check',
    (call: any, callback: any) => callback(null, call.request.service === 'down' ? 2 : 1),
    (status: number) => Buffer.from([0x08, status]),
    // grpc-js treats a falsy request as none at all: wrap the service name.
    (buf: Buffer) => ({ service: buf.length > 2 ? buf.subarray(2).toString() : '' }),
    'unary',
  );
  const grpcPort = await new Promise<number>((resolve, reject) =>
    health.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  try {
    assert.deepEqual(await grpcAction({ port: grpcPort }, '127.0.0.1', 2), { ok: true, output: '' });
    const down = await grpcAction({ port: grpcPort, service: 'down' }, '127.0.0.1', 2);
    assert.equal(down.ok, false);
    assert.match(down.output, /NOT_SERVING/);
  } finally {
    health.forceShutdown();
  }
  assert.equal((await grpcAction({ port: grpcPort }, '127.0.0.1', 1)).ok, false, 'nothing listening');
});

test('a startup probe gates readiness; an exec readiness probe flips Ready both ways', async () => {
  api.create('pods', podManifest('ready', {
    containers: [container('main', LOOP, {
      startupProbe: { exec: { command: ['test', '-f', '/tmp/started'] }, periodSeconds: 1, failureThreshold: 60 },
      readinessProbe: { exec: { command: ['test', '-f', '/tmp/ready'] }, periodSeconds: 1, failureThreshold: 1 },
    })],
  }));
  let pod = await waitPod('ready', 'Running', (p) => p.status.phase === 'Running');
  assert.equal(cs(pod).started, false);
  assert.equal(cs(pod).ready, false);
  assert.equal(cond(pod, 'Ready'), 'False');
  assert.equal(cond(pod, 'ContainersReady'), 'False');
  const id = idOf(pod);
  await exec(id, ['touch', '/tmp/ready']);
  // Two more startup probe failures (1 s apart) with /tmp/ready present: a readiness probe run meanwhile would pass.
  // A repeated event is one Event whose count goes up.
  const startupFailures = () => eventsOf('ready', 'Unhealthy').filter((e) => /^Startup probe failed/.test(e.message)).reduce((n, e) => n + (e.count ?? 1), 0);
  const failedBefore = startupFailures();
  await waitFor('two more startup probe failures', () => startupFailures() >= failedBefore + 2, 10_000);
  assert.equal(cs(api.get('pods', NS, 'ready')).ready, false, 'not ready before the startup probe passed');
  assert.equal(eventsOf('ready', 'Unhealthy').filter((e) => /^Readiness probe/.test(e.message)).length, 0, 'readiness is not probed before startup passed');
  await exec(id, ['touch', '/tmp/started']);
  const t0 = Date.now();
  pod = await waitPod('ready', 'Ready', (p) => cond(p, 'Ready') === 'True', 10_000);
  console.log(`# readiness flipped ${Date.now() - t0} ms after the startup file appeared`);
  assert.equal(cs(pod).started, true);
  assert.equal(cs(pod).ready, true);
  assert.equal(cond(pod, 'ContainersReady'), 'True');
  await exec(id, ['rm', '/tmp/ready']);
  pod = await waitPod('ready', 'not Ready again', (p) => cond(p, 'Ready') === 'False', 10_000);
  assert.equal(cs(pod).restartCount, 0, 'readiness failures never restart');
  assert.ok(eventsOf('ready', 'Unhealthy').some((e) => /^Readiness probe failed/.test(e.message)));
  await deleteAndWait('ready');
});

/** How many times the liveness probe below passed in this container (each pass appends a line to /tmp/probed). */
async function passedProbes(containerId: string): Promise<number> {
  const res = await exec(containerId, ['sh', '-c', 'cat /tmp/probed 2>/dev/null; true']);
  return res.out.split('\n').filter((l) => l === 'passed').length;
}

test('a liveness probe failure kills and restarts the container', async () => {
  api.create('pods', podManifest('live', {
    containers: [container('main', `touch /tmp/alive; ${LOOP}`, {
      // Passing leaves a trace, so the test can wait for passes instead of for time.
      livenessProbe: { exec: { command: ['sh', '-c', 'test -f /tmp/alive && echo passed >> /tmp/probed'] }, periodSeconds: 1, failureThreshold: 2 },
    })],
  }));
  let pod = await waitPod('live', 'Running', (p) => p.status.phase === 'Running' && cs(p).ready);
  const firstId = idOf(pod);
  // Three passes in one container: more than failureThreshold probe periods went by without a restart.
  await waitFor('three passing liveness probes', async () => (await passedProbes(firstId)) >= 3, 15_000);
  assert.equal(cs(api.get('pods', NS, 'live')).restartCount, 0, 'a passing liveness probe leaves it alone');
  assert.equal(idOf(api.get('pods', NS, 'live')), firstId);
  await exec(firstId, ['rm', '/tmp/alive']);
  pod = await waitPod('live', 'restarted', (p) => cs(p)?.restartCount >= 1 && cs(p).state.running, 20_000);
  assert.notEqual(idOf(pod), firstId);
  assert.equal(cs(pod).lastState.terminated.exitCode, 0, 'stopped with SIGTERM, which the trap turns into exit 0');
  assert.ok(eventsOf('live', 'Unhealthy').some((e) => /^Liveness probe failed/.test(e.message)));
  assert.ok(eventsOf('live', 'Killing').some((e) => /failed liveness probe, will be restarted/.test(e.message)));
  // The new container is healthy (its command made the file again) and stays.
  const secondId = idOf(pod);
  await waitFor('three passing liveness probes in the new container', async () => (await passedProbes(secondId)) >= 3, 15_000);
  assert.equal(cs(api.get('pods', NS, 'live')).restartCount, 1);
  assert.equal(idOf(api.get('pods', NS, 'live')), secondId);
  await deleteAndWait('live');
});

test('an httpGet readiness probe against busybox httpd on a named port, with a tcpSocket liveness probe', async () => {
  api.create('pods', podManifest('web', {
    containers: [container('main', 'mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 8080 -h /www', {
      ports: [{ name: 'http', containerPort: 8080 }],
      readinessProbe: { httpGet: { path: '/ready.html', port: 'http', httpHeaders: [{ name: 'X-Test', value: '1' }] }, periodSeconds: 1, failureThreshold: 1 },
      livenessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1, failureThreshold: 3 },
    })],
  }));
  let pod = await waitPod('web', 'Running', (p) => p.status.phase === 'Running');
  await waitFor('a readiness failure with the 404', () => eventsOf('web', 'Unhealthy').some((e) => /statuscode: 404/.test(e.message)), 10_000);
  pod = api.get('pods', NS, 'web');
  assert.equal(cs(pod).ready, false, '/ready.html is a 404');
  await exec(idOf(pod), ['sh', '-c', 'echo yes > /www/ready.html']);
  pod = await waitPod('web', 'Ready', (p) => cond(p, 'Ready') === 'True', 10_000);
  assert.equal(cs(pod).restartCount, 0, 'the tcpSocket liveness probe passes');
  // httpd logs nothing by default; the probe reached the pod IP from the host, as the kubelet's does.
  await deleteAndWait('web', 2);
});

test('postStart completes before the container is reported running; preStop runs before the stop signal, within the grace period', async () => {
  const hostDir = path.join(base, `hooks-${randomBytes(3).toString('hex')}`);
  const order = path.join(hostDir, 'order');
  api.create('pods', podManifest('hooks', {
    volumes: [{ name: 'host', hostPath: { path: hostDir, type: 'DirectoryOrCreate' } }],
    containers: [container('main', 'trap "echo term >> /host/order; exit 0" TERM; while true; do sleep 0.2; done', {
      volumeMounts: [{ name: 'host', mountPath: '/host' }],
      lifecycle: {
        // Both hooks take a second, so reporting or stopping without waiting for them shows in the order file.
        postStart: { exec: { command: ['sh', '-c', 'sleep 1; echo post-start >> /host/order'] } },
        preStop: { exec: { command: ['sh', '-c', 'sleep 1; echo pre-stop >> /host/order'] } },
      },
    })],
  }));
  // Polled often: what the file held when the pod first showed Running is what the order was then.
  const seen = await waitFor('hooks Running', () => {
    const pod = api.get('pods', NS, 'hooks');
    return pod?.status?.phase === 'Running' ? { pod, order: readFileSync(order, { encoding: 'utf8', flag: 'a+' }) } : undefined;
  }, { timeoutMs: 20_000, intervalMs: 10 });
  assert.equal(seen.order, 'post-start\n', 'the postStart hook finished before the container was reported running');
  assert.ok(cs(seen.pod).state.running, 'the container is running');
  const started = Date.now();
  await deleteAndWait('hooks', 10);
  assert.equal(await fsp.readFile(order, 'utf8'), 'post-start\npre-stop\nterm\n', 'preStop ran, then SIGTERM reached the container');
  assert.ok(Date.now() - started < 10_000, 'within the grace period');
});

test('a failing postStart hook kills the container (FailedPostStartHook) and it is restarted', async () => {
  api.create('pods', podManifest('badhook', {
    containers: [container('main', LOOP, { lifecycle: { postStart: { exec: { command: ['sh', '-c', 'echo nope >&2; exit 7'] } } } })],
  }));
  const event = await waitFor('FailedPostStartHook', async () => eventsOf('badhook', 'FailedPostStartHook')[0]);
  assert.equal(event.type, 'Warning');
  assert.match(event.message, /nope/);
  await waitPod('badhook', 'restarted', (p) => cs(p)?.restartCount >= 1);
  await deleteAndWait('badhook', 2);
});
