// In-place resize decisions and the status they produce: tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { actualResources, decideResize } from '../../src/agent/resize.js';
import { computePodStatus, type ObservedPod } from '../../src/agent/pod-status.js';

const big = { cpu: 2, memory: 8 * 2 ** 30 };
const c = (resources: V1Container['resources'], resizePolicy?: V1Container['resizePolicy']): V1Container => ({ name: 'main', image: 'i', resources, ...(resizePolicy ? { resizePolicy } : {}) });
const pod = (container: V1Container): V1Pod => ({ metadata: { name: 'p', namespace: 'n', uid: 'u' }, spec: { containers: [container] } });
const running = (container: V1Container, actual: Record<string, number> | null) => [{ spec: container, id: 'c1', actual }];
const OLD = { cpu_period: 100_000, cpu_shares: 102, cpu_quota: 20_000, memory_limit_in_bytes: 64 * 2 ** 20 };
const desired = c({ requests: { cpu: '150m', memory: '32Mi' }, limits: { cpu: '400m', memory: '96Mi' } });

test('decideResize: update in place, restart by policy, infeasible, nothing to do', () => {
  let d = decideResize(pod(desired), running(desired, OLD), 'Burstable', big);
  assert.equal(d.infeasible, undefined);
  assert.deepEqual(d.update.map((u) => [u.id, u.resources.cpu_quota, u.resources.cpu_shares, u.resources.memory_limit_in_bytes]), [['c1', 40_000, 153, 96 * 2 ** 20]]);
  assert.deepEqual(d.restart, []);

  const restartOnMemory = c(desired.resources, [{ resourceName: 'memory', restartPolicy: 'RestartContainer' }, { resourceName: 'cpu', restartPolicy: 'NotRequired' }]);
  d = decideResize(pod(restartOnMemory), running(restartOnMemory, OLD), 'Burstable', big);
  assert.deepEqual([d.update.length, d.restart.map((r) => r.id)], [0, ['c1']], 'memory changed and its policy is RestartContainer');
  d = decideResize(pod(restartOnMemory), running(restartOnMemory, { ...OLD, memory_limit_in_bytes: 96 * 2 ** 20 }), 'Burstable', big);
  assert.deepEqual([d.update.length, d.restart.length], [1, 0], 'only cpu changed: in place');

  d = decideResize(pod(desired), running(desired, OLD), 'Burstable', { cpu: 0.1, memory: big.memory });
  assert.match(d.infeasible ?? '', /^Node didn't have enough capacity: cpu, requested: 150, capacity: 100$/);
  assert.deepEqual([d.update.length, d.restart.length], [0, 0], 'an infeasible resize is not applied');

  const same = { cpu_period: 100_000, cpu_shares: 153, cpu_quota: 40_000, memory_limit_in_bytes: 96 * 2 ** 20, oom_score_adj: 999 };
  d = decideResize(pod(desired), running(desired, same), 'Burstable', big);
  assert.deepEqual([d.update.length, d.restart.length], [0, 0], 'actual = desired');
  d = decideResize(pod(desired), running(desired, null), 'Burstable', big);
  assert.deepEqual([d.update.length, d.restart.length], [0, 0], 'a runtime that reports no resources');
});

test('actual resources: the allocated ones where the runtime agrees, else what the runtime has', () => {
  const alloc = desired.resources!;
  assert.deepEqual(actualResources(alloc, { cpu_period: 100_000, cpu_shares: 153, cpu_quota: 40_000, memory_limit_in_bytes: 96 * 2 ** 20 }, desired, 'Burstable'), alloc);
  assert.deepEqual(actualResources(alloc, OLD, desired, 'Burstable'), { requests: { cpu: '100m', memory: '32Mi' }, limits: { cpu: '200m', memory: String(64 * 2 ** 20) } });
});

test('status: allocatedResources, resources, PodResizeInProgress while applying, PodResizePending when infeasible', () => {
  const observed = (linux: Record<string, number>): ObservedPod => ({
    sandbox: { id: 's', attempt: 0, ready: true, createdAt: 1, ip: '10.0.0.2', ips: [] },
    sandboxes: [],
    containers: [{ id: 'c1', sandboxId: 's', name: 'main', attempt: 0, state: 'CONTAINER_RUNNING', createdAt: 1, startedAt: 1, finishedAt: 0, exitCode: 0, reason: '', message: '', imageRef: '', resources: linux }],
  });
  const ctx = { runtimeName: 'nodelet', hostIP: '10.0.0.1', now: new Date(0), waiting: new Map(), allocated: () => desired.resources };
  const p = pod(desired);
  const types = (st: any) => st.conditions.map((x: any) => x.type).filter((t: string) => t.startsWith('PodResize'));
  let st = computePodStatus(p, observed(OLD), ctx);
  assert.deepEqual(types(st), ['PodResizeInProgress']);
  assert.deepEqual(st.containerStatuses![0].allocatedResources, { cpu: '150m', memory: '32Mi' });
  st = computePodStatus(p, observed({ cpu_period: 100_000, cpu_shares: 153, cpu_quota: 40_000, memory_limit_in_bytes: 96 * 2 ** 20 }), ctx);
  assert.deepEqual(types(st), []);
  assert.deepEqual(st.containerStatuses![0].resources, desired.resources);
  st = computePodStatus(p, observed(OLD), { ...ctx, allocated: () => ({ requests: { cpu: '100m', memory: '32Mi' }, limits: { cpu: '200m', memory: '64Mi' } }), resize: { infeasible: 'Node didn\'t have enough capacity: cpu' } });
  const pending = st.conditions!.find((x) => x.type === 'PodResizePending')!;
  assert.deepEqual([pending.status, pending.reason, types(st)], ['True', 'Infeasible', ['PodResizePending']]);
  assert.deepEqual(st.containerStatuses![0].allocatedResources, { cpu: '100m', memory: '32Mi' }, 'the refused resize is not allocated');
  st = computePodStatus(p, observed(OLD), { ...ctx, resize: { error: 'container main: below usage' } });
  const err = st.conditions!.find((x) => x.type === 'PodResizeInProgress')!;
  assert.deepEqual([err.reason, err.message], ['Error', 'container main: below usage']);
});
