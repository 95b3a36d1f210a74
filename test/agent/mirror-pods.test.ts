// Mirror pods: with an apiserver, every static pod shows in the API as a mirror pod owned by the Node,
// carrying the static pod's status, replaced when the manifest changes, recreated when deleted, and removed
// with the manifest — while the static pod itself runs from its file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { waitFor } from '../helpers/pods.js';
import type { TestDaemon } from '../helpers/daemon.js';
import type { TestApiServer } from './apiserver.js';
import { startAgentHarness, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

let d: TestDaemon;
let api: TestApiServer;
let manifests: string;
let BUSYBOX: string;
const nodeName = `mirror-${randomBytes(3).toString('hex')}`;
const NS = 'kube-system';
const MIRROR = `web-${nodeName}`;

let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({ name: 'nodelet-agent-mirror-', nodeName, staticPods: true });
  ({ daemon: d, api, manifests, busybox: BUSYBOX } = h as Required<AgentHarness>);
});

after(() => h?.close());

function manifestYaml(greeting: string): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: ${NS}
  labels:
    tier: control-plane
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: ${BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo $GREETING > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    env:
    - name: GREETING
      value: ${greeting}
`;
}

async function readySandboxes(): Promise<any[]> {
  const { items } = await d.client.runtime('ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } });
  return items.filter((s: any) => s.metadata.name === MIRROR);
}

function mirror(): any {
  return api.get('pods', NS, MIRROR);
}

test('a static pod gets a mirror pod owned by the Node, with the static pod\'s status', async () => {
  await fsp.writeFile(path.join(manifests, 'web.yaml'), manifestYaml('first'));
  const pod = await waitFor('mirror pod Running', async () => {
    const p = mirror();
    return p?.status?.phase === 'Running' && p.status.podIP ? p : undefined;
  }, 30_000);
  const node = api.get('nodes', undefined, nodeName);
  const annotations = pod.metadata.annotations;
  assert.equal(annotations['kubernetes.io/config.source'], 'file');
  assert.ok(annotations['kubernetes.io/config.mirror']);
  assert.equal(annotations['kubernetes.io/config.mirror'], annotations['kubernetes.io/config.hash']);
  assert.deepEqual(pod.metadata.ownerReferences, [{ apiVersion: 'v1', kind: 'Node', name: nodeName, uid: node.metadata.uid, controller: true }]);
  assert.equal(pod.metadata.labels.tier, 'control-plane');
  assert.equal(pod.spec.nodeName, nodeName);
  const [sandbox] = await readySandboxes();
  assert.ok(sandbox, 'the static pod runs');
  // The static pod is run once, from its file; the mirror is never run as a pod of its own.
  assert.notEqual(sandbox.metadata.uid, pod.metadata.uid);
  assert.equal((await readySandboxes()).length, 1);
  assert.equal(pod.status.containerStatuses[0].name, 'httpd');
  assert.equal(pod.status.containerStatuses[0].ready, true);
  const { items } = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: sandbox.id }).then((r: any) => ({ items: [r.status] }));
  assert.equal(pod.status.podIP, items[0].network.ip);
});

test('a deleted mirror pod is recreated while the static pod keeps running', async () => {
  const before = mirror();
  const [sandboxBefore] = await readySandboxes();
  api.remove('pods', NS, MIRROR, 30);
  const again = await waitFor('mirror pod recreated', async () => {
    const p = mirror();
    return p && p.metadata.uid !== before.metadata.uid && !p.metadata.deletionTimestamp && p.status?.phase === 'Running' ? p : undefined;
  }, 20_000);
  assert.equal(again.metadata.annotations['kubernetes.io/config.mirror'], before.metadata.annotations['kubernetes.io/config.mirror']);
  const sandboxes = await readySandboxes();
  assert.deepEqual(sandboxes.map((s) => s.id), [sandboxBefore.id], 'the static pod was not touched');
});

test('editing the manifest replaces the mirror; removing it deletes the mirror', async () => {
  const before = mirror();
  await fsp.writeFile(path.join(manifests, 'web.yaml'), manifestYaml('second'));
  const updated = await waitFor('mirror pod of the new manifest Running', async () => {
    const p = mirror();
    return p &&
      p.metadata.annotations['kubernetes.io/config.mirror'] !== before.metadata.annotations['kubernetes.io/config.mirror'] &&
      p.status?.phase === 'Running'
      ? p
      : undefined;
  }, 40_000);
  assert.notEqual(updated.metadata.uid, before.metadata.uid);
  assert.equal(updated.spec.containers[0].env[0].value, 'second');

  await fsp.rm(path.join(manifests, 'web.yaml'));
  await waitFor('mirror pod deleted', async () => !mirror(), 20_000);
  await waitFor('static pod stopped', async () => (await readySandboxes()).length === 0, 40_000);
  // It stays gone: nothing recreates a mirror without a manifest.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(mirror(), undefined);
});
