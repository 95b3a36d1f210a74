// Container lifecycle events for GetContainerEvents (the kubelet's evented PLEG). Publishing never
// waits on a subscriber: each has a bounded queue, and one that falls too far behind is cut off alone.
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

export class EventSubscription {
  private readonly queue: RuntimeEvent[] = [];
  private waiter?: (ev: RuntimeEvent | undefined) => void;
  private closed = false;
  overflowed = false;

  constructor(
    private readonly limit: number,
    private readonly onClose: (s: EventSubscription) => void,
  ) {}

  push(ev: RuntimeEvent): void {
    if (this.closed) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(ev);
      return;
    }
    if (this.queue.length >= this.limit) {
      this.overflowed = true;
      this.close();
      return;
    }
    this.queue.push(ev);
  }

  /** The next event, or undefined once closed (check `overflowed` to know why). */
  next(): Promise<RuntimeEvent | undefined> {
    const ev = this.queue.shift();
    if (ev) return Promise.resolve(ev);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = this.overflowed ? 0 : this.queue.length;
    this.onClose(this);
    const w = this.waiter;
    this.waiter = undefined;
    w?.(undefined);
  }
}

export class EventBus {
  private readonly subscribers = new Set<EventSubscription>();

  subscribe(limit = 4096): EventSubscription {
    const sub = new EventSubscription(limit, (s) => this.subscribers.delete(s));
    this.subscribers.add(sub);
    return sub;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  publish(ev: RuntimeEvent): void {
    for (const sub of this.subscribers) sub.push(ev);
  }
}
