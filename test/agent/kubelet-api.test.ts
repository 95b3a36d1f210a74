// The kubelet API of nodelet-agent: HTTPS with client certificates and bearer tokens (TokenReview),
// SubjectAccessReview, /healthz, /pods, /containerLogs, and exec / port-forward proxied to nodelet-cri's
// streaming server over WebSocket — what the apiserver does for kubectl logs, exec and port-forward.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { configureLogger } from '../../src/common/log.js';
import { run } from '../../src/common/exec.js';
import { CriLogParser, parseCriLogLine, streamCriLog } from '../../src/agent/kubelet-api/cri-log.js';
import { kubeletAccessAttributes } from '../../src/agent/kubelet-api/auth.js';
import { SpdySession } from '../../src/streaming/spdy.js';
import { waitFor } from '../helpers/pods.js';
import type { Agent } from '../../src/agent/agent.js';
import type { TestDaemon } from '../helpers/daemon.js';
import type { TestApiServer } from './apiserver.js';
import { LOOP_SCRIPT, startAgentHarness, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

let d: TestDaemon;
let api: TestApiServer;
let agent: Agent;
let base: string;
let BUSYBOX: string;
let port: number;
let clientCert: { cert: Buffer; key: Buffer };
let nodeLogDir: string;
const NS = 'kubelet-api';
const nodeName = `kapi-${randomBytes(3).toString('hex')}`;
const LOOP = ['sh', '-c', LOOP_SCRIPT];
const ALICE_TOKEN = randomBytes(12).toString('hex');
const MALLORY_TOKEN = randomBytes(12).toString('hex');

async function makeClientPki(dir: string): Promise<{ caFile: string; cert: Buffer; key: Buffer }> {
  const caKey = path.join(dir, 'ca.key');
  const caFile = path.join(dir, 'ca.crt');
  const key = path.join(dir, 'client.key');
  const csr = path.join(dir, 'client.csr');
  const cert = path.join(dir, 'client.crt');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-days', '2', '-subj', '/CN=test-client-ca', '-keyout', caKey, '-out', caFile]);
  await run('openssl', ['req', '-new', ...ec, '-subj', '/O=system:masters/CN=kube-apiserver-kubelet-client', '-keyout', key, '-out', csr]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-days', '2', '-out', cert]);
  return { caFile, cert: await fsp.readFile(cert), key: await fsp.readFile(key) };
}

let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({
    name: 'nodelet-kubelet-api-',
    nodeName,
    configure: async ({ api, base }) => {
      api!.users.set(ALICE_TOKEN, { username: 'alice', groups: ['devs'] });
      api!.users.set(MALLORY_TOKEN, { username: 'mallory', groups: [] });
      api!.authorize = (spec) => spec.user !== 'mallory';
      const pki = await makeClientPki(base);
      clientCert = { cert: pki.cert, key: pki.key };
      // The node log directory /logs/ serves: a file, a subdirectory, and links leading outside it.
      nodeLogDir = path.join(base, 'varlog');
      await fsp.mkdir(path.join(nodeLogDir, 'journal'), { recursive: true });
      await fsp.writeFile(path.join(nodeLogDir, 'syslog'), 'boot line 1\nboot line 2\n');
      await fsp.writeFile(path.join(nodeLogDir, 'journal', 'a&b.log'), 'in the journal\n');
      await fsp.writeFile(path.join(base, 'secret.txt'), 'outside\n');
      await fsp.symlink(path.join(base, 'secret.txt'), path.join(nodeLogDir, 'escape'));
      return { clientCaFile: pki.caFile, nodeLogDir };
    },
  });
  ({ daemon: d, api, agent, base, busybox: BUSYBOX } = h as Required<AgentHarness>);
  assert.ok(agent.kubeletApi, 'kubelet API started');
  port = agent.kubeletApi.port;
  api.create('pods', {
    metadata: { name: 'logs', namespace: NS },
    spec: {
      nodeName,
      terminationGracePeriodSeconds: 2,
      containers: [
        { name: 'fixed', image: BUSYBOX, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'echo oops >&2; sleep 0.2; echo line-1; echo line-2; echo line-3; trap "exit 0" TERM; while true; do sleep 0.2; done'] },
        { name: 'ticker', image: BUSYBOX, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'trap "exit 0" TERM; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done'] },
      ],
    },
  });
  api.create('pods', {
    metadata: { name: 'web', namespace: NS },
    spec: {
      nodeName,
      terminationGracePeriodSeconds: 2,
      containers: [{
        name: 'httpd', image: BUSYBOX, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'mkdir -p /www; echo hello-through-the-kubelet > /www/index.html; exec httpd -f -p 8080 -h /www'],
        readinessProbe: { httpGet: { path: '/index.html', port: 8080 }, periodSeconds: 1 },
      }],
    },
  });
  for (const name of ['logs', 'web']) {
    await waitFor(`${name} Running`, async () => api.get('pods', NS, name)?.status?.phase === 'Running', 30_000);
  }
});

