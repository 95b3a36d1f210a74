// nodelet-agent against the real kube-apiserver (Node,RBAC authorization, NodeRestriction admission) with a node
// client certificate: registration, the Lease heartbeat, a scheduled pod run to Running (with its service-account
// token volume), `kubectl logs` and `exec`, kubelet events, a static pod's mirror, deletion, an apiserver
// outage the agent rides out with its pods kept, and TLS bootstrap (a bootstrap token → an issued node certificate).
// The agent reaches the apiserver through a TCP relay of ours, so the test can cut the connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import YAML from 'yaml';
import { configureLogger, logger } from '../../src/common/log.js';
import { bootstrapClientCertificate, KUBELET_CLIENT_SIGNER } from '../../src/agent/bootstrap.js';
import { waitFor } from '../helpers/pods.js';
import { startControlPlane, type ControlPlane } from '../conformance/control-plane.js';
import { startAgentHarness, type AgentHarness } from './harness.js';
import { DEFAULT_EVICTION_HARD, parseEvictionHard } from '../../src/agent/eviction.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

const nodeName = `real-${randomBytes(3).toString('hex')}`;
const NS = 'default';
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

/** A TCP relay to the apiserver that can refuse every connection (an apiserver that is briefly away). */
interface Relay {
  url: string;
  refused: number;
  setDown(down: boolean): void;
  close(): Promise<void>;
}

async function startRelay(target: URL): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      relay.refused++;
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const relay: Relay = {
    url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    refused: 0,
    setDown(value) {
      down = value;
      if (down) for (const s of sockets) s.destroy();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return relay;
}

let cp: ControlPlane | undefined;
let relay: Relay | undefined;
let h: AgentHarness;

before(async () => {
  cp = await startControlPlane();
  relay = await startRelay(new URL(cp.server));
  const kubeconfig = YAML.parse(await fsp.readFile(await cp.nodeCredentials(nodeName), 'utf8'));
  kubeconfig.clusters[0].cluster.server = relay.url;
  h = await startAgentHarness({
    name: 'nodelet-agent-real-',
    nodeName,
    api: false,
    staticPods: true,
    configure: async ({ base }) => {
      const file = path.join(base, 'kubelet.kubeconfig');
      await fsp.writeFile(file, YAML.stringify(kubeconfig), { mode: 0o600 });
      // The apiserver reaches the kubelet API on the node's InternalIP with its kubelet client cert (cluster CA).
      return { kubeconfig: file, nodeIp: '127.0.0.1', clientCaFile: cp!.caPath, leaseRenewSeconds: 1, nodeStatusReportSeconds: 5, evictionIntervalMs: 1000 };
    },
  });
}, { timeout: 240_000 });

after(async () => {
  await h?.close();
  await relay?.close();
  await cp?.stop();
});

async function getJson(args: string[]): Promise<any> {
  return JSON.parse(await cp!.kubectl([...args, '-o', 'json']));
}

async function getOptional(args: string[]): Promise<any | undefined> {
  try {
    return await getJson(args);
  } catch (err) {
    if (/NotFound|not found/.test(String(err))) return undefined;
    throw err;
  }
}

async function leaseRenewTime(): Promise<string> {
  return (await getJson(['-n', 'kube-node-lease', 'get', 'lease', nodeName])).spec.renewTime;
}

async function runningContainers(podUid: string): Promise<string[]> {
  const { containers } = await h.daemon!.client.runtime('ListContainers', {
    filter: { label_selector: { 'io.kubernetes.pod.uid': podUid }, state: { state: 'CONTAINER_RUNNING' } },
  });
  return containers.map((c: any) => c.id);
}

function podManifest(name: string, script: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS },
    spec: {
      terminationGracePeriodSeconds: 5,
      containers: [{ name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', script] }],
    },
  });
}

