import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus, type RuntimeEvent } from '../../src/runtime/events.js';

const ev = (i: number): RuntimeEvent => ({ containerId: `c${i}`, type: 'CONTAINER_CREATED_EVENT', createdAt: String(i), containers: [] });

test('every subscriber gets every event in order', async () => {
  const bus = new EventBus();
  const a = bus.subscribe();
  const b = bus.subscribe();
  for (let i = 0; i < 5; i++) bus.publish(ev(i));
  for (const sub of [a, b]) {
    const got = [];
    for (let i = 0; i < 5; i++) got.push((await sub.next())!.containerId);
    assert.deepEqual(got, ['c0', 'c1', 'c2', 'c3', 'c4']);
  }
});

test('a slow subscriber is cut off alone; publishing never waits', async () => {
  const bus = new EventBus();
  const slow = bus.subscribe(10);
  const fast = bus.subscribe(10);
  const received: string[] = [];
  const reader = (async () => {
    for (;;) {
      const e = await fast.next();
      if (!e) break;
      received.push(e.containerId);
    }
  })();
  for (let i = 0; i < 50; i++) {
    bus.publish(ev(i));
    await Promise.resolve(); // let the fast reader run, as an event loop turn would
  }
  assert.equal(slow.overflowed, true);
  assert.equal(await slow.next(), undefined, 'the slow one is closed');
  assert.equal(bus.subscriberCount, 1);
  fast.close();
  await reader;
  assert.equal(received.length, 50, 'the fast one saw everything');
});

test('a waiting reader wakes up on publish and on close', async () => {
  const bus = new EventBus();
  const sub = bus.subscribe();
  const pending = sub.next();
  bus.publish(ev(1));
  assert.equal((await pending)!.containerId, 'c1');
  const ended = sub.next();
  sub.close();
  assert.equal(await ended, undefined);
  assert.equal(sub.overflowed, false);
});