after(() => h?.close());

type Credentials = { cert?: boolean; token?: string };

function requestOptions(creds: Credentials): https.RequestOptions {
  return {
    rejectUnauthorized: false,
    ...(creds.cert ? clientCert : {}),
    headers: creds.token ? { Authorization: `Bearer ${creds.token}` } : {},
  };
}

function kubeletGet(pathAndQuery: string, creds: Credentials = { cert: true }): Promise<{ status: number; body: string; type?: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`https://127.0.0.1:${port}${pathAndQuery}`, requestOptions(creds), (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** A WebSocket to the kubelet API; resolves with the socket, or rejects with the HTTP status it was refused with. */
function kubeletWebSocket(pathAndQuery: string, protocol: string, creds: Credentials, onMessage: (data: Buffer) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}${pathAndQuery}`, [protocol], { perMessageDeflate: false, ...requestOptions(creds) });
    ws.on('message', (raw: Buffer) => onMessage(Buffer.isBuffer(raw) ? raw : Buffer.from(raw as ArrayBuffer)));
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })));
    ws.once('error', reject);
  });
}

interface ExecResult {
  stdout: string;
  stderr: string;
  status: any;
  protocol: string;
}

/** Runs a command through /exec with the v5 channel protocol: stdin on 0 (closed with 255,0), output on 1 and 2, status on 3. */
async function execV5(container: string, command: string[], input?: string): Promise<ExecResult> {
  const q = new URLSearchParams();
  for (const c of command) q.append('command', c);
  q.set('stdout', '1');
  q.set('stderr', '1');
  if (input !== undefined) q.set('stdin', '1');
  let stdout = '';
  let stderr = '';
  let error = '';
  const ws = await kubeletWebSocket(`/exec/${NS}/logs/${container}?${q}`, 'v5.channel.k8s.io', { cert: true }, (data) => {
    const payload = data.subarray(1).toString();
    if (data[0] === 1) stdout += payload;
    else if (data[0] === 2) stderr += payload;
    else if (data[0] === 3) error += payload;
  });
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  if (input !== undefined) {
    ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(input)]));
    ws.send(Buffer.from([255, 0]));
  }
  await closed;
  return { stdout, stderr, status: JSON.parse(error), protocol: ws.protocol };
}

test('the CRI log parser joins partial lines and reads tails, timestamps, limits and follows', async () => {
  assert.deepEqual(parseCriLogLine('2024-01-02T03:04:05.123456789Z stdout F hello world'), {
    time: '2024-01-02T03:04:05.123456789Z', stream: 'stdout', full: true, text: 'hello world',
  });
  assert.equal(parseCriLogLine('garbage'), undefined);
  const parser = new CriLogParser();
  assert.deepEqual(parser.push('2024-01-02T03:04:05Z stdout P abc\n2024-01-02T03:04:06Z stdout F de'), []);
  assert.deepEqual(parser.push('f\n2024-01-02T03:04:07Z stderr F \n'), [
    { time: '2024-01-02T03:04:05Z', stream: 'stdout', text: 'abcdef\n' },
    { time: '2024-01-02T03:04:07Z', stream: 'stderr', text: '\n' },
  ]);

  const file = path.join(base, 'unit.log');
  await fsp.writeFile(file, ['2024-01-01T00:00:01Z stdout F one', '2024-01-01T00:00:02Z stdout P tw', '2024-01-01T00:00:03Z stdout F o', '2024-01-01T00:00:04Z stderr F three', ''].join('\n'));
  const read = async (opts: Parameters<typeof streamCriLog>[1]) => {
    let out = '';
    await streamCriLog(file, opts, async (t) => void (out += t), new AbortController().signal, async () => false);
    return out;
  };
  assert.equal(await read({}), 'one\ntwo\nthree\n');
  assert.equal(await read({ tailLines: 2 }), 'two\nthree\n');
  assert.equal(await read({ tailLines: 0 }), '');
  assert.equal(await read({ timestamps: true, tailLines: 1 }), '2024-01-01T00:00:04Z three\n');
  assert.equal(await read({ limitBytes: 6 }), 'one\ntw');
  assert.equal(await read({ since: new Date('2024-01-01T00:00:02Z') }), 'two\nthree\n');

  // Following: lines appended later arrive; the stream ends once the container is done.
  let out = '';
  let running = true;
  let atEnd = false;
  // The abort ends the follower even when an assertion fails, so the test file can always exit.
  const stopFollowing = new AbortController();
  // The follower asks whether the container still runs only once it has read to the end of the file.
  const stillRunning = async () => {
    atEnd = true;
    return running;
  };
  const following = streamCriLog(file, { follow: true, tailLines: 0, pollMs: 20 }, async (t) => void (out += t), stopFollowing.signal, stillRunning);
  try {
    // tailLines 0 skips what exists when the follower opens the file: append only once it has read that.
    await waitFor('the follower to reach the end of the file', () => atEnd, 5000);
    assert.equal(out, '', 'tailLines 0 prints none of the existing lines');
    await fsp.appendFile(file, '2024-01-01T00:00:05Z stdout F four\n');
    await waitFor('appended line', async () => out === 'four\n', 5000);
  } catch (err) {
    stopFollowing.abort();
    await following.catch(() => undefined);
    throw err;
  }
  running = false;
  await fsp.appendFile(file, '2024-01-01T00:00:06Z stdout F five\n');
  await following;
  assert.equal(out, 'four\nfive\n');
});

test('request paths map to the nodes subresources the kubelet authorises', () => {
  assert.deepEqual(kubeletAccessAttributes('GET', '/pods'), { verb: 'get', subresources: ['pods', 'proxy'] });
  assert.deepEqual(kubeletAccessAttributes('POST', '/exec/ns/p/c'), { verb: 'create', subresources: ['proxy'] });
  assert.deepEqual(kubeletAccessAttributes('GET', '/containerLogs/ns/p/c'), { verb: 'get', subresources: ['proxy'] });
  assert.deepEqual(kubeletAccessAttributes('GET', '/stats/summary'), { verb: 'get', subresources: ['stats'] });
  assert.deepEqual(kubeletAccessAttributes('GET', '/metrics/cadvisor'), { verb: 'get', subresources: ['metrics'] });
  assert.deepEqual(kubeletAccessAttributes('GET', '/logs/syslog'), { verb: 'get', subresources: ['log'] });
});

test('/healthz answers without credentials; /pods lists the node\'s pods with their status', async () => {
  const health = await kubeletGet('/healthz', {});
  assert.equal(health.status, 200);
  assert.equal(health.body, 'ok');
  const res = await kubeletGet('/pods');
  assert.equal(res.status, 200);
  const list = JSON.parse(res.body);
  assert.equal(list.kind, 'PodList');
  const byName = Object.fromEntries(list.items.map((p: any) => [p.metadata.name, p]));
  assert.ok(byName.logs && byName.web, `pods listed: ${Object.keys(byName)}`);
  assert.equal(byName.web.status.phase, 'Running');
  assert.ok(byName.web.status.podIP);
  assert.equal(byName.web.spec.nodeName, nodeName);
});

test('unauthenticated requests get 401 and unauthorised ones 403, checked with TokenReview and SubjectAccessReview', async () => {
  assert.equal((await kubeletGet('/pods', {})).status, 401);
  assert.equal((await kubeletGet('/pods', { token: 'not-a-token' })).status, 401);
  const before = api.accessReviews.length;
  const denied = await kubeletGet(`/containerLogs/${NS}/logs/fixed`, { token: MALLORY_TOKEN });
  assert.equal(denied.status, 403);
  assert.match(denied.body, /user=mallory/);
  const review = api.accessReviews.slice(before).find((r) => r.user === 'mallory');
  assert.deepEqual(review.resourceAttributes, { verb: 'get', group: '', version: 'v1', resource: 'nodes', subresource: 'proxy', name: nodeName });
  const allowed = await kubeletGet('/pods', { token: ALICE_TOKEN });
  assert.equal(allowed.status, 200);
  const aliceReview = api.accessReviews.find((r) => r.user === 'alice');
  assert.deepEqual(aliceReview.groups, ['devs', 'system:authenticated']);
  assert.equal(aliceReview.resourceAttributes.subresource, 'pods');
  // Streams are refused before anything reaches the runtime.
  await assert.rejects(kubeletWebSocket(`/exec/${NS}/logs/fixed?command=true&stdout=1`, 'v5.channel.k8s.io', {}, () => undefined), (err: any) => err.statusCode === 401);
  await assert.rejects(
    kubeletWebSocket(`/exec/${NS}/logs/fixed?command=true&stdout=1`, 'v5.channel.k8s.io', { token: MALLORY_TOKEN }, () => undefined),
    (err: any) => err.statusCode === 403,
  );
});

test('containerLogs reads the CRI log: whole, tailLines, timestamps, limitBytes, sinceTime', async () => {
  const url = `/containerLogs/${NS}/logs/fixed`;
  const all = await waitFor('fixed container logged', async () => {
    const r = await kubeletGet(url);
    return r.status === 200 && r.body.includes('line-3') ? r : undefined;
  }, 10_000);
  assert.equal(all.body, 'oops\nline-1\nline-2\nline-3\n');
  assert.equal((await kubeletGet(`${url}?tailLines=2`)).body, 'line-2\nline-3\n');
  const stamped = (await kubeletGet(`${url}?tailLines=1&timestamps=true`)).body;
  assert.match(stamped, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) line-3\n$/);
  assert.equal((await kubeletGet(`${url}?limitBytes=8`)).body, 'oops\nlin');
  assert.equal((await kubeletGet(`${url}?sinceTime=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).body, '');
  assert.equal((await kubeletGet(`/containerLogs/${NS}/logs/nope`)).status, 400);
  assert.equal((await kubeletGet(`/containerLogs/${NS}/ghost/fixed`)).status, 404);
});