async function waitRunning(name: string, timeoutMs = 90_000): Promise<any> {
  let last: any;
  return waitFor(`pod ${name} Running and Ready`, async () => {
    last = await getOptional(['-n', NS, 'get', 'pod', name]);
    const ready = last?.status?.conditions?.find((c: any) => c.type === 'Ready')?.status === 'True';
    return last?.status?.phase === 'Running' && ready ? last : undefined;
  }, timeoutMs).catch((err) => {
    throw new Error(`${err.message}\nlast status: ${JSON.stringify(last?.status)}`);
  });
}

test('the node registers with its client certificate and reports Ready, its addresses and kubelet port', async () => {
  const node = await waitFor('node Ready', async () => {
    const n = await getOptional(['get', 'node', nodeName]);
    return n?.status?.conditions?.find((c: any) => c.type === 'Ready')?.status === 'True' ? n : undefined;
  }, 30_000);
  assert.equal(node.metadata.labels['kubernetes.io/hostname'], nodeName);
  assert.equal(node.metadata.labels['kubernetes.io/os'], 'linux');
  assert.deepEqual(node.status.addresses.find((a: any) => a.type === 'InternalIP'), { type: 'InternalIP', address: '127.0.0.1' });
  assert.equal(node.status.daemonEndpoints.kubeletEndpoint.Port, h.agent.kubeletApi!.port);
  assert.match(node.status.nodeInfo.containerRuntimeVersion, /^nodelet:\/\//);
  // The agent's credentials are the node's own (what the node authorizer and NodeRestriction judge by).
  const whoami = JSON.parse(await cp!.kubectl(['auth', 'whoami', '-o', 'json'], { kubeconfig: h.config.kubeconfig }));
  assert.equal(whoami.status?.userInfo?.username, `system:node:${nodeName}`);
});

test('the Lease is owned by the Node and renewed; renewTime carries six fractional digits', async () => {
  const lease = await waitFor('lease', () => getOptional(['-n', 'kube-node-lease', 'get', 'lease', nodeName]), 30_000);
  assert.equal(lease.spec.holderIdentity, nodeName);
  assert.equal(lease.metadata.ownerReferences?.[0]?.kind, 'Node');
  assert.equal(lease.metadata.ownerReferences?.[0]?.name, nodeName);
  const first = lease.spec.renewTime;
  assert.match(first, MICRO_TIME);
  const later = await waitFor('renewTime advances', async () => {
    const t = await leaseRenewTime();
    return t > first ? t : undefined;
  }, 15_000);
  assert.match(later, MICRO_TIME);
});

test('a scheduled pod runs with its service-account token volume and service variables, reaches Running; kubectl logs and exec reach it', async () => {
  await cp!.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web-front', namespace: NS }, spec: { selector: { app: 'none' }, ports: [{ name: 'http', port: 80 }] } }),
  });
  await cp!.kubectl(['apply', '-f', '-'], { input: podManifest('hello', 'echo hello from $(hostname); cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; trap "exit 0" TERM; while true; do sleep 0.2; done') });
  const pod = await waitRunning('hello');
  assert.equal(pod.spec.nodeName, nodeName);
  assert.ok(pod.status.podIP, 'pod IP reported');
  assert.equal(pod.status.hostIP, '127.0.0.1');
  assert.match(pod.status.startTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const main = pod.status.containerStatuses.find((c: any) => c.name === 'main');
  assert.ok(main.state.running, JSON.stringify(main.state));
  assert.match(main.containerID, /^nodelet:\/\//);
  // The admission-added projected volume needs a TokenRequest and kube-root-ca.crt, both through the node authorizer.
  const logs = await waitFor('container output', async () => {
    const out = await cp!.kubectl(['-n', NS, 'logs', 'hello']);
    return out.includes(NS) ? out : undefined;
  }, 20_000);
  assert.match(logs, /hello from hello/);
  // kubectl exec: the apiserver asks the kubelet API with its own parameter names (output=1, error=1).
  assert.equal((await cp!.kubectl(['-n', NS, 'exec', 'hello', '--', 'cat', '/etc/hostname'])).trim(), 'hello');
  // The Services' variables: in-cluster clients find the apiserver by KUBERNETES_SERVICE_HOST/PORT.
  const env = await cp!.kubectl(['-n', NS, 'exec', 'hello', '--', 'env']);
  const kubernetesIp = (await getJson(['-n', 'default', 'get', 'service', 'kubernetes'])).spec.clusterIP;
  const webIp = (await getJson(['-n', NS, 'get', 'service', 'web-front'])).spec.clusterIP;
  assert.match(env, new RegExp(`^KUBERNETES_SERVICE_HOST=${kubernetesIp.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(env, /^KUBERNETES_SERVICE_PORT=443$/m);
  assert.match(env, new RegExp(`^WEB_FRONT_PORT_80_TCP=tcp://${webIp.replace(/\./g, '\\.')}:80$`, 'm'));
  assert.match(env, /^WEB_FRONT_SERVICE_PORT_HTTP=80$/m);
  const events = await getJson(['-n', NS, 'get', 'events', '--field-selector', `involvedObject.uid=${pod.metadata.uid}`]);
  const reasons = events.items.map((e: any) => e.reason);
  for (const reason of ['Created', 'Started']) assert.ok(reasons.includes(reason), `event ${reason} in ${reasons.join(',')}`);
  const ours = events.items.filter((e: any) => e.reportingComponent === 'kubelet');
  assert.ok(ours.length >= 2 && ours.every((e: any) => e.source?.host === nodeName && e.reportingInstance === nodeName), JSON.stringify(ours[0]));
});

test('a static pod runs and its mirror pod, owned by the Node, shows Running', async () => {
  await fsp.writeFile(
    path.join(h.manifests!, 'static-web.yaml'),
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'static-web', namespace: 'kube-system', labels: { app: 'static-web' } },
      spec: { containers: [{ name: 'web', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.2; done'] }] },
    }),
  );
  const mirrorName = `static-web-${nodeName}`;
  let last: any;
  const mirror = await waitFor('mirror pod Running', async () => {
    last = await getOptional(['-n', 'kube-system', 'get', 'pod', mirrorName]);
    return last?.status?.phase === 'Running' ? last : undefined;
  }, 60_000).catch((err) => {
    throw new Error(`${err.message}\nlast: ${JSON.stringify(last)}`);
  });
  assert.ok(mirror.metadata.annotations['kubernetes.io/config.mirror']);
  assert.deepEqual(
    mirror.metadata.ownerReferences.map((o: any) => [o.kind, o.name, o.controller]),
    [['Node', nodeName, true]],
  );
  assert.equal(mirror.spec.nodeName, nodeName);
  // Removing the manifest stops the pod and deletes its mirror.
  await fsp.rm(path.join(h.manifests!, 'static-web.yaml'));
  await waitFor('mirror pod deleted', async () => (await getOptional(['-n', 'kube-system', 'get', 'pod', mirrorName])) === undefined, 60_000);
});

/** GET on the agent's kubelet API as the apiserver calls it (its kubelet client certificate); the apiserver's node
 * proxy refuses loopback addresses, so the test goes direct. */
async function kubeletGet(pathname: string): Promise<string> {
  const cert = cp!.kubeletClientCert;
  return new Promise((resolve, reject) => {
    const req = https.get(`https://127.0.0.1:${h.agent.kubeletApi!.port}${pathname}`, {
      cert: readFileSync(cert.certPath), key: readFileSync(cert.keyPath), rejectUnauthorized: false, timeout: 10_000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${pathname}: HTTP ${res.statusCode} ${body}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

test('the kubelet API serves /stats/summary and /metrics/resource covering the running pod', async () => {
  await waitRunning('hello');
  const container = await waitFor('stats of hello/main', async () => {
    const summary = JSON.parse(await kubeletGet('/stats/summary'));
    assert.equal(summary.node.nodeName, nodeName);
    assert.ok(summary.node.memory.workingSetBytes > 0);
    const pod = summary.pods.find((p: any) => p.podRef.name === 'hello' && p.podRef.namespace === NS);
    const c = pod?.containers.find((x: any) => x.name === 'main');
    return c?.memory?.workingSetBytes > 0 && c.cpu?.usageCoreNanoSeconds !== undefined ? c : undefined;
  }, 30_000);
  assert.ok(container.cpu.usageCoreNanoSeconds >= 0);
  const metrics = await kubeletGet('/metrics/resource');
  const line = metrics.split('\n').find((l) => l.startsWith('container_memory_working_set_bytes{') && l.includes('container="main"') && l.includes('pod="hello"'));
  assert.match(line ?? '', /namespace="default".* \d+ \d+$/);
  assert.match(metrics, /^node_cpu_usage_seconds_total [\d.e+]+ \d+$/m);
});

test('kubectl debug: ephemeral containers run in the pod (one in its target\'s process namespace), report their status, and are never restarted', async () => {
  await cp!.kubectl(['apply', '-f', '-'], { input: podManifest('debugged', 'trap "exit 0" TERM; while true; do sleep 0.2; done') });
  await waitRunning('debugged');
  const debug = (name: string, extra: string[], command: string) =>
    cp!.kubectl(['-n', NS, 'debug', 'debugged', `--image=${h.busybox}`, '--image-pull-policy=IfNotPresent', '-c', name, ...extra, '--', 'sh', '-c', command]);
  await debug('debugger', ['--target=main'], 'ps; trap "exit 0" TERM; while true; do sleep 0.2; done');
  await debug('oneshot', [], 'exit 3');
  const statusOf = (pod: any, name: string) => pod?.status?.ephemeralContainerStatuses?.find((c: any) => c.name === name);
  const pod = await waitFor('both ephemeral containers reported', async () => {
    const p = await getOptional(['-n', NS, 'get', 'pod', 'debugged']);
    return statusOf(p, 'debugger')?.state?.running && statusOf(p, 'oneshot')?.state?.terminated ? p : undefined;
  }, 60_000);
  assert.equal(statusOf(pod, 'oneshot').state.terminated.exitCode, 3);
  assert.equal(statusOf(pod, 'debugger').ready, false);
  assert.match(statusOf(pod, 'debugger').containerID, /^nodelet:\/\//);
  // --target=main: the debugger sees the main container's processes.
  const logs = await waitFor('the debugger\'s ps output', async () => {
    const out = await cp!.kubectl(['-n', NS, 'logs', 'debugged', '-c', 'debugger']);
    return /while true/.test(out) ? out : undefined;
  }, 20_000);
  assert.match(logs, /sleep 0\.2|while true/);
  // The exited one stays exited; the pod stays Running and Ready.
  await new Promise((r) => setTimeout(r, 3000));
  const after = await getJson(['-n', NS, 'get', 'pod', 'debugged']);
  assert.equal(statusOf(after, 'oneshot').restartCount, 0);
  assert.ok(statusOf(after, 'oneshot').state.terminated);
  assert.equal(after.status.phase, 'Running');
  assert.equal(after.status.conditions.find((c: any) => c.type === 'Ready').status, 'True');
  const { containers } = await h.daemon!.client.runtime('ListContainers', {
    filter: { label_selector: { 'io.kubernetes.pod.uid': after.metadata.uid, 'io.kubernetes.container.name': 'oneshot' } },
  });
  assert.equal(containers.length, 1, 'one oneshot container, never recreated');
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'debugged', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
});

test('termination messages reach the API: the termination-log file, and the log tail with FallbackToLogsOnError', async () => {
  const c = (name: string, script: string, extra: object = {}) => ({ name, image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', script], ...extra });
  await cp!.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'last-words', namespace: NS },
      spec: {
        restartPolicy: 'Never',
        terminationGracePeriodSeconds: 1,
        containers: [
          c('file', 'echo -n "bye from file" > /dev/termination-log; exit 1'),
          c('logs', 'echo first; echo second; exit 2', { terminationMessagePolicy: 'FallbackToLogsOnError' }),
        ],
      },
    }),
  });
  const pod = await waitFor('last-words Failed', async () => {
    const p = await getOptional(['-n', NS, 'get', 'pod', 'last-words']);
    return p?.status?.phase === 'Failed' ? p : undefined;
  }, 60_000);
  const term = (name: string) => pod.status.containerStatuses.find((s: any) => s.name === name).state.terminated;
  assert.equal(term('file').message, 'bye from file');
  assert.equal(term('logs').message, 'first\nsecond\n');
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'last-words', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
});

test('fsGroup: a non-root container shares its volumes (emptyDir, the service-account token) through the group', async () => {
  await cp!.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'grouped', namespace: NS },
      spec: {
        terminationGracePeriodSeconds: 1,
        securityContext: { runAsUser: 1000, fsGroup: 4321, fsGroupChangePolicy: 'OnRootMismatch', seccompProfile: { type: 'RuntimeDefault' } },
        volumes: [{ name: 'scratch', emptyDir: {} }],
        containers: [{
          name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.2; done'],
          volumeMounts: [{ name: 'scratch', mountPath: '/scratch' }],
        }],
      },
    }),
  });
  await waitRunning('grouped');
  const exec = (cmd: string) => cp!.kubectl(['-n', NS, 'exec', 'grouped', '--', 'sh', '-c', cmd]);
  assert.match(await exec('id -G'), /\b4321\b/);
  assert.equal((await exec('stat -c "%g %a" /scratch')).trim(), '4321 2777');
  assert.equal((await exec('stat -L -c "%g %a" /var/run/secrets/kubernetes.io/serviceaccount/token')).trim(), '4321 640');
  assert.ok((await exec('cat /var/run/secrets/kubernetes.io/serviceaccount/token')).length > 100, 'uid 1000 reads the token through the group');
  assert.match(await exec('grep Seccomp: /proc/self/status'), /Seccomp:\s+2/);
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'grouped', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
});

test('a repeatedly failing probe is one Unhealthy event whose count grows', async () => {
  await cp!.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'unready', namespace: NS },
      spec: {
        terminationGracePeriodSeconds: 1,
        containers: [{
          name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.2; done'],
          readinessProbe: { exec: { command: ['sh', '-c', 'echo not yet; exit 1'] }, periodSeconds: 1 },
        }],
      },
    }),
  });
  const uid = (await waitFor('pod unready exists', () => getOptional(['-n', NS, 'get', 'pod', 'unready']), 30_000)).metadata.uid;
  const unhealthy = async () =>
    (await getJson(['-n', NS, 'get', 'events', '--field-selector', `involvedObject.uid=${uid},reason=Unhealthy`])).items;
  const [event] = await waitFor('Unhealthy count >= 3', async () => {
    const items = await unhealthy();
    return items.some((e: any) => e.count >= 3) ? items : undefined;
  }, 60_000);
  assert.equal((await unhealthy()).length, 1, 'one event, counted');
  assert.match(event.message, /Readiness probe failed: not yet/);
  assert.ok(Date.parse(event.lastTimestamp) > Date.parse(event.firstTimestamp));
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'unready', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
});

