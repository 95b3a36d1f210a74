import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsNameForSandbox, parseProcNetDev } from '../../src/network/netns.js';

test('netnsNameForSandbox is unique per id and at most 64 characters', () => {
  const a = 'a'.repeat(63) + '1';
  const name = netnsNameForSandbox(a);
  assert.ok(name.length <= 64);
  assert.ok(name.startsWith('nodelet-aaaa'));
  assert.notEqual(netnsNameForSandbox('0123456789ab'), netnsNameForSandbox('0123456789ac'));
  assert.equal(netnsNameForSandbox('x/y'), 'nodelet-x_y');
});

test('parseProcNetDev reads counters per interface', () => {
  const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:    9876      54    1    2    0     0          0         0     4321      32    3    4    0     0       0          0
`;
  assert.deepEqual(parseProcNetDev(text), [
    { name: 'lo', rxBytes: 120, rxPackets: 2, rxErrors: 0, rxDropped: 0, txBytes: 120, txPackets: 2, txErrors: 0, txDropped: 0 },
    { name: 'eth0', rxBytes: 9876, rxPackets: 54, rxErrors: 1, rxDropped: 2, txBytes: 4321, txPackets: 32, txErrors: 3, txDropped: 4 },
  ]);
  assert.deepEqual(parseProcNetDev(''), []);
});