test('containerLogs follow streams new lines as they are written until the client leaves', async () => {
  const lines = await new Promise<string[]>((resolve, reject) => {
    let text = '';
    const req = https.get(`https://127.0.0.1:${port}/containerLogs/${NS}/logs/ticker?follow=true&tailLines=1`, requestOptions({ cert: true }), (res) => {
      assert.equal(res.statusCode, 200);
      res.on('data', (c: Buffer) => {
        text += c.toString();
        const got = text.split('\n').filter(Boolean);
        if (got.length >= 4) {
          req.destroy();
          resolve(got);
        }
      });
    });
    req.on('error', (err) => (/socket hang up|aborted/.test(err.message) ? undefined : reject(err)));
    setTimeout(() => reject(new Error(`follow timed out: ${JSON.stringify(text)}`)), 10_000).unref();
  });
  const numbers = lines.map((l) => Number(/^tick-(\d+)$/.exec(l)?.[1]));
  assert.ok(numbers.every((n) => Number.isInteger(n)), `lines ${lines}`);
  for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], numbers[i - 1]! + 1, `consecutive ticks: ${numbers}`);
});

test('exec through the kubelet API over WebSocket v5: output, stdin and the exit status', async () => {
  const failing = await execV5('fixed', ['sh', '-c', 'echo out; echo err >&2; exit 7']);
  assert.equal(failing.protocol, 'v5.channel.k8s.io');
  assert.equal(failing.stdout, 'out\n');
  assert.equal(failing.stderr, 'err\n');
  assert.equal(failing.status.status, 'Failure');
  assert.equal(failing.status.reason, 'NonZeroExitCode');
  assert.deepEqual(failing.status.details.causes.find((c: any) => c.reason === 'ExitCode'), { reason: 'ExitCode', message: '7' });
  const echoed = await execV5('fixed', ['cat'], 'piped through stdin');
  assert.equal(echoed.stdout, 'piped through stdin');
  assert.equal(echoed.status.status, 'Success');
  const host = await execV5('ticker', ['hostname']);
  assert.equal(host.stdout.trim(), 'logs');
});