test('an apiserver outage is survived: the pod keeps running, the Lease is renewed again, new pods still run', async () => {
  const pod = await waitRunning('hello');
  const before = await runningContainers(pod.metadata.uid);
  assert.equal(before.length, 1);
  relay!.setDown(true);
  try {
    // Lease renewals (every second), status updates and the watch all fail while it is down.
    await waitFor('the agent retried during the outage', async () => relay!.refused >= 6, 30_000);
  } finally {
    relay!.setDown(false);
  }
  const afterOutage = new Date().toISOString();
  await waitFor('renewTime after the outage', async () => ((await leaseRenewTime()) > afterOutage ? true : undefined), 30_000);
  assert.deepEqual(await runningContainers(pod.metadata.uid), before, 'the container was left alone');
  await cp!.kubectl(['apply', '-f', '-'], { input: podManifest('after-outage', 'trap "exit 0" TERM; while true; do sleep 0.2; done') });
  await waitRunning('after-outage');
});

test('deleting pods completes: they leave the API and the runtime', async () => {
  const uids: string[] = [];
  for (const name of ['hello', 'after-outage']) {
    const pod = await getOptional(['-n', NS, 'get', 'pod', name]);
    if (pod) uids.push(pod.metadata.uid);
  }
  assert.equal(uids.length, 2);
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'hello', 'after-outage', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
  assert.equal(await getOptional(['-n', NS, 'get', 'pod', 'hello']), undefined);
  for (const uid of uids) {
    await waitFor(`sandboxes of ${uid} removed`, async () => {
      const { items } = await h.daemon!.client.runtime('ListPodSandbox', { filter: { label_selector: { 'io.kubernetes.pod.uid': uid } } });
      return items.length === 0;
    }, 20_000);
  }
});

