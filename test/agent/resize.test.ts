// In-place pod resize against the real kube-apiserver: `kubectl patch --subresource resize` → the running container's
// cgroup limits change (no restart), and status.containerStatuses[].resources/allocatedResources follow. (A resize
// beyond the node's allocatable is refused by the v1.36 apiserver itself; the agent's Infeasible path is table-tested.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { cgroupLayoutFromMounts } from '../../src/agent/pod-cgroups.js';
import { waitFor } from '../helpers/pods.js';
import { startControlPlane, type ControlPlane } from '../conformance/control-plane.js';
import { LOOP_SCRIPT, startAgentHarness, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

const nodeName = `resize-${randomBytes(3).toString('hex')}`;
const NS = 'default';
let cp: ControlPlane | undefined;
let h: AgentHarness;

before(async () => {
  cp = await startControlPlane({ controllers: false });
  const kubeconfig = await cp.nodeCredentials(nodeName);
  // No controller-manager here (quicker): the service account its controller would make.
  await cp.kubectl(['-n', NS, 'create', 'serviceaccount', 'default']);
  h = await startAgentHarness({
    name: 'nodelet-agent-resize-',
    nodeName,
    api: false,
    configure: () => ({ kubeconfig, nodeIp: '127.0.0.1', clientCaFile: cp!.caPath, leaseRenewSeconds: 1, nodeStatusReportSeconds: 5 }),
  });
}, { timeout: 240_000 });

after(async () => {
  await h?.close();
  await cp?.stop();
});

async function getPod(name: string): Promise<any> {
  return JSON.parse(await cp!.kubectl(['-n', NS, 'get', 'pod', name, '-o', 'json']));
}

async function waitPod(name: string, what: string, pred: (pod: any) => boolean, timeoutMs = 60_000): Promise<any> {
  let last: any;
  return waitFor(`${name}: ${what}`, async () => {
    last = await getPod(name).catch(() => undefined);
    return last && pred(last) ? last : undefined;
  }, timeoutMs).catch((err) => {
    throw new Error(`${err.message}\nlast status: ${JSON.stringify(last?.status, null, 1)}`);
  });
}

async function cgroupFile(controller: string, rel: string): Promise<string> {
  const layout = cgroupLayoutFromMounts(await fsp.readFile('/proc/self/mounts', 'utf8'));
  assert.equal(layout.version, 1, 'this host has cgroup v1 hierarchies (the v2 files are table-tested)');
  const dir = layout.version === 1 ? layout.hierarchies.find((x) => x.controllers.includes(controller))!.dir : '';
  return (await fsp.readFile(path.join(dir, rel), 'utf8')).trim();
}

const noResizeConditions = (p: any) => !p.status.conditions?.some((c: any) => c.type === 'PodResizePending' || c.type === 'PodResizeInProgress');

test('kubectl patch --subresource resize changes the running container\'s cgroup limits in place', async () => {
  const manifest = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'elastic', namespace: NS },
    spec: {
      nodeName, terminationGracePeriodSeconds: 2, automountServiceAccountToken: false,
      containers: [{
        name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', LOOP_SCRIPT],
        resources: { requests: { cpu: '100m', memory: '32Mi' }, limits: { cpu: '200m', memory: '64Mi' } },
      }],
    },
  };
  await cp!.kubectl(['apply', '-f', '-'], { input: JSON.stringify(manifest) });
  const pod = await waitPod('elastic', 'Running', (p) => p.status?.phase === 'Running');
  const uid = pod.metadata.uid;
  assert.equal(pod.status.qosClass, 'Burstable');
  const st = pod.status.containerStatuses[0];
  assert.deepEqual(st.allocatedResources, { cpu: '100m', memory: '32Mi' });
  assert.deepEqual(st.resources, { requests: { cpu: '100m', memory: '32Mi' }, limits: { cpu: '200m', memory: '64Mi' } });
  const containerId = st.containerID.replace(/^.*:\/\//, '');
  const podCg = path.join(h.config.cgroupRoot, 'kubepods', 'burstable', `pod${uid}`);
  assert.equal(await cgroupFile('cpu', path.join(podCg, containerId, 'cpu.cfs_quota_us')), '20000');

  await cp!.kubectl(['-n', NS, 'patch', 'pod', 'elastic', '--subresource', 'resize', '--patch',
    JSON.stringify({ spec: { containers: [{ name: 'main', resources: { requests: { cpu: '150m' }, limits: { cpu: '400m', memory: '96Mi' } } }] } })]);
  const resized = await waitPod('elastic', 'resized', (p) => p.status.containerStatuses?.[0]?.resources?.limits?.cpu === '400m' && noResizeConditions(p));
  const after = resized.status.containerStatuses[0];
  assert.deepEqual(after.resources, { requests: { cpu: '150m', memory: '32Mi' }, limits: { cpu: '400m', memory: '96Mi' } });
  assert.deepEqual(after.allocatedResources, { cpu: '150m', memory: '32Mi' });
  assert.equal(after.restartCount, 0, 'resized in place, not restarted');
  assert.equal(after.containerID, st.containerID);
  assert.equal(await cgroupFile('cpu', path.join(podCg, containerId, 'cpu.cfs_quota_us')), '40000');
  assert.equal(await cgroupFile('cpu', path.join(podCg, containerId, 'cpu.shares')), '153');
  assert.equal(await cgroupFile('memory', path.join(podCg, containerId, 'memory.limit_in_bytes')), String(96 * 2 ** 20));
  assert.equal(await cgroupFile('cpu', path.join(podCg, 'cpu.cfs_quota_us')), '40000', 'the pod cgroup follows');
  assert.equal(await cgroupFile('memory', path.join(podCg, 'memory.limit_in_bytes')), String(96 * 2 ** 20));

  await cp!.kubectl(['-n', NS, 'delete', 'pod', 'elastic', '--wait=true', '--timeout=60s']);
  await waitFor('pod cgroup removed', async () => !(await fsp.stat(path.join('/sys/fs/cgroup/cpu', podCg)).then(() => true, () => false)), 15_000);
});
