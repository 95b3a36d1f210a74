// The PLEG's relist diff (which pods changed between two relists), the event → pod mapping, and the
// crash-loop back-off a restarted agent derives from a container's restart count: tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { changedPods, eventPodUid, fingerprintPods, type RelistContainer, type RelistSandbox } from '../../src/agent/pleg.js';
import { derivedBackoffMs } from '../../src/agent/pod-worker.js';

const UID = 'io.kubernetes.pod.uid';
const sb = (id: string, uid: string, state = 'SANDBOX_READY'): RelistSandbox => ({ id, state, labels: { [UID]: uid } });
const ctr = (id: string, sandbox: string, uid: string | undefined, state = 'CONTAINER_RUNNING'): RelistContainer => ({
  id,
  pod_sandbox_id: sandbox,
  state,
  labels: uid ? { [UID]: uid } : {},
});

test('relist diff: which pods changed between two relists', () => {
  const base = { sandboxes: [sb('s1', 'a'), sb('s2', 'b')], containers: [ctr('c1', 's1', 'a'), ctr('c2', 's2', 'b')] };
  const cases: Array<{ name: string; sandboxes: RelistSandbox[]; containers: RelistContainer[]; changed: string[] }> = [
    { name: 'nothing changed', ...base, changed: [] },
    { name: 'order of the listing does not matter', sandboxes: [...base.sandboxes].reverse(), containers: [...base.containers].reverse(), changed: [] },
    { name: 'a container exited', sandboxes: base.sandboxes, containers: [ctr('c1', 's1', 'a', 'CONTAINER_EXITED'), base.containers[1]!], changed: ['a'] },
    { name: 'a container was added', sandboxes: base.sandboxes, containers: [...base.containers, ctr('c3', 's2', 'b', 'CONTAINER_CREATED')], changed: ['b'] },
    { name: 'a sandbox went NotReady', sandboxes: [sb('s1', 'a', 'SANDBOX_NOTREADY'), base.sandboxes[1]!], containers: base.containers, changed: ['a'] },
    { name: 'a pod disappeared', sandboxes: [base.sandboxes[0]!], containers: [base.containers[0]!], changed: ['b'] },
    { name: 'a new pod appeared', sandboxes: [...base.sandboxes, sb('s3', 'c')], containers: base.containers, changed: ['c'] },
    { name: 'a container without the uid label belongs to its sandbox\'s pod', sandboxes: base.sandboxes, containers: [ctr('c1', 's1', undefined), base.containers[1]!], changed: [] },
    { name: 'objects of no pod are ignored', sandboxes: [...base.sandboxes, { id: 'x', state: 'SANDBOX_READY' }], containers: [...base.containers, ctr('y', 'x', undefined)], changed: [] },
  ];
  const before = fingerprintPods(base.sandboxes, base.containers);
  for (const c of cases) {
    assert.deepEqual(changedPods(before, fingerprintPods(c.sandboxes, c.containers)).sort(), c.changed, c.name);
  }
  assert.deepEqual(changedPods(new Map(), before).sort(), ['a', 'b'], 'the first relist sees every pod');
});

test('a GetContainerEvents event names its pod by the sandbox labels, the metadata uid, or the container labels', () => {
  assert.equal(eventPodUid({ pod_sandbox_status: { labels: { [UID]: 'a' }, metadata: { uid: 'z' } } }), 'a');
  assert.equal(eventPodUid({ pod_sandbox_status: { labels: {}, metadata: { uid: 'b' } } }), 'b');
  assert.equal(eventPodUid({ pod_sandbox_status: null, containers_statuses: [{ labels: { [UID]: 'c' } }] }), 'c');
  assert.equal(eventPodUid({ pod_sandbox_status: null, containers_statuses: [] }), undefined);
});

test('crash-loop back-off derived from the restart count: 10 s, 20 s, 40 s … capped at 5 min', () => {
  const table: Array<[number, number]> = [
    [1, 10_000],
    [2, 20_000],
    [3, 40_000],
    [5, 160_000],
    [6, 300_000],
    [40, 300_000],
    [5000, 300_000],
  ];
  for (const [attempt, ms] of table) assert.equal(derivedBackoffMs(attempt, 10_000, 300_000), ms, `attempt ${attempt}`);
});
