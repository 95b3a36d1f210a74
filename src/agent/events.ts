// Pod events as the kubelet records them (core/v1, source kubelet/<node>): at most EVENTS_PER_SECOND, and a
// repeat of the same event (same pod, type, reason, message) within ten minutes bumps the count and
// lastTimestamp of the event already written instead of adding another — a failing probe is one event, not hundreds.
// Never fatal: an event that can't be written is logged at debug and forgotten.
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { apiErrorCode } from './kube-client.js';

const EVENTS_PER_SECOND = 10;
const REPEAT_WINDOW_MS = 10 * 60_000;
const MAX_REMEMBERED = 4096;

interface Written {
  name: string;
  namespace: string;
  count: number;
  lastAt: number;
  /** Writes of this event, one after another (a repeat must not race the create it patches). */
  chain: Promise<void>;
}

export type EventType = 'Normal' | 'Warning';

export class PodEventRecorder {
  private budget = { second: 0, count: 0 };
  private readonly written = new Map<string, Written>();

  constructor(
    private readonly core: CoreV1Api,
    private readonly nodeName: string,
    private readonly log: Logger,
  ) {}

  record(pod: V1Pod, type: EventType, reason: string, message: string): void {
    const second = Math.floor(Date.now() / 1000);
    if (this.budget.second !== second) this.budget = { second, count: 0 };
    if (++this.budget.count > EVENTS_PER_SECOND) return;
    const m = pod.metadata!;
    const key = `${m.uid}\n${type}\n${reason}\n${message}`;
    const now = Date.now();
    const before = this.written.get(key);
    if (before && now - before.lastAt < REPEAT_WINDOW_MS) {
      this.written.delete(key); // re-inserted last: the map's order is least recently used first
      this.written.set(key, before);
      before.count++;
      before.lastAt = now;
      const count = before.count;
      before.chain = before.chain.then(() => this.bump(key, before, pod, type, reason, message, count, now));
      return;
    }
    const entry: Written = { name: `${m.name}.${now.toString(16)}${Math.floor(Math.random() * 4096).toString(16)}`, namespace: m.namespace!, count: 1, lastAt: now, chain: Promise.resolve() };
    this.written.delete(key);
    this.written.set(key, entry);
    while (this.written.size > MAX_REMEMBERED) this.written.delete(this.written.keys().next().value!);
    entry.chain = this.create(key, entry, pod, type, reason, message, now);
  }

  private async create(key: string, entry: Written, pod: V1Pod, type: EventType, reason: string, message: string, at: number): Promise<void> {
    const m = pod.metadata!;
    try {
      await this.core.createNamespacedEvent({
        namespace: entry.namespace,
        body: {
          metadata: { name: entry.name, namespace: entry.namespace },
          involvedObject: { apiVersion: 'v1', kind: 'Pod', name: m.name, namespace: m.namespace, uid: m.uid },
          reason,
          message,
          type,
          source: { component: 'kubelet', host: this.nodeName },
          firstTimestamp: new Date(at),
          lastTimestamp: new Date(at),
          count: entry.count,
          reportingComponent: 'kubelet',
          reportingInstance: this.nodeName,
        },
      });
    } catch (err) {
      if (this.written.get(key) === entry) this.written.delete(key);
      this.log.debug({ err: errorMessage(err), reason }, 'event not recorded');
    }
  }

  private async bump(key: string, entry: Written, pod: V1Pod, type: EventType, reason: string, message: string, count: number, at: number): Promise<void> {
    if (this.written.get(key) !== entry) return this.record(pod, type, reason, message);
    try {
      await this.core.patchNamespacedEvent(
        { name: entry.name, namespace: entry.namespace, body: { count, lastTimestamp: new Date(at) } },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      );
    } catch (err) {
      if (this.written.get(key) === entry) this.written.delete(key);
      // Gone (expired, or never written): the next repeat starts a new event.
      if (apiErrorCode(err) !== 404) this.log.debug({ err: errorMessage(err), reason }, 'event count not updated');
    }
  }
}