test('a deleted pod gets a terminal status before it goes: Failed, its container terminated', async () => {
  // A finalizer holds the pod in the API after the agent's final DELETE, so its last status can be read.
  await cp!.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'held', namespace: NS, finalizers: ['nodelet.test/hold'] },
      spec: { terminationGracePeriodSeconds: 1, containers: [{ name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'] }] },
    }),
  });
  await waitRunning('held');
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'held', '--wait=false']);
  try {
    const pod = await waitFor('held terminal', async () => {
      const p = await getOptional(['-n', NS, 'get', 'pod', 'held']);
      return p?.status?.phase === 'Failed' ? p : undefined;
    }, 30_000);
    const main = pod.status.containerStatuses.find((c: any) => c.name === 'main');
    assert.ok(main.state.terminated, JSON.stringify(main.state));
    assert.equal(main.ready, false);
    assert.equal(pod.status.conditions.find((c: any) => c.type === 'Ready').status, 'False');
    // The agent's DELETE with grace 0 went through: only the finalizer keeps it.
    await waitFor('deletionGracePeriodSeconds 0', async () => (await getJson(['-n', NS, 'get', 'pod', 'held'])).metadata.deletionGracePeriodSeconds === 0, 30_000);
  } finally {
    await cp!.kubectl(['-n', NS, 'patch', 'pod', 'held', '--type=json', '-p', '[{"op":"remove","path":"/metadata/finalizers"}]']).catch(() => undefined);
  }
  await waitFor('held gone', async () => (await getOptional(['-n', NS, 'get', 'pod', 'held'])) === undefined, 30_000);
});

