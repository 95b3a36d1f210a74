import { test } from 'node:test';
import assert from 'node:assert/strict';
import { doneReading, releaseArrayBuffer, releaseBuffer, shareBuffer } from '../../src/common/release-buffer.js';

test('releaseBuffer frees a buffer that spans all its memory, and leaves slices (of the pool or not) alone', () => {
  const cases: Array<{ name: string; make: () => Buffer; freed: boolean }> = [
    { name: 'a 64 KiB buffer of its own', make: () => Buffer.allocUnsafe(64 * 1024), freed: true },
    { name: 'a slice of a bigger buffer', make: () => Buffer.allocUnsafe(64 * 1024).subarray(0, 1024), freed: false },
    { name: 'a tail slice', make: () => Buffer.allocUnsafe(64 * 1024).subarray(1024), freed: false },
    { name: 'a buffer of its own the size of node\'s pool', make: () => Buffer.allocUnsafeSlow(Buffer.poolSize), freed: true },
    { name: 'a small buffer from the pool', make: () => Buffer.from('pooled'), freed: false },
    { name: 'a slice of the pool', make: () => Buffer.allocUnsafe(Buffer.poolSize / 2 - 1), freed: false },
  ];
  for (const c of cases) {
    const buf = c.make();
    const length = buf.length;
    releaseBuffer(buf);
    assert.equal(buf.length, c.freed ? 0 : length, c.name);
    assert.equal(buf.buffer.byteLength === 0, c.freed, c.name);
  }
});

test('releaseArrayBuffer frees memory through any view of it', () => {
  const whole = Buffer.allocUnsafe(256 * 1024);
  const slice = whole.subarray(200 * 1024);
  releaseArrayBuffer(slice.buffer);
  assert.equal(whole.length, 0);
  assert.equal(slice.length, 0);
});

test('a shared buffer is freed when its last reader is done, not before; other buffers are left alone', () => {
  const buf = Buffer.alloc(1024 * 1024, 7);
  shareBuffer(buf, 2);
  doneReading(buf);
  assert.equal(buf.length, 1024 * 1024);
  assert.equal(buf[buf.length - 1], 7);
  doneReading(buf);
  assert.equal(buf.length, 0);
  doneReading(buf); // once more: nothing left to do

  const unshared = Buffer.alloc(1024 * 1024);
  doneReading(unshared);
  assert.equal(unshared.length, 1024 * 1024);
});
