import { test } from 'node:test';
import assert from 'node:assert/strict';
import { procStat, signalNumber } from '../../src/runtime/runc/processes.js';

test('stop signals the daemon can send itself: names with or without SIG, numbers; real-time ones are left to runc', () => {
  const table: Array<[string | number, number | undefined]> = [
    ['SIGTERM', 15],
    ['TERM', 15],
    ['sigkill', 9],
    [9, 9],
    ['10', 10],
    ['SIGRTMIN', undefined],
    ['RTMIN+3', undefined],
    ['SIGNOPE', undefined],
    [0, undefined],
  ];
  for (const [given, want] of table) assert.equal(signalNumber(given), want, String(given));
});

test('procStat reads this process: running, its parent, a start time', () => {
  const stat = procStat(process.pid);
  assert.ok(stat);
  assert.equal(stat.parentPid, process.ppid);
  assert.match(stat.startTime, /^\d+$/);
  assert.equal(procStat(2 ** 22 + 7), undefined);
});
