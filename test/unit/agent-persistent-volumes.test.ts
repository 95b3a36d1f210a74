// PVC and ephemeral volumes, the pure parts: which claim, why it can't be used yet, how its PV mounts, and
// the name node.status.volumesInUse gives it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1PersistentVolume, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { claimNameOf, claimProblem, persistentMount, volumeInUseName } from '../../src/agent/volumes/persistent.js';

const pod: V1Pod = { metadata: { name: 'web', namespace: 'ns', uid: 'pod-uid' }, spec: { containers: [] } };
const claimVol = { name: 'data', persistentVolumeClaim: { claimName: 'c1' } };
const ephVol = { name: 'scratch', ephemeral: { volumeClaimTemplate: { spec: {} } } };
const bound = (extra: Partial<V1PersistentVolumeClaim['metadata']> = {}): V1PersistentVolumeClaim => ({
  metadata: { name: 'c1', namespace: 'ns', uid: 'pvc-uid', ...extra }, spec: { volumeName: 'pv1' }, status: { phase: 'Bound' },
});
const pvOf = (spec: V1PersistentVolume['spec']): V1PersistentVolume => ({ metadata: { name: 'pv1' }, spec: { claimRef: { uid: 'pvc-uid', namespace: 'ns', name: 'c1' }, ...spec } });

test('claim names: claimName, or <pod>-<volume> for ephemeral volumes', () => {
  assert.equal(claimNameOf(pod, claimVol), 'c1');
  assert.equal(claimNameOf(pod, ephVol), 'web-scratch');
  assert.equal(claimNameOf(pod, { name: 'x', emptyDir: {} }), undefined);
});

test('a claim is usable only once bound to a PV that points back at it (and, ephemeral, owned by the pod)', () => {
  const table: [string, Parameters<typeof claimProblem>, RegExp | undefined][] = [
    ['missing', [pod, claimVol, undefined], /PVC ns\/c1 not found$/],
    ['ephemeral missing', [pod, ephVol, undefined], /PVC ns\/web-scratch not found \(the ephemeral volume controller/],
    ['pending', [pod, claimVol, { ...bound(), status: { phase: 'Pending' } }], /PVC is not bound$/],
    ['being deleted', [pod, claimVol, bound({ deletionTimestamp: new Date() })], /PVC is being deleted/],
    ['pv missing', [pod, claimVol, bound(), undefined], /PersistentVolume pv1 not found/],
    ['pv bound elsewhere', [pod, claimVol, bound(), { metadata: { name: 'pv1' }, spec: { claimRef: { uid: 'other' } } }], /not bound to this claim/],
    ['ephemeral not owned', [pod, ephVol, bound(), pvOf({})], /pod is not owner/],
    ['ephemeral owned', [pod, ephVol, bound({ ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: 'web', uid: 'pod-uid', controller: true }] }), pvOf({})], undefined],
    ['ok', [pod, claimVol, bound(), pvOf({})], undefined],
  ];
  for (const [what, args, want] of table) {
    const got = claimProblem(...args);
    if (want) assert.match(got ?? '', want, what);
    else assert.equal(got, undefined, what);
  }
});

test('PV sources: hostPath and local by path, csi with its access mode; others refused by name', () => {
  assert.deepEqual(persistentMount(pvOf({ hostPath: { path: '/srv/a', type: 'Directory' } })), { kind: 'hostPath', path: '/srv/a', type: 'Directory' });
  assert.deepEqual(persistentMount(pvOf({ local: { path: '/mnt/disk1' } })), { kind: 'local', path: '/mnt/disk1' });
  const csi = persistentMount(pvOf({ accessModes: ['ReadWriteMany'], mountOptions: ['noatime'], csi: { driver: 'd.example.com', volumeHandle: 'v1', volumeAttributes: { a: 'b' } } }));
  assert.deepEqual(csi, { kind: 'csi', driver: 'd.example.com', volumeHandle: 'v1', fsType: undefined, readOnly: false, volumeAttributes: { a: 'b' }, mountOptions: ['noatime'], accessMode: 'MULTI_NODE_MULTI_WRITER', readWriteOnce: false });
  const rwo = persistentMount(pvOf({ accessModes: ['ReadWriteOnce', 'ReadWriteMany'], csi: { driver: 'd', volumeHandle: 'v2', fsType: 'ext4' } }));
  assert.equal(rwo.kind === 'csi' && rwo.readWriteOnce, true, 'ReadWriteOnce among the modes');
  assert.throws(() => persistentMount(pvOf({ nfs: { server: 's', path: '/' } })), /volume source nfs is not supported/);
  assert.throws(() => persistentMount(pvOf({ volumeMode: 'Block', local: { path: '/dev/sdb' } })), /volumeMode Block/);
});

test('volumesInUse names: local and csi (device-mountable, attachable), not hostPath', () => {
  assert.equal(volumeInUseName(pvOf({ local: { path: '/x' } })), 'kubernetes.io/local-volume/pv1');
  assert.equal(volumeInUseName(pvOf({ csi: { driver: 'd.example.com', volumeHandle: 'h1' } })), 'kubernetes.io/csi/d.example.com^h1');
  assert.equal(volumeInUseName(pvOf({ hostPath: { path: '/x' } })), undefined);
});
