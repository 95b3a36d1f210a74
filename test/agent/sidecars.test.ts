// Sidecars (init containers with restartPolicy Always) with our test apiserver, a real nodelet-cri and real containers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { waitFor } from '../helpers/pods.js';
import type { TestApiServer } from './apiserver.js';
import { startAgentHarness, waitPod as waitPodIn, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

const NS = 'sidecars';
const nodeName = `sc-${randomBytes(3).toString('hex')}`;
let h: AgentHarness;
let api: TestApiServer;

before(async () => {
  h = await startAgentHarness({ name: 'nodelet-agent-sidecars-', nodeName, configure: () => ({ backoffInitialMs: 300 }) });
  api = h.api!;
});

after(() => h?.close());

const waitPod = (name: string, what: string, pred: (pod: any) => boolean, timeoutMs?: number) => waitPodIn(api, NS, name, what, pred, timeoutMs);

/** A container of busybox running `script` with /shared (emptyDir) and /host (a host dir the test reads). */
function box(name: string, script: string, extra: Record<string, any> = {}): any {
  return {
    name, image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', script],
    volumeMounts: [{ name: 'shared', mountPath: '/shared' }, { name: 'host', mountPath: '/host' }],
    ...extra,
  };
}

/** Appends the container's name to /host/order when it is told to stop, then exits. */
const serve = (name: string, before = '') => `trap 'echo ${name} >> /host/order; exit 0' TERM; ${before} while true; do sleep 0.1; done`;

async function podWithHostDir(name: string, spec: Record<string, any>): Promise<string> {
  const dir = path.join(h.base, `host-${name}`);
  await fsp.mkdir(dir);
  api.create('pods', {
    metadata: { name, namespace: NS },
    spec: {
      nodeName, terminationGracePeriodSeconds: 10, ...spec,
      volumes: [{ name: 'shared', emptyDir: {} }, { name: 'host', hostPath: { path: dir } }],
    },
  });
  return dir;
}

const lines = async (file: string) => (await fsp.readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);

test('sidecars start in order (ready before the next init), restart while the app runs, and do not hold the pod from Succeeded', async () => {
  const dir = await podWithHostDir('job', {
    restartPolicy: 'Never',
    initContainers: [
      box('setup', 'echo setup >> /host/started'),
      // Ready only a second after it started: the next init container must wait for that.
      box('proxy', serve('proxy', 'echo proxy >> /host/started; sleep 1; touch /shared/proxy-ready;'), {
        restartPolicy: 'Always',
        readinessProbe: { exec: { command: ['test', '-f', '/shared/proxy-ready'] }, periodSeconds: 1 },
      }),
      box('check', 'echo check >> /host/started; test -f /shared/proxy-ready'),
      // The first attempt crashes while the app runs; the second tells the app it is back.
      box('logs', `if [ ! -f /shared/logs-crashed ]; then touch /shared/logs-crashed; sleep 1; exit 1; fi; touch /shared/logs-back; ${serve('logs')}`, { restartPolicy: 'Always' }),
    ],
    containers: [box('app', 'until [ -f /shared/logs-back ]; do sleep 0.1; done; echo app >> /host/order')],
  });
  const pod = await waitPod('job', 'Succeeded', (p) => p.status?.phase === 'Succeeded', 60_000);
  assert.deepEqual(await lines(path.join(dir, 'started')), ['setup', 'proxy', 'check'], 'init order');
  const byName = Object.fromEntries(pod.status.initContainerStatuses.map((s: any) => [s.name, s]));
  assert.equal(byName.check.state.terminated?.exitCode, 0, 'the init container after the sidecar ran once it was ready');
  assert.ok(byName.logs.restartCount >= 1, `the crashed sidecar was restarted (restartCount ${byName.logs.restartCount})`);
  assert.equal(pod.status.containerStatuses[0].state.terminated?.exitCode, 0);
  // After the app container, the sidecars were stopped: the last one started first.
  assert.deepEqual(await lines(path.join(dir, 'order')), ['app', 'logs', 'proxy']);
  assert.equal(pod.status.conditions.find((c: any) => c.type === 'Ready')?.status, 'False');
  api.remove('pods', NS, 'job', 0);
  await waitFor('job gone', async () => !api.get('pods', NS, 'job'), 30_000);
});

test('a deleted pod stops its app containers first, then its sidecars, last started first', async () => {
  const dir = await podWithHostDir('svc', {
    initContainers: [box('proxy', serve('proxy'), { restartPolicy: 'Always' }), box('logs', serve('logs'), { restartPolicy: 'Always' })],
    containers: [box('app', serve('app'))],
  });
  const pod = await waitPod('svc', 'Running and Ready', (p) => p.status?.phase === 'Running' && p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'));
  assert.ok(pod.status.initContainerStatuses.every((s: any) => s.state.running && s.ready && s.started), JSON.stringify(pod.status.initContainerStatuses));
  assert.equal(pod.status.conditions.find((c: any) => c.type === 'Initialized')?.status, 'True');
  api.remove('pods', NS, 'svc', 10);
  await waitFor('svc gone', async () => !api.get('pods', NS, 'svc'), 30_000);
  assert.deepEqual(await lines(path.join(dir, 'order')), ['app', 'logs', 'proxy']);
});
