// Standalone mode: nodelet-agent --pod-manifest-path runs static pods with no apiserver, following edits and removals.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { staticPodFromManifest } from '../../src/agent/static-pod-source.js';
import { waitFor } from '../helpers/pods.js';
import type { AgentConfig } from '../../src/agent/config.js';
import type { TestDaemon } from '../helpers/daemon.js';
import { startAgentHarness, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

let d: TestDaemon;
let config: AgentConfig;
let manifests: string;
let BUSYBOX: string;
const nodeName = `static-${randomBytes(3).toString('hex')}`;

let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({
    name: 'nodelet-agent-static-',
    nodeName,
    api: false,
    pullBusybox: false,
    staticPods: true,
    configure: ({ criSocket }) => ({ criEndpoint: criSocket }), // a bare socket path, no unix:// scheme
  });
  ({ daemon: d, config, manifests, busybox: BUSYBOX } = h as Required<AgentHarness>);
});

after(() => h?.close());

function manifestYaml(greeting: string): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: kube-system
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: ${BUSYBOX}
    command: ["sh", "-c", "echo $GREETING > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    env:
    - name: GREETING
      value: ${greeting}
`;
}

async function runningWeb(): Promise<{ sandbox: any; container: any }> {
  return waitFor('static pod running', async () => {
    const { items } = await d.client.runtime('ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } });
    const sandbox = items.find((s: any) => s.metadata.name === `web-${nodeName}`);
    if (!sandbox) return undefined;
    const { containers } = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: sandbox.id, state: { state: 'CONTAINER_RUNNING' } } });
    return containers[0] ? { sandbox, container: containers[0] } : undefined;
  }, 20_000);
}

async function exec(id: string, cmd: string[]): Promise<string> {
  const res = await d.client.runtime('ExecSync', { container_id: id, cmd, timeout: 10 });
  return res.stdout.toString();
}

test('manifests parse into static pods named after the node with a content hash uid', () => {
  const pod = staticPodFromManifest(manifestYaml('a'), 'web.yaml', 'n1');
  assert.equal(pod.metadata!.name, 'web-n1');
  assert.equal(pod.metadata!.namespace, 'kube-system');
  assert.equal(pod.spec!.nodeName, 'n1');
  assert.equal(pod.metadata!.annotations!['kubernetes.io/config.source'], 'file');
  assert.equal(staticPodFromManifest(manifestYaml('a'), 'web.yaml', 'n1').metadata!.uid, pod.metadata!.uid);
  assert.notEqual(staticPodFromManifest(manifestYaml('b'), 'web.yaml', 'n1').metadata!.uid, pod.metadata!.uid);
  const json = staticPodFromManifest(JSON.stringify({ metadata: { name: 'j' }, spec: { containers: [{ name: 'c', image: 'x' }] } }), 'j.json', 'n1');
  assert.equal(json.metadata!.namespace, 'default');
  assert.throws(() => staticPodFromManifest('kind: Service\nmetadata: {name: s}\n', 's.yaml', 'n1'), /kind Service/);
});

test('a static pod runs standalone, follows edits of its manifest and stops when it is removed', async () => {
  const file = path.join(manifests, 'web.yaml');
  await fsp.writeFile(file, manifestYaml('first'));
  const first = await runningWeb();
  assert.equal(first.sandbox.metadata.namespace, 'kube-system');
  assert.equal((await exec(first.container.id, ['wget', '-qO-', 'http://127.0.0.1:8080/index.html'])).trim(), 'first');
  const statusFile = path.join(config.root, 'pods', first.sandbox.metadata.uid, 'status.json');
  const status = await waitFor('local status Running', async () => {
    const s = JSON.parse(await fsp.readFile(statusFile, 'utf8'));
    return s.status.phase === 'Running' ? s : undefined;
  });
  assert.ok(status.status.podIP);

  await fsp.writeFile(file, manifestYaml('second'));
  const second = await waitFor('edited pod running', async () => {
    const r = await runningWeb();
    return r.sandbox.id !== first.sandbox.id ? r : undefined;
  }, 30_000);
  assert.equal((await exec(second.container.id, ['wget', '-qO-', 'http://127.0.0.1:8080/index.html'])).trim(), 'second');
  await waitFor('old sandbox removed', async () => {
    const { items } = await d.client.runtime('ListPodSandbox', {});
    return !items.some((s: any) => s.id === first.sandbox.id);
  }, 40_000);

  await fsp.rm(file);
  await waitFor('static pod removed', async () => {
    const { items } = await d.client.runtime('ListPodSandbox', {});
    return items.length === 0;
  }, 40_000);
});
