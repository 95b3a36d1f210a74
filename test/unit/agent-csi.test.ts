// The CSI node client's pure parts: versions it speaks, the CSINode driver list, the capability it sends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { supportedCsiVersion, withDriver } from '../../src/agent/csi/plugins.js';
import { csiAppliesFsGroup, volumeCapability } from '../../src/agent/csi/volumes.js';

test('CSI 1.x plugins are accepted, others refused', () => {
  for (const v of [['1.0.0'], ['0.3.0', '1.2.0'], ['v1.5'], ['1']]) assert.equal(supportedCsiVersion(v), true, v.join(','));
  for (const v of [[], ['0.3.0'], ['2.0.0'], ['1.x']]) assert.equal(supportedCsiVersion(v), false, v.join(','));
});

test('a registered driver replaces its old CSINode entry; the list stays in name order', () => {
  const drivers = [{ name: 'b.example', nodeID: 'old' }, { name: 'a.example', nodeID: 'x' }];
  assert.deepEqual(withDriver(drivers, { name: 'b.example', nodeID: 'new' }), [{ name: 'a.example', nodeID: 'x' }, { name: 'b.example', nodeID: 'new' }]);
  assert.deepEqual(withDriver(undefined, { name: 'c.example', nodeID: 'n' }), [{ name: 'c.example', nodeID: 'n' }]);
});

test('the volume capability: a mount volume with the PV\'s fsType, mount options and access mode', () => {
  assert.deepEqual(
    volumeCapability({ kind: 'csi', driver: 'd', volumeHandle: 'h', fsType: 'ext4', readOnly: false, volumeAttributes: {}, mountOptions: ['noatime'], accessMode: 'MULTI_NODE_READER_ONLY', readWriteOnce: false }),
    { mount: { fs_type: 'ext4', mount_flags: ['noatime'] }, access_mode: { mode: 'MULTI_NODE_READER_ONLY' } },
  );
});

test('who applies the fsGroup to a CSI volume: the kubelet\'s rules by the CSIDriver\'s fsGroupPolicy', () => {
  const rows: [string | undefined, string | undefined, boolean, boolean, boolean][] = [
    // policy, fsType, readWriteOnce, readOnly → applied
    ['File', undefined, false, false, true],
    ['File', 'ext4', true, true, false],
    ['None', 'ext4', true, false, false],
    [undefined, 'ext4', true, false, true],
    ['ReadWriteOnceWithFSType', 'ext4', true, false, true],
    ['ReadWriteOnceWithFSType', undefined, true, false, false],
    ['ReadWriteOnceWithFSType', 'ext4', false, false, false],
  ];
  for (const [policy, fsType, readWriteOnce, readOnly, want] of rows) {
    assert.equal(csiAppliesFsGroup(policy, { fsType, readWriteOnce }, readOnly), want, JSON.stringify({ policy, fsType, readWriteOnce, readOnly }));
  }
});
