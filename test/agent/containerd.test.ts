// nodelet-agent driving containerd's CRI instead of nodelet-cri: the core scenarios (a pod runs and reports
// Running with its IP, init containers in order, deletion) and logs through the kubelet API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { POD_UID_LABEL } from '../../src/agent/pod-spec.js';
import { waitFor } from '../helpers/pods.js';
import type { Agent } from '../../src/agent/agent.js';
import type { TestContainerd } from '../helpers/containerd.js';
import type { TestApiServer } from './apiserver.js';
import { LOOP_SCRIPT, startAgentHarness, waitPod as waitPodIn, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

let containerd: TestContainerd;
let api: TestApiServer;
let agent: Agent;
let BUSYBOX: string;
const NS = 'on-containerd';
const nodeName = `ctrd-${randomBytes(3).toString('hex')}`;
const LOOP = ['sh', '-c', LOOP_SCRIPT];
const USER_TOKEN = randomBytes(12).toString('hex');

let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({
    name: 'nodelet-agent-containerd-',
    nodeName,
    runtime: 'containerd',
    configure: ({ api }) => {
      api!.users.set(USER_TOKEN, { username: 'viewer', groups: [] });
    },
  });
  ({ containerd, api, agent, busybox: BUSYBOX } = h as Required<AgentHarness>);
});

after(() => h?.close());

function podManifest(name: string, spec: Record<string, any>): any {
  return { metadata: { name, namespace: NS, labels: { app: name } }, spec: { nodeName, terminationGracePeriodSeconds: 5, ...spec } };
}

function container(name: string, command: string[]): any {
  return { name, image: BUSYBOX, imagePullPolicy: 'IfNotPresent', command };
}

function waitPod(name: string, what: string, pred: (pod: any) => boolean, timeoutMs = 60_000): Promise<any> {
  return waitPodIn(api, NS, name, what, pred, timeoutMs);
}

async function sandboxesOf(uid: string): Promise<any[]> {
  return (await containerd.client.runtime('ListPodSandbox', { filter: { label_selector: { [POD_UID_LABEL]: uid } } })).items;
}

async function containersOf(uid: string): Promise<any[]> {
  return (await containerd.client.runtime('ListContainers', { filter: { label_selector: { [POD_UID_LABEL]: uid } } })).containers;
}

test('the node reports containerd as its runtime', async () => {
  const node = await waitFor('node registered', async () => api.get('nodes', undefined, nodeName), 10_000);
  assert.match(node.status.nodeInfo.containerRuntimeVersion, /^containerd:\/\/1\./);
});

test('a pod runs on containerd and reports Running with its IP', async () => {
  api.create('pods', podManifest('web', { containers: [container('main', ['sh', '-c', 'echo started-on-containerd; trap "exit 0" TERM; while true; do sleep 0.2; done'])] }));
  const pod = await waitPod('web', 'Running', (p) => p.status.phase === 'Running' && p.status.podIP);
  const [a, b, c] = containerd.subnet.split('.');
  assert.ok(pod.status.podIP.startsWith(`${a}.${b}.${c}.`), `pod IP ${pod.status.podIP} in ${containerd.subnet}`);
  const cs = pod.status.containerStatuses[0];
  assert.equal(cs.ready, true);
  assert.match(cs.containerID, /^containerd:\/\/[0-9a-f]{64}$/);
  assert.ok(cs.imageID);
  const id = cs.containerID.replace('containerd://', '');
  const res = await containerd.client.runtime('ExecSync', { container_id: id, cmd: ['hostname'], timeout: 10 });
  assert.equal(res.stdout.toString().trim(), 'web');
  // containerd's log path goes through the kubelet API too.
  const logs = await waitFor('logs through the kubelet API', async () => {
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(
          `https://127.0.0.1:${agent.kubeletApi!.port}/containerLogs/${NS}/web/main`,
          { rejectUnauthorized: false, headers: { Authorization: `Bearer ${USER_TOKEN}` } },
          (r) => {
            let text = '';
            r.on('data', (chunk: Buffer) => (text += chunk.toString()));
            r.on('end', () => resolve(text));
          },
        )
        .on('error', reject);
    });
    return body.includes('started-on-containerd') ? body : undefined;
  }, 10_000);
  assert.equal(logs, 'started-on-containerd\n');
});

test('init containers run in order on containerd before the app container', async () => {
  api.create('pods', podManifest('init', {
    initContainers: [container('first', ['sh', '-c', 'sleep 0.5']), container('second', ['true'])],
    containers: [container('app', LOOP)],
  }));
  const pod = await waitPod('init', 'Running', (p) => p.status.phase === 'Running');
  assert.deepEqual(
    pod.status.initContainerStatuses.map((s: any) => [s.name, s.state.terminated?.reason, s.state.terminated?.exitCode]),
    [['first', 'Completed', 0], ['second', 'Completed', 0]],
  );
  const byName: Record<string, any> = {};
  for (const c of await containersOf(pod.metadata.uid)) {
    byName[c.metadata.name] = (await containerd.client.runtime('ContainerStatus', { container_id: c.id })).status;
  }
  assert.ok(Number(byName.first.finished_at) <= Number(byName.second.started_at), 'second started after first finished');
  assert.ok(Number(byName.second.finished_at) <= Number(byName.app.started_at), 'app started after second finished');
});

test('deleting a pod on containerd stops it and removes it from the API', async () => {
  const pod = await waitPod('web', 'Running', (p) => p.status.phase === 'Running');
  const uid = pod.metadata.uid;
  api.remove('pods', NS, 'web', 10);
  await waitFor('pod gone from the API', async () => !api.get('pods', NS, 'web'), 30_000);
  assert.deepEqual(await sandboxesOf(uid), []);
  assert.deepEqual(await containersOf(uid), []);
});

test('the kubelet API on containerd: /metrics/cadvisor from container stats (no CRI metrics RPCs in 1.6), /runningpods, /metrics', async () => {
  api.create('pods', podManifest('measured', { containers: [container('main', LOOP)] }));
  await waitPod('measured', 'Running', (p) => p.status.phase === 'Running');
  const get = (p: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      https
        .get(`https://127.0.0.1:${agent.kubeletApi!.port}${p}`, { rejectUnauthorized: false, headers: { Authorization: `Bearer ${USER_TOKEN}` } }, (r) => {
          let text = '';
          r.on('data', (chunk: Buffer) => (text += chunk.toString()));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body: text }));
        })
        .on('error', reject);
    });
  const line = await waitFor('a working set series for measured/main', async () => {
    const res = await get('/metrics/cadvisor');
    assert.equal(res.status, 200, res.body);
    return res.body.split('\n').find((l) => l.startsWith('container_memory_working_set_bytes{') && l.includes('pod="measured"') && l.includes('container="main"'));
  }, 20_000);
  assert.match(line, new RegExp(`^container_memory_working_set_bytes\\{container="main",id="[0-9a-f]{64}",image="[^"]*busybox[^"]*",name="[0-9a-f]{64}",namespace="${NS}",pod="measured"\\} \\d+`));
  const running = JSON.parse((await get('/runningpods/')).body);
  assert.deepEqual(running.items.find((p: any) => p.metadata.name === 'measured')?.spec.containers.map((c: any) => c.name), ['main']);
  const metrics = (await get('/metrics')).body;
  assert.match(metrics, /^kubelet_runtime_operations_total\{operation_type="run_podsandbox"\} [1-9]/m);
});
