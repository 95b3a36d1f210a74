import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EVENT_QUEUE_BYTES, EVENT_QUEUE_LIMIT, EventBus, eventSize, type RuntimeEvent } from '../../src/runtime/events.js';

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

// Each event carries snapshots of its pod's records: 1 MB of annotations makes every queued event ~1 MB.
const bigEvent = (i: number, annotations: Record<string, string>): RuntimeEvent => ({
  containerId: `c${i}`,
  type: 'CONTAINER_CREATED_EVENT',
  createdAt: String(i),
  sandbox: { id: 's', config: { annotations } } as any,
  containers: [{ id: `c${i}`, config: { annotations } } as any],
});

test('the queue is bounded in bytes too: a subscriber not reading events of 1 MB annotations is cut off long before the count bound', async () => {
  const annotations = { big: 'x'.repeat(1024 * 1024) };
  const bus = new EventBus();
  const slow = bus.subscribe(); // the defaults the GetContainerEvents handler uses
  const small = bus.subscribe(EVENT_QUEUE_LIMIT, 4 * 1024 * 1024);
  let published = 0;
  while (!slow.overflowed && published < EVENT_QUEUE_LIMIT) bus.publish(bigEvent(published++, annotations));
  assert.equal(slow.overflowed, true, 'cut off');
  assert.ok(published * 2 * 1024 * 1024 <= EVENT_QUEUE_BYTES + 4 * 1024 * 1024, `cut off after ${published} events (~${published * 2} MB queued)`);
  assert.ok(published < 100, `${published} events, far below the count bound of ${EVENT_QUEUE_LIMIT}`);
  assert.equal(await slow.next(), undefined, 'what it had queued is dropped');
  assert.equal(small.overflowed, true, 'a smaller byte bound cuts off sooner');
});

test('bytes are counted while queued only: a reader that keeps up is never cut off, whatever the events weigh', async () => {
  const annotations = { big: 'x'.repeat(1024 * 1024) };
  const bus = new EventBus();
  const sub = bus.subscribe(EVENT_QUEUE_LIMIT, 5 * 1024 * 1024);
  for (let i = 0; i < 40; i++) {
    bus.publish(bigEvent(i, annotations));
    assert.ok(sub.pendingBytes > 2 * 1024 * 1024);
    assert.equal((await sub.next())!.containerId, `c${i}`);
    assert.equal(sub.pendingBytes, 0);
  }
  assert.equal(sub.overflowed, false);
  // Two queued events fit, a third does not.
  bus.publish(bigEvent(40, annotations));
  bus.publish(bigEvent(41, annotations));
  assert.equal(sub.overflowed, false);
  bus.publish(bigEvent(42, annotations));
  assert.equal(sub.overflowed, true);
  assert.ok(eventSize(bigEvent(0, annotations)) > 2 * 1024 * 1024);
});
