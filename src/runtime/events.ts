// Container lifecycle events for GetContainerEvents (the kubelet's evented PLEG). Publishing never
// waits on a subscriber: each has a queue bounded in events and in bytes, and one that falls too far
// behind is cut off alone.
import type { ContainerRecord, SandboxRecord } from './records.js';

export type ContainerEventType =
  | 'CONTAINER_CREATED_EVENT'
  | 'CONTAINER_STARTED_EVENT'
  | 'CONTAINER_STOPPED_EVENT'
  | 'CONTAINER_DELETED_EVENT';

export interface RuntimeEvent {
  /** A container id, or a sandbox id for the sandbox's own events (as containerd does). */
  containerId: string;
  type: ContainerEventType;
  createdAt: string;
  /** Snapshots taken when the event happened: later changes (or removal) don't alter them. */
  sandbox?: SandboxRecord;
  containers: ContainerRecord[];
}

export class SubscriberOverflow extends Error {}

/** Events a subscriber may have waiting. */
export const EVENT_QUEUE_LIMIT = 4096;
/** Bytes a subscriber may have waiting: each event carries its pod's records, which annotations can make ~1 MB. */
export const EVENT_QUEUE_BYTES = 32 * 1024 * 1024;

/** About how much memory an event holds (its snapshots' JSON length); measured once per event, not per subscriber. */
export function eventSize(ev: RuntimeEvent): number {
  try {
    return JSON.stringify(ev).length;
  } catch {
    return 0;
  }
}

export class EventSubscription {
  private readonly queue: Array<{ ev: RuntimeEvent; size: number }> = [];
  private queuedBytes = 0;
  private waiter?: (ev: RuntimeEvent | undefined) => void;
  private closed = false;
  overflowed = false;

  constructor(
    private readonly limit: number,
    private readonly onClose: (s: EventSubscription) => void,
    private readonly byteLimit = EVENT_QUEUE_BYTES,
  ) {}

  push(ev: RuntimeEvent, size = eventSize(ev)): void {
    if (this.closed) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(ev);
      return;
    }
    if (this.queue.length >= this.limit || this.queuedBytes + size > this.byteLimit) {
      this.overflowed = true;
      this.close();
      return;
    }
    this.queue.push({ ev, size });
    this.queuedBytes += size;
  }

  /** The next event, or undefined once closed (check `overflowed` to know why). */
  next(): Promise<RuntimeEvent | undefined> {
    const item = this.queue.shift();
    if (item) {
      this.queuedBytes -= item.size;
      return Promise.resolve(item.ev);
    }
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Bytes of the events waiting (as eventSize measures them). */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.overflowed) {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    this.onClose(this);
    const w = this.waiter;
    this.waiter = undefined;
    w?.(undefined);
  }
}

export class EventBus {
  private readonly subscribers = new Set<EventSubscription>();

  subscribe(limit = EVENT_QUEUE_LIMIT, byteLimit = EVENT_QUEUE_BYTES): EventSubscription {
    const sub = new EventSubscription(limit, (s) => this.subscribers.delete(s), byteLimit);
    this.subscribers.add(sub);
    return sub;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  publish(ev: RuntimeEvent): void {
    if (this.subscribers.size === 0) return;
    const size = eventSize(ev);
    for (const sub of this.subscribers) sub.push(ev, size);
  }
}
