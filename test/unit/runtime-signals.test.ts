import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runtimeSignalName } from '../../src/runtime/containers.js';

test('CRI stop signals become names runc accepts', () => {
  const table: Array<[string, string]> = [
    ['SIGTERM', 'SIGTERM'],
    ['SIGUSR1', 'SIGUSR1'],
    ['SIGRTMIN', 'SIGRTMIN'],
    ['SIGRTMINPLUS3', 'RTMIN+3'],
    ['SIGRTMAXMINUS2', 'RTMAX-2'],
    ['9', '9'],
  ];
  for (const [cri, runc] of table) assert.equal(runtimeSignalName(cri), runc, cri);
});
