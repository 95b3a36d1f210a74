// The pod lifecycle event generator (the kubelet's PLEG): one relist of the runtime for every pod per period
// (ListPodSandbox + ListContainers, once each), diffed against the last one, wakes the workers of the pods
// that changed. When the runtime streams GetContainerEvents, each event wakes its pod at once and the relist
// becomes a safety net run at a longer period.
import * as grpc from '@grpc/grpc-js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { CriClient } from './cri-client.js';
import { POD_UID_LABEL } from './pod-spec.js';

export interface RelistSandbox {
  id: string;
  state: string;
  labels?: Record<string, string>;
  metadata?: { name?: string; namespace?: string; uid?: string; attempt?: number };
}

export interface RelistContainer {
  id: string;
  pod_sandbox_id: string;
  state: string;
  labels?: Record<string, string>;
}

/** What one relist saw of each pod: its sandboxes' and containers' ids and states, as one comparable string. */
export type PodFingerprints = Map<string, string>;

/** Pure: the fingerprint of every pod a relist saw (pods keyed by their uid label; unlabeled objects are not pods of ours). */
export function fingerprintPods(sandboxes: readonly RelistSandbox[], containers: readonly RelistContainer[]): PodFingerprints {
  const parts = new Map<string, string[]>();
  const sandboxUid = new Map<string, string>();
  const add = (uid: string, part: string) => {
    let list = parts.get(uid);
    if (!list) parts.set(uid, (list = []));
    list.push(part);
  };
  for (const s of sandboxes) {
    const uid = s.labels?.[POD_UID_LABEL] ?? s.metadata?.uid;
    if (!uid) continue;
    sandboxUid.set(s.id, uid);
    add(uid, `s:${s.id}:${s.state}`);
  }
  for (const c of containers) {
    const uid = c.labels?.[POD_UID_LABEL] ?? sandboxUid.get(c.pod_sandbox_id);
    if (!uid) continue;
    add(uid, `c:${c.id}:${c.state}`);
  }
  const out: PodFingerprints = new Map();
  for (const [uid, list] of parts) out.set(uid, list.sort().join(','));
  return out;
}

/** Pure: the pods whose fingerprint changed between two relists (appeared, changed, or gone). */
export function changedPods(before: PodFingerprints, after: PodFingerprints): string[] {
  const changed: string[] = [];
  for (const [uid, fp] of after) if (before.get(uid) !== fp) changed.push(uid);
  for (const uid of before.keys()) if (!after.has(uid)) changed.push(uid);
  return changed;
}

/** The uid of the pod a GetContainerEvents event is about. */
export function eventPodUid(ev: any): string | undefined {
  return ev?.pod_sandbox_status?.labels?.[POD_UID_LABEL] ?? ev?.pod_sandbox_status?.metadata?.uid ?? ev?.containers_statuses?.[0]?.labels?.[POD_UID_LABEL];
}

export interface PlegOptions {
  /** Relist period while no event stream is delivering (the kubelet's 1 s). */
  relistMs: number;
  /** Relist period while the event stream is delivering: the safety net. */
  eventedRelistMs: number;
  /** Use GetContainerEvents when the runtime offers it. */
  evented: boolean;
  onPodChanged(uid: string): void;
  log: Logger;
}

const STREAM_RETRY_MIN_MS = 1000;
const STREAM_RETRY_MAX_MS = 30_000;

export class PodLifecycleEvents {
  private fingerprints: PodFingerprints = new Map();
  private timer?: NodeJS.Timeout;
  private stream?: grpc.ClientReadableStream<any>;
  private streamRetry?: NodeJS.Timeout;
  private streamFailures = 0;
  /** The event stream delivered since it was (re)opened: the relist may slow down. */
  private streamLive = false;
  private stopped = false;
  private relisting?: Promise<void>;
  /** The sandboxes the last relist saw (the agent's housekeeping reads them instead of listing again). */
  sandboxes: RelistSandbox[] = [];
  relists = 0;
  events = 0;

  constructor(private readonly cri: CriClient, private readonly opts: PlegOptions) {}

  get isEvented(): boolean {
    return this.streamLive;
  }

  /** The first relist (its result is the baseline: every pod's worker syncs on its own when it starts). */
  async start(): Promise<void> {
    await this.relist();
    if (this.opts.evented) this.openStream();
    this.scheduleRelist();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.streamRetry);
    this.stream?.cancel();
  }

  /** One relist now (coalesced with one in flight). */
  relist(): Promise<void> {
    this.relisting ??= this.doRelist().finally(() => {
      this.relisting = undefined;
    });
    return this.relisting;
  }

  private async doRelist(): Promise<void> {
    try {
      const [{ items }, { containers }] = await Promise.all([
        this.cri.runtime('ListPodSandbox', {}, { deadlineMs: 30_000 }),
        this.cri.runtime('ListContainers', {}, { deadlineMs: 30_000 }),
      ]);
      this.relists++;
      this.sandboxes = items ?? [];
      const next = fingerprintPods(this.sandboxes, containers ?? []);
      const changed = changedPods(this.fingerprints, next);
      this.fingerprints = next;
      for (const uid of changed) this.opts.onPodChanged(uid);
    } catch (err) {
      this.opts.log.warn({ err: errorMessage(err) }, 'PLEG relist failed');
    }
  }

  private scheduleRelist(): void {
    if (this.stopped) return;
    const period = this.streamLive ? this.opts.eventedRelistMs : this.opts.relistMs;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      void this.relist().finally(() => this.scheduleRelist());
    }, period);
  }

  private openStream(): void {
    if (this.stopped) return;
    const stream = this.cri.runtimeStream('GetContainerEvents', {});
    this.stream = stream;
    stream.on('data', (ev: any) => {
      this.events++;
      if (!this.streamLive) {
        this.streamLive = true;
        this.streamFailures = 0;
        this.opts.log.info('PLEG: runtime events stream live; relisting as a safety net only');
      }
      const uid = eventPodUid(ev);
      if (uid) this.opts.onPodChanged(uid);
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.streamLive = false;
      if (this.stopped || err.code === grpc.status.CANCELLED) return;
      if (err.code === grpc.status.UNIMPLEMENTED) {
        this.opts.log.info('PLEG: runtime has no GetContainerEvents; relisting only');
        return;
      }
      this.retryStream(errorMessage(err));
    });
    stream.on('end', () => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.streamLive = false;
      this.retryStream('stream ended');
    });
  }

  /** The stream broke: relist at once (events may have been lost), and reopen it with back-off. */
  private retryStream(why: string): void {
    if (this.stopped) return;
    this.streamFailures++;
    const delay = Math.min(STREAM_RETRY_MIN_MS * 2 ** (this.streamFailures - 1), STREAM_RETRY_MAX_MS);
    this.opts.log.warn({ err: why, retryMs: delay }, 'PLEG: runtime events stream lost; relisting');
    void this.relist();
    clearTimeout(this.timer);
    this.scheduleRelist();
    this.streamRetry = setTimeout(() => this.openStream(), delay);
  }
}
