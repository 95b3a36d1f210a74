// computePodActions with init containers, sidecars (restartPolicy Always init containers) and app containers: a table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { computePodActions, terminationOrder } from '../../src/agent/pod-actions.js';
import { computePodStatus, type ObservedContainer } from '../../src/agent/pod-status.js';

const c = (name: string, extra: Partial<V1Container> & { restartPolicy?: string } = {}): V1Container => ({ name, image: 'i', ...extra }) as V1Container;
const sidecar = (name: string, extra: Partial<V1Container> = {}) => c(name, { restartPolicy: 'Always', ...extra });
const pod = (initContainers: V1Container[], containers: V1Container[], restartPolicy = 'Always'): V1Pod => ({
  metadata: { name: 'p', namespace: 'n', uid: 'u' },
  spec: { initContainers, containers, restartPolicy },
});

type St = 'run' | 'created' | number; // a number: exited with that code
function observed(states: Record<string, St>): Map<string, ObservedContainer[]> {
  const m = new Map<string, ObservedContainer[]>();
  for (const [name, st] of Object.entries(states)) {
    m.set(name, [{
      id: `id-${name}`, sandboxId: 's', name, attempt: 0, createdAt: 1, startedAt: 1, finishedAt: typeof st === 'number' ? 2 : 0,
      state: st === 'run' ? 'CONTAINER_RUNNING' : st === 'created' ? 'CONTAINER_CREATED' : 'CONTAINER_EXITED',
      exitCode: typeof st === 'number' ? st : 0, reason: '', message: '', imageRef: '',
    }]);
  }
  return m;
}

const READY = { probed: () => ({ ready: true, started: true }) };
const NOT_STARTED = { probed: () => ({ ready: false, started: false }) };
const STARTED_NOT_READY = { probed: () => ({ ready: false, started: true }) };

const probeSpec = { exec: { command: ['true'] } };
const withSidecars = (policy = 'Always', sc: Partial<V1Container> = {}) => pod([c('setup'), sidecar('proxy', sc), c('migrate'), sidecar('logs')], [c('app'), c('web')], policy);

