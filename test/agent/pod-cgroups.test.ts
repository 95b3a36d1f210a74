// QoS cgroups and OOM kills with our test apiserver, a real nodelet-cri and real containers (cgroup v1 hierarchies here).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { POD_UID_LABEL } from '../../src/agent/pod-spec.js';
import { cgroupLayoutFromMounts } from '../../src/agent/pod-cgroups.js';
import { waitFor } from '../helpers/pods.js';
import type { TestDaemon } from '../helpers/daemon.js';
import type { TestApiServer } from './apiserver.js';
import { LOOP_SCRIPT, startAgentHarness, waitPod as waitPodIn, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

const NS = 'cgroups';
const nodeName = `cg-${randomBytes(3).toString('hex')}`;
let h: AgentHarness;
let d: TestDaemon;
let api: TestApiServer;
let cgroupRoot: string;
let hierarchy: (controller: string) => string;

before(async () => {
  h = await startAgentHarness({ name: 'nodelet-agent-cgroups-', nodeName, configure: () => ({ backoffInitialMs: 500 }) });
  ({ daemon: d, api } = h as Required<AgentHarness>);
  cgroupRoot = h.config.cgroupRoot;
  const layout = cgroupLayoutFromMounts(await fsp.readFile('/proc/self/mounts', 'utf8'));
  hierarchy = (controller) => {
    if (layout.version === 2) return layout.root;
    const found = layout.hierarchies.find((x) => x.controllers.includes(controller));
    assert.ok(found, `a ${controller} hierarchy`);
    return found.dir;
  };
});

after(() => h?.close());

function podManifest(name: string, spec: Record<string, any>): any {
  return { metadata: { name, namespace: NS }, spec: { nodeName, terminationGracePeriodSeconds: 2, ...spec } };
}

const waitPod = (name: string, what: string, pred: (pod: any) => boolean, timeoutMs?: number) => waitPodIn(api, NS, name, what, pred, timeoutMs);

async function containerIdOf(uid: string, name: string): Promise<string> {
  const { containers } = await d.client.runtime('ListContainers', { filter: { label_selector: { [POD_UID_LABEL]: uid }, state: { state: 'CONTAINER_RUNNING' } } });
  const c = containers.find((x: any) => x.metadata.name === name);
  assert.ok(c, `running container ${name}`);
  return c.id;
}

const read = async (file: string) => (await fsp.readFile(file, 'utf8')).trim();

test('a Burstable pod: status.qosClass, its container in kubepods/burstable/pod<uid> with its limits; the pod cgroup goes with the pod', async () => {
  if ((await fsp.stat('/sys/fs/cgroup/cgroup.controllers').catch(() => undefined)) !== undefined) return assert.fail('this test reads cgroup v1 files; the v2 paths are in test/unit/agent-qos.test.ts');
  api.create('pods', podManifest('burst', {
    containers: [{
      name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', LOOP_SCRIPT],
      resources: { requests: { cpu: '100m', memory: '16Mi' }, limits: { cpu: '300m', memory: '48Mi' } },
    }],
    overhead: { cpu: '50m', memory: '8Mi' },
  }));
  const pod = await waitPod('burst', 'running', (p) => p.status?.phase === 'Running');
  assert.equal(pod.status.qosClass, 'Burstable');
  const uid = pod.metadata.uid;
  const podPath = path.join(cgroupRoot, 'kubepods', 'burstable', `pod${uid}`);
  const id = await containerIdOf(uid, 'main');
  const cpu = path.join(hierarchy('cpu'), podPath);
  const mem = path.join(hierarchy('memory'), podPath);
  // The container's processes are in its cgroup under the pod's.
  assert.notEqual(await read(path.join(mem, id, 'cgroup.procs')), '', 'the container process is in the pod cgroup');
  assert.equal(await read(path.join(cpu, id, 'cpu.cfs_quota_us')), '30000');
  assert.equal(await read(path.join(cpu, id, 'cpu.shares')), '102');
  assert.equal(await read(path.join(mem, id, 'memory.limit_in_bytes')), String(48 * 2 ** 20));
  // The pod's cgroup: requests and limits plus the overhead.
  assert.equal(await read(path.join(cpu, 'cpu.shares')), '153');
  assert.equal(await read(path.join(cpu, 'cpu.cfs_quota_us')), '35000');
  assert.equal(await read(path.join(mem, 'memory.limit_in_bytes')), String(56 * 2 ** 20));
  const sandboxes = (await d.client.runtime('ListPodSandbox', { filter: { label_selector: { [POD_UID_LABEL]: uid } } })).items;
  assert.notEqual(await read(path.join(mem, sandboxes[0].id, 'cgroup.procs')), '', 'the sandbox is in the pod cgroup too');

  api.remove('pods', NS, 'burst', 2);
  await waitFor('pod gone', async () => !api.get('pods', NS, 'burst'), 30_000);
  await waitFor('pod cgroup removed', async () => !(await fsp.stat(cpu).then(() => true, () => false)) && !(await fsp.stat(mem).then(() => true, () => false)), 10_000);
});

test('a BestEffort pod runs under kubepods/besteffort; a Guaranteed one directly under kubepods', async () => {
  const loop = { image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', LOOP_SCRIPT] };
  api.create('pods', podManifest('be', { containers: [{ name: 'main', ...loop }] }));
  api.create('pods', podManifest('gu', { containers: [{ name: 'main', ...loop, resources: { limits: { cpu: '200m', memory: '32Mi' } } }] }));
  const be = await waitPod('be', 'running', (p) => p.status?.phase === 'Running');
  const gu = await waitPod('gu', 'running', (p) => p.status?.phase === 'Running');
  assert.equal(be.status.qosClass, 'BestEffort');
  assert.equal(gu.status.qosClass, 'Guaranteed');
  const beDir = path.join(hierarchy('cpu'), cgroupRoot, 'kubepods', 'besteffort', `pod${be.metadata.uid}`);
  assert.equal(await read(path.join(beDir, 'cpu.shares')), '2');
  const guDir = path.join(hierarchy('memory'), cgroupRoot, 'kubepods', `pod${gu.metadata.uid}`);
  assert.equal(await read(path.join(guDir, 'memory.limit_in_bytes')), String(32 * 2 ** 20));
  assert.notEqual(await read(path.join(guDir, await containerIdOf(gu.metadata.uid, 'main'), 'cgroup.procs')), '');
  api.remove('pods', NS, 'be', 2);
  api.remove('pods', NS, 'gu', 2);
  await waitFor('pods gone', async () => !api.get('pods', NS, 'be') && !api.get('pods', NS, 'gu'), 30_000);
});

test('a container over its memory limit is OOM-killed: lastState OOMKilled, exit 137, restarted', async () => {
  api.create('pods', podManifest('hog', {
    containers: [{
      name: 'hog', image: h.busybox, imagePullPolicy: 'IfNotPresent',
      // The shell holds 64 MiB of output in a variable: past the 24 MiB limit.
      command: ['sh', '-c', 'echo starting; a=$(head -c 67108864 /dev/zero | tr "\\000" x); echo survived; sleep 3600'],
      resources: { limits: { memory: '24Mi' }, requests: { memory: '24Mi' } },
    }],
  }));
  const pod = await waitPod('hog', 'restarted after an OOM kill', (p) => {
    const s = p.status?.containerStatuses?.[0];
    return s?.restartCount >= 1 && s.lastState?.terminated;
  }, 30_000);
  const s = pod.status.containerStatuses[0];
  assert.equal(s.lastState.terminated.reason, 'OOMKilled', JSON.stringify(s.lastState));
  assert.equal(s.lastState.terminated.exitCode, 137);
  assert.equal(pod.status.qosClass, 'Burstable');
  api.remove('pods', NS, 'hog', 2);
  await waitFor('hog gone', async () => !api.get('pods', NS, 'hog'), 30_000);
});
