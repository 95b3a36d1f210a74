// The PLEG's relist diff, the event → pod mapping, the crash-loop back-off a restarted agent derives from a restart count,
// the termination message's log tail, fsGroup modes and the security context passed to CRI: tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { changedPods, eventPodUid, fingerprintPods, type RelistContainer, type RelistSandbox } from '../../src/agent/pleg.js';
import { derivedBackoffMs } from '../../src/agent/pod-worker.js';
import { lastLogLines } from '../../src/agent/termination-message.js';
import { fsGroupMode, rootMismatch } from '../../src/agent/volumes/fs-group.js';
import { appArmorProfile, containerConfigFor, seccompProfile, supplementalGroups } from '../../src/agent/pod-spec.js';

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

test('the log tail of a failed container: CRI log lines, partial lines joined, last 80 lines within 2 KiB', () => {
  const log = (n: number) => Array.from({ length: n }, (_, i) => `2026-01-01T00:00:00.000000000Z stdout F line ${i + 1}`).join('\n') + '\n';
  const out = lastLogLines(log(100));
  assert.equal(out.split('\n').filter(Boolean).length, 80);
  assert.ok(out.startsWith('line 21\n') && out.endsWith('line 100\n'));
  assert.equal(lastLogLines('2026-01-01T00:00:00Z stderr P abc\n2026-01-01T00:00:00Z stderr F def\n'), 'abcdef\n');
  assert.equal(lastLogLines('2026-01-01T00:00:00Z stdout F \n'), '\n', 'an empty line is a line');
  const long = lastLogLines(`2026-01-01T00:00:00Z stdout F ${'x'.repeat(5000)}\n`);
  assert.equal(Buffer.byteLength(long), 2048);
  assert.equal(lastLogLines('not a log line\n'), '');
});

test('fsGroup modes and the OnRootMismatch check, as the kubelet', () => {
  assert.equal(fsGroupMode(0o644, false, false).toString(8), '664');
  assert.equal(fsGroupMode(0o600, false, true).toString(8), '640');
  assert.equal(fsGroupMode(0o755, true, false).toString(8), '2775');
  assert.equal(fsGroupMode(0o777, true, false).toString(8), '2777');
  assert.equal(fsGroupMode(0o700, true, true).toString(8), '2750');
  const dir = (gid: number, mode: number) => ({ gid, mode, isDirectory: () => true });
  assert.equal(rootMismatch(dir(4321, 0o2775), 4321, false), false, 'matching root: skipped');
  assert.equal(rootMismatch(dir(0, 0o2775), 4321, false), true, 'other group');
  assert.equal(rootMismatch(dir(4321, 0o775), 4321, false), true, 'no setgid');
  assert.equal(rootMismatch(dir(4321, 0o2745), 4321, false), true, 'group cannot write');
  assert.equal(rootMismatch(dir(4321, 0o2750), 4321, true), false, 'read-only needs group r-x only');
  assert.equal(rootMismatch({ gid: 4321, mode: 0o2775, isDirectory: () => false }, 4321, false), true, 'not a directory');
});

test('pod security context to CRI: fsGroup joins the supplemental groups; seccomp, AppArmor', () => {
  const pod = (sc: object) => ({ metadata: { name: 'p', namespace: 'n', uid: 'u' }, spec: { containers: [], securityContext: sc } }) as any;
  assert.deepEqual(supplementalGroups(pod({ supplementalGroups: [5, 6], fsGroup: 7 })), [5, 6, 7]);
  assert.deepEqual(supplementalGroups(pod({ supplementalGroups: [7], fsGroup: 7 })), [7]);
  assert.deepEqual(supplementalGroups(pod({})), []);
  assert.deepEqual(seccompProfile(undefined, '/r/seccomp'), { profile_type: 'Unconfined' });
  assert.deepEqual(seccompProfile({ type: 'RuntimeDefault' }, '/r/seccomp'), { profile_type: 'RuntimeDefault' });
  assert.deepEqual(seccompProfile({ type: 'Localhost', localhostProfile: 'profiles/audit.json' }, '/r/seccomp'), { profile_type: 'Localhost', localhost_ref: '/r/seccomp/profiles/audit.json' });
  assert.deepEqual(appArmorProfile({ type: 'Localhost', localhostProfile: 'k8s-deny-write' }), { profile_type: 'Localhost', localhost_ref: 'k8s-deny-write' });
  assert.deepEqual(appArmorProfile({ type: 'Unconfined' }), { profile_type: 'Unconfined' });
  const unmasked = containerConfigFor(pod({}), { name: 'c', image: 'i', securityContext: { procMount: 'Unmasked' } }, 'app', 0, new Map());
  assert.deepEqual([unmasked.linux.security_context.masked_paths, unmasked.linux.security_context.readonly_paths], [[], []]);
  const masked = containerConfigFor(pod({}), { name: 'c', image: 'i' }, 'app', 0, new Map());
  assert.ok(masked.linux.security_context.masked_paths.includes('/proc/kcore'));
  assert.ok(masked.linux.security_context.readonly_paths.includes('/proc/sys'));
});