test('computePodActions: start order, restarts, sidecar completion', () => {
  const cases: { what: string; pod: V1Pod; states: Record<string, St>; ctx?: typeof READY; start: string[]; restart?: string[]; kill?: string[]; initialized: boolean }[] = [
    { what: 'nothing yet: the first init container', pod: withSidecars(), states: {}, start: ['setup'], initialized: false },
    { what: 'init running: wait', pod: withSidecars(), states: { setup: 'run' }, start: [], initialized: false },
    { what: 'init done: the sidecar', pod: withSidecars(), states: { setup: 0 }, start: ['proxy'], initialized: false },
    { what: 'sidecar running and started: the next init container', pod: withSidecars(), states: { setup: 0, proxy: 'run' }, start: ['migrate'], initialized: false },
    { what: 'sidecar not started (startup probe): wait', pod: withSidecars('Always', { startupProbe: probeSpec }), states: { setup: 0, proxy: 'run' }, ctx: NOT_STARTED, start: [], initialized: false },
    { what: 'sidecar started but not ready (readiness probe): wait', pod: withSidecars('Always', { readinessProbe: probeSpec }), states: { setup: 0, proxy: 'run' }, ctx: STARTED_NOT_READY, start: [], initialized: false },
    { what: 'sidecar without readiness probe: readiness does not hold it', pod: withSidecars(), states: { setup: 0, proxy: 'run' }, ctx: STARTED_NOT_READY, start: ['migrate'], initialized: false },
    { what: 'sidecar exited during init: restarted before anything else', pod: withSidecars('Never'), states: { setup: 0, proxy: 1 }, start: [], restart: ['proxy'], initialized: false },
    { what: 'all init done, sidecars up: the app containers', pod: withSidecars(), states: { setup: 0, proxy: 'run', migrate: 0, logs: 'run' }, start: ['app', 'web'], initialized: true },
    { what: 'running pod: a crashed sidecar restarts, apps untouched', pod: withSidecars('Never'), states: { setup: 0, proxy: 137, migrate: 0, logs: 'run', app: 'run', web: 'run' }, start: [], restart: ['proxy'], initialized: true },
    { what: 'running pod: a sidecar failing its startup probe does not hold the apps', pod: withSidecars('Always', { startupProbe: probeSpec }), states: { setup: 0, proxy: 'run', migrate: 0, logs: 'run', app: 'run', web: 'run' }, ctx: NOT_STARTED, start: [], initialized: true },
    { what: 'Never: apps done, sidecars stopped last-first', pod: withSidecars('Never'), states: { setup: 0, proxy: 'run', migrate: 0, logs: 'run', app: 0, web: 1 }, start: [], kill: ['logs', 'proxy'], initialized: true },
    { what: 'OnFailure: an app failed, restarted; sidecars kept', pod: withSidecars('OnFailure'), states: { setup: 0, proxy: 'run', migrate: 0, logs: 'run', app: 0, web: 1 }, start: [], restart: ['web'], initialized: true },
    { what: 'OnFailure: apps succeeded, sidecars stopped and not restarted', pod: withSidecars('OnFailure'), states: { setup: 0, proxy: 143, migrate: 0, logs: 'run', app: 0, web: 0 }, start: [], kill: ['logs'], initialized: true },
    { what: 'Always: apps exited are restarted, sidecars kept', pod: withSidecars('Always'), states: { setup: 0, proxy: 'run', migrate: 0, logs: 'run', app: 0, web: 0 }, start: [], restart: ['app', 'web'], initialized: true },
    { what: 'failed init with Never: no more starts, sidecars stopped', pod: withSidecars('Never'), states: { setup: 0, proxy: 'run', migrate: 2 }, start: [], kill: ['proxy'], initialized: false },
    { what: 'failed init with Always: restarted', pod: withSidecars(), states: { setup: 0, proxy: 'run', migrate: 2 }, start: [], restart: ['migrate'], initialized: false },
    { what: 'no init containers', pod: pod([], [c('app')]), states: {}, start: ['app'], initialized: true },
  ];
  for (const t of cases) {
    const a = computePodActions(t.pod, observed(t.states), t.ctx ?? READY);
    assert.deepEqual(a.start.filter((s) => !s.previous).map((s) => s.spec.name), t.start, `${t.what}: starts`);
    assert.deepEqual(a.start.filter((s) => s.previous).map((s) => s.spec.name), t.restart ?? [], `${t.what}: restarts`);
    assert.deepEqual(a.killSidecars.map((k) => k.spec.name), t.kill ?? [], `${t.what}: sidecars stopped`);
    assert.equal(a.initialized, t.initialized, `${t.what}: initialized`);
  }
});

test('termination: apps first, then sidecars last-first', () => {
  const running = ['proxy', 'app', 'logs', 'web'].map((name) => ({ name }));
  assert.deepEqual(terminationOrder(withSidecars(), running).map((w) => w.map((c) => c.name)), [['app', 'web'], ['logs'], ['proxy']]);
});