/** An exec over SPDY/3.1 as the apiserver opens it towards the kubelet (POST + Upgrade, a stream per stdio). */
function execSpdy(container: string, command: string[]): Promise<{ stdout: string; status: any; protocol: string }> {
  const q = new URLSearchParams();
  for (const c of command) q.append('command', c);
  q.set('stdout', '1');
  return new Promise((resolve, reject) => {
    const req = https.request(`https://127.0.0.1:${port}/exec/${NS}/logs/${container}?${q}`, {
      method: 'POST',
      ...requestOptions({ cert: true }),
      headers: { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': ['v4.channel.k8s.io', 'channel.k8s.io'] },
    });
    req.once('upgrade', (res, socket, head) => {
      if (head.length) socket.unshift(head);
      const protocol = String(res.headers['x-stream-protocol-version'] ?? '');
      const session = new SpdySession(socket, 'client');
      const error = session.openStream({ streamtype: 'error' });
      error.end();
      const stdout = session.openStream({ streamtype: 'stdout' });
      stdout.end();
      let out = '';
      let status = '';
      stdout.on('data', (c: Buffer) => (out += c.toString()));
      error.on('data', (c: Buffer) => (status += c.toString()));
      const ended = (s: typeof stdout) => new Promise<void>((r) => (s.readableEnded || s.destroyed ? r() : (s.once('end', r), s.once('close', r))));
      Promise.all([ended(error), ended(stdout)]).then(() => {
        session.destroy();
        // v4.channel.k8s.io sends a Status on the error stream for success too: none at all is a failure.
        if (!status) reject(new Error('no Status on the error stream'));
        else resolve({ stdout: out, status: JSON.parse(status), protocol });
      }, reject);
    });
    req.once('response', (res) => reject(new Error(`HTTP ${res.statusCode}`)));
    req.once('error', reject);
    req.end();
  });
}

test('exec through the kubelet API over SPDY/3.1, as the apiserver proxies kubectl exec', async () => {
  const ok = await execSpdy('fixed', ['sh', '-c', 'echo via-spdy']);
  assert.equal(ok.protocol, 'v4.channel.k8s.io');
  assert.equal(ok.stdout, 'via-spdy\n');
  assert.equal(ok.status.status, 'Success');
  const failing = await execSpdy('fixed', ['sh', '-c', 'exit 3']);
  assert.equal(failing.status.reason, 'NonZeroExitCode');
  assert.equal(failing.status.details.causes.find((c: any) => c.reason === 'ExitCode').message, '3');
});

test('port-forward through the kubelet API reaches busybox httpd in the pod', async () => {
  let received = Buffer.alloc(0);
  let errorText = '';
  const seen = [false, false];
  const ws = await kubeletWebSocket(`/portForward/${NS}/web?ports=8080`, 'v2.portforward.k8s.io', { cert: true }, (data) => {
    const channel = data[0]!;
    let payload = data.subarray(1);
    // Each channel's first message names its port (2 bytes, little endian).
    if (!seen[channel]) {
      seen[channel] = true;
      assert.equal(payload.readUInt16LE(0), 8080);
      payload = payload.subarray(2);
    }
    if (channel === 0) received = Buffer.concat([received, payload]);
    else errorText += payload.toString();
  });
  try {
    ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n')]));
    await waitFor('the page through port-forward', async () => received.toString().includes('hello-through-the-kubelet'), 10_000);
    assert.match(received.toString(), /^HTTP\/1\.[01] 200 OK/);
    assert.equal(errorText, '');
  } finally {
    ws.close();
  }
});

/** The samples of one family in a Prometheus text: [labels, value] pairs. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

test('/metrics: running pods and containers, pod start durations, runtime operations and process figures', async () => {
  const res = await kubeletGet('/metrics');
  assert.equal(res.status, 200, res.body);
  assert.match(res.type ?? '', /^text\/plain; version=0\.0\.4/);
  assert.ok(samples(res.body, 'kubelet_running_pods')[0]!.value >= 2, 'logs and web have sandboxes');
  const running = samples(res.body, 'kubelet_running_containers').find((s) => s.labels.container_state === 'running');
  assert.ok(running && running.value >= 3, JSON.stringify(running));
  assert.match(res.body, /^# TYPE kubelet_pod_start_duration_seconds histogram$/m);
  const started = samples(res.body, 'kubelet_pod_start_duration_seconds_count')[0]!;
  assert.ok(started.value >= 2, `pods started: ${started.value}`);
  assert.ok(samples(res.body, 'kubelet_pod_start_duration_seconds_bucket').some((s) => s.labels.le === '+Inf' && s.value === started.value));
  const ops = samples(res.body, 'kubelet_runtime_operations_total');
  for (const op of ['run_podsandbox', 'create_container', 'start_container', 'list_podsandbox', 'container_status']) {
    assert.ok(ops.some((s) => s.labels.operation_type === op && s.value >= 1), `operation ${op} counted`);
  }
  assert.ok(samples(res.body, 'kubelet_runtime_operations_duration_seconds_count').some((s) => s.labels.operation_type === 'run_podsandbox'));
  assert.deepEqual(samples(res.body, 'kubelet_node_name'), [{ labels: { node: nodeName }, value: 1 }]);
  for (const p of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'process_open_fds']) {
    assert.ok(samples(res.body, p)[0]!.value > 0, p);
  }
  // A token allowed by SubjectAccessReview may read it; one refused may not.
  assert.equal((await kubeletGet('/metrics', { token: ALICE_TOKEN })).status, 200);
  assert.equal((await kubeletGet('/metrics', { token: MALLORY_TOKEN })).status, 403);
  assert.equal((await kubeletGet('/metrics', {})).status, 401);
});

test('/metrics/probes counts probe results by probe type, result, container and pod', async () => {
  const web = api.get('pods', NS, 'web');
  const probe = await waitFor('a successful readiness probe counted', async () => {
    const text = (await kubeletGet('/metrics/probes')).body;
    return samples(text, 'prober_probe_total').find((s) => s.labels.pod === 'web' && s.labels.result === 'successful');
  }, 15_000);
  assert.deepEqual(probe.labels, { probe_type: 'Readiness', result: 'successful', container: 'httpd', pod: 'web', namespace: NS, pod_uid: web.metadata.uid });
  assert.ok(probe.value >= 1);
});

test('/metrics/cadvisor: container_* series per container under cAdvisor\'s labels', async () => {
  const res = await kubeletGet('/metrics/cadvisor');
  assert.equal(res.status, 200, res.body);
  assert.match(res.body, /^# TYPE container_cpu_usage_seconds_total counter$/m);
  const mem = samples(res.body, 'container_memory_working_set_bytes').find((s) => s.labels.pod === 'web' && s.labels.container === 'httpd');
  assert.ok(mem, 'web/httpd has a working set series');
  assert.deepEqual(Object.keys(mem.labels).sort(), ['container', 'id', 'image', 'name', 'namespace', 'pod']);
  assert.equal(mem.labels.namespace, NS);
  assert.match(mem.labels.image, /busybox/);
  assert.ok(mem.value > 0);
  const cpu = samples(res.body, 'container_cpu_usage_seconds_total').find((s) => s.labels.pod === 'logs' && s.labels.container === 'ticker');
  assert.equal(cpu?.labels.cpu, 'total');
  assert.ok(res.body.includes('container_start_time_seconds{'), 'start times');
});

test('/runningpods lists the pods the runtime runs, with their running containers, in the kubelet\'s PodList', async () => {
  const res = await kubeletGet('/runningpods/');
  assert.equal(res.status, 200, res.body);
  const list = JSON.parse(res.body);
  assert.equal(list.kind, 'PodList');
  const logs = list.items.find((p: any) => p.metadata.name === 'logs' && p.metadata.namespace === NS);
  assert.equal(logs.metadata.uid, api.get('pods', NS, 'logs').metadata.uid);
  assert.deepEqual(logs.spec.containers.map((c: any) => c.name).sort(), ['fixed', 'ticker']);
  assert.match(logs.spec.containers[0].image, /busybox/);
  assert.deepEqual(logs.status, {});
});

test('/configz answers the configuration as a KubeletConfiguration under "kubeletconfig"', async () => {
  const res = await kubeletGet('/configz');
  assert.equal(res.status, 200, res.body);
  const { kubeletconfig } = JSON.parse(res.body);
  assert.equal(kubeletconfig.port, port);
  assert.equal(kubeletconfig.maxPods, h.config.maxPods);
  assert.equal(kubeletconfig.clusterDomain, 'cluster.local');
  assert.equal(kubeletconfig.authentication.x509.clientCAFile, h.config.clientCaFile);
  assert.equal(kubeletconfig.authentication.webhook.enabled, true);
  assert.equal(kubeletconfig.cgroupsPerQOS, h.config.cgroupsPerQOS);
  assert.equal((await kubeletGet('/configz', { token: MALLORY_TOKEN })).status, 403);
});

test('/logs/ lists and reads node log files, and nothing outside the log directory', async () => {
  const listing = await kubeletGet('/logs/');
  assert.equal(listing.status, 200);
  assert.match(listing.type ?? '', /^text\/html/);
  assert.equal(listing.body, '<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n<a href="escape">escape</a>\n<a href="journal/">journal/</a>\n<a href="syslog">syslog</a>\n</pre>\n');
  assert.equal((await kubeletGet('/logs/syslog')).body, 'boot line 1\nboot line 2\n');
  assert.match((await kubeletGet('/logs/journal/')).body, /<a href="a%26b\.log">a&amp;b\.log<\/a>/);
  assert.equal((await kubeletGet('/logs/journal/a%26b.log')).body, 'in the journal\n');
  // A directory without its slash is redirected, as Go's file server does.
  const redirect = await kubeletGet('/logs/journal');
  assert.equal(redirect.status, 301);
  // Out of the directory: through a symlink, or '..' (encoded, so no client normalises it away).
  assert.equal((await kubeletGet('/logs/escape')).status, 404);
  assert.equal((await kubeletGet('/logs/%2e%2e/secret.txt')).status, 404);
  assert.equal((await kubeletGet('/logs/journal/..%2f..%2fsecret.txt')).status, 404);
  assert.equal((await kubeletGet('/logs/nope')).status, 404);
  assert.equal((await kubeletGet('/logs/syslog', { token: MALLORY_TOKEN })).status, 403);
});

test('/healthz runs the kubelet\'s checks (ping, log, syncloop, each also alone); /metrics/slis reports them', async () => {
  assert.equal((await kubeletGet('/healthz', {})).body, 'ok');
  for (const name of ['ping', 'log', 'syncloop']) assert.deepEqual(await kubeletGet(`/healthz/${name}`, {}).then((r) => [r.status, r.body]), [200, 'ok'], name);
  assert.equal((await kubeletGet('/healthz/nope', {})).status, 404);
  const slis = await kubeletGet('/metrics/slis');
  assert.equal(slis.status, 200);
  assert.match(slis.body, /^# TYPE kubernetes_healthcheck gauge$/m);
  for (const name of ['ping', 'log', 'syncloop']) {
    assert.deepEqual(samples(slis.body, 'kubernetes_healthcheck').find((s) => s.labels.name === name), { labels: { name, type: 'healthz' }, value: 1 });
    assert.ok(samples(slis.body, 'kubernetes_healthchecks_total').find((s) => s.labels.name === name && s.labels.status === 'success')!.value >= 2);
  }
  assert.equal((await kubeletGet('/metrics/slis', { token: MALLORY_TOKEN })).status, 403);
});