test('TLS bootstrap: a bootstrap token gets a node client certificate through an auto-approved CSR', async () => {
  const token = await cp!.bootstrapToken();
  const dir = await fsp.mkdtemp(path.join(h.base, 'bootstrap-'));
  const bootstrapKubeconfig = path.join(dir, 'bootstrap.kubeconfig');
  await fsp.writeFile(bootstrapKubeconfig, YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'c', cluster: { server: cp!.server, 'certificate-authority': cp!.caPath } }],
    users: [{ name: 'bootstrap', user: { token } }],
    contexts: [{ name: 'x', context: { cluster: 'c', user: 'bootstrap' } }],
    'current-context': 'x',
  }), { mode: 0o600 });
  const kubeconfig = path.join(dir, 'node.kubeconfig');
  const name = `${nodeName}-boot`;
  const opts = { bootstrapKubeconfig, kubeconfig, certDir: path.join(dir, 'pki'), nodeName: name, log: logger({ component: 'test' }), timeoutMs: 60_000, pollMs: 250 };
  await bootstrapClientCertificate(opts);
  const whoami = JSON.parse(await cp!.kubectl(['auth', 'whoami', '-o', 'json'], { kubeconfig }));
  assert.equal(whoami.status.userInfo.username, `system:node:${name}`);
  assert.ok(whoami.status.userInfo.groups.includes('system:nodes'), whoami.status.userInfo.groups.join(','));
  // The controller-manager approved and signed it; nothing in the test did.
  const ours = (await getJson(['get', 'csr'])).items.filter((c: any) => c.spec.username === `system:bootstrap:${token.split('.')[0]}`);
  assert.equal(ours.length, 1);
  assert.equal(ours[0].spec.signerName, KUBELET_CLIENT_SIGNER);
  assert.ok(ours[0].status.conditions.some((c: any) => c.type === 'Approved' && c.status === 'True'));
  // With a valid certificate in place nothing more is asked for.
  await bootstrapClientCertificate(opts);
  const after = (await getJson(['get', 'csr'])).items.filter((c: any) => c.spec.username === `system:bootstrap:${token.split('.')[0]}`);
  assert.equal(after.length, 1);
});