test('status with sidecars: Initialized while they run, phase from the app containers only', () => {
  const ctx = { runtimeName: 'nodelet', hostIP: '10.0.0.1', now: new Date(0), waiting: new Map() };
  const toObserved = (states: Record<string, St>) => ({ sandbox: { id: 's', attempt: 0, ready: true, createdAt: 1, ip: '10.1.0.2', ips: [] }, sandboxes: [], containers: [...observed(states).values()].flat() });
  const p = withSidecars('Never');
  let st = computePodStatus(p, toObserved({ setup: 0, proxy: 'run', migrate: 0, logs: 'run', app: 'run', web: 'run' }), ctx);
  assert.equal(st.phase, 'Running');
  assert.equal(st.conditions!.find((x) => x.type === 'Initialized')!.status, 'True');
  assert.deepEqual(st.initContainerStatuses!.map((s) => s.ready), [true, true, true, true]);
  st = computePodStatus(p, toObserved({ setup: 0, proxy: 'run', migrate: 'run' }), ctx);
  assert.equal(st.phase, 'Pending');
  assert.equal(st.conditions!.find((x) => x.type === 'Initialized')!.status, 'False');
  st = computePodStatus(p, toObserved({ setup: 0, proxy: 'run', migrate: 0, logs: 'run', app: 0, web: 0 }), ctx);
  assert.equal(st.phase, 'Running', 'not done while its sidecars are being stopped');
  st = computePodStatus(p, toObserved({ setup: 0, proxy: 143, migrate: 0, logs: 143, app: 0, web: 0 }), ctx);
  assert.equal(st.phase, 'Succeeded', 'sidecars stopped by the kubelet do not fail the pod');
  st = computePodStatus(p, toObserved({ setup: 0, proxy: 0, migrate: 0, logs: 0, app: 0, web: 3 }), ctx);
  assert.equal(st.phase, 'Failed');
});

test('ephemeral containers start once, even before initialization, and are never restarted', () => {
  const withDebug = (p: V1Pod): V1Pod => ({ ...p, spec: { ...p.spec!, ephemeralContainers: [{ name: 'debug', image: 'i' }] } });
  const starts = (p: V1Pod, states: Record<string, St>) => computePodActions(p, observed(states), READY).start.map((a) => `${a.kind}:${a.spec.name}`);
  assert.deepEqual(starts(withDebug(pod([], [c('app')])), { app: 'run' }), ['ephemeral:debug'], 'added to a running pod: started');
  assert.deepEqual(starts(withDebug(pod([c('init')], [c('app')])), { init: 'run' }), ['ephemeral:debug'], 'while an init container runs');
  assert.deepEqual(starts(withDebug(pod([], [c('app')])), { app: 'run', debug: 'run' }), [], 'running: nothing to do');
  assert.deepEqual(starts(withDebug(pod([], [c('app')])), { app: 'run', debug: 1 }), [], 'exited: never restarted, whatever the policy');
  assert.ok(computePodActions(withDebug(pod([], [c('app')])), observed({ app: 'run', debug: 1 }), READY).settled.includes('debug'));
});

test('an ephemeral container has a status of its own, never ready, and does not change the pod phase', () => {
  const p: V1Pod = { ...pod([], [c('app')]), spec: { ...pod([], [c('app')]).spec!, ephemeralContainers: [{ name: 'debug', image: 'i' }] } };
  const obs = (states: Record<string, St>) => ({ sandbox: { id: 's', attempt: 0, ready: true, createdAt: 1, ip: '10.0.0.2', ips: [] }, sandboxes: [], containers: [...observed(states).values()].flat() });
  const ctx = { runtimeName: 'r', hostIP: '1.2.3.4', now: new Date(0), waiting: new Map() };
  const running = computePodStatus(p, obs({ app: 'run', debug: 'run' }), ctx);
  assert.equal(running.phase, 'Running');
  assert.equal(running.ephemeralContainerStatuses?.[0]?.name, 'debug');
  assert.ok(running.ephemeralContainerStatuses?.[0]?.state?.running);
  assert.equal(running.ephemeralContainerStatuses?.[0]?.ready, false);
  assert.equal(running.conditions?.find((x) => x.type === 'Ready')?.status, 'True', 'the debug container does not make the pod unready');
  const exited = computePodStatus(p, obs({ app: 'run', debug: 2 }), ctx);
  assert.equal(exited.phase, 'Running');
  assert.equal(exited.ephemeralContainerStatuses?.[0]?.state?.terminated?.exitCode, 2);
  assert.equal(computePodStatus(pod([], [c('app')]), obs({ app: 'run' }), ctx).ephemeralContainerStatuses, undefined);
});