test('a deleted Node registers again, and its Lease follows the new Node', async () => {
  const before = await getJson(['get', 'node', nodeName]);
  await cp!.kubectl(['delete', 'node', nodeName, '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
  const again = await waitFor('node registered again', async () => {
    const n = await getOptional(['get', 'node', nodeName]);
    return n && n.metadata.uid !== before.metadata.uid ? n : undefined;
  }, 60_000);
  assert.equal(again.metadata.labels['kubernetes.io/hostname'], nodeName);
  await waitFor('node Ready again', async () => {
    const n = await getOptional(['get', 'node', nodeName]);
    return n?.status?.conditions?.find((c: any) => c.type === 'Ready')?.status === 'True';
  }, 30_000);
  // The old Lease went with the old Node (garbage collector); a new one names the new Node and is renewed.
  const lease = await waitFor('lease owned by the new node', async () => {
    const l = await getOptional(['-n', 'kube-node-lease', 'get', 'lease', nodeName]);
    return l?.metadata?.ownerReferences?.[0]?.uid === again.metadata.uid ? l : undefined;
  }, 90_000);
  await waitFor('renewTime advances', async () => ((await leaseRenewTime()) > lease.spec.renewTime ? true : undefined), 15_000);
});

test('node pressure: node.status.images is accepted; a crossed threshold sets MemoryPressure and evicts a pod (Failed, Evicted, DisruptionTarget), never the static pod', async () => {
  const node = await waitFor('node.status.images', async () => {
    const n = await getJson(['get', 'node', nodeName]);
    return n.status.images?.length ? n : undefined;
  }, 60_000);
  assert.ok(node.status.images.some((i: any) => i.names.some((n: string) => n.includes('nodelet-test/busybox')) && i.sizeBytes > 0), JSON.stringify(node.status.images));
  await cp!.kubectl(['apply', '-f', '-'], { input: podManifest('evictee', 'trap "exit 0" TERM; while true; do sleep 0.2; done') });
  await waitRunning('evictee');
  h.agent.config.evictionHard = parseEvictionHard('memory.available<1000Ti');
  try {
    const pod = await waitFor('evictee Evicted', async () => {
      const p = await getOptional(['-n', NS, 'get', 'pod', 'evictee']);
      return p?.status?.phase === 'Failed' && p.status.reason === 'Evicted' ? p : undefined;
    }, 60_000);
    assert.match(pod.status.message, /The node was low on resource: memory/);
    const target = pod.status.conditions.find((c: any) => c.type === 'DisruptionTarget');
    assert.equal(target?.status, 'True');
    assert.equal(target?.reason, 'TerminationByKubelet');
    await waitFor('MemoryPressure True', async () => (await getJson(['get', 'node', nodeName])).status.conditions.find((c: any) => c.type === 'MemoryPressure')?.status === 'True', 30_000);
    // The static pod is critical: its mirror still shows it running.
    const mirrors = (await getJson(['-n', NS, 'get', 'pods'])).items.filter((p: any) => p.metadata.annotations?.['kubernetes.io/config.mirror']);
    for (const m of mirrors) assert.notEqual(m.status.reason, 'Evicted', m.metadata.name);
  } finally {
    h.agent.config.evictionHard = parseEvictionHard(DEFAULT_EVICTION_HARD);
  }
  await waitFor('MemoryPressure False', async () => (await getJson(['get', 'node', nodeName])).status.conditions.find((c: any) => c.type === 'MemoryPressure')?.status === 'False', 30_000);
  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'evictee', '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
});
