// The agent's eviction manager and image GC, on their own timers: observes the node's signals, keeps the
// pressure conditions, evicts at most one pod per round while a hard threshold is crossed, and collects
// unused images when the image filesystem is over its high threshold.
import type { V1Pod } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { AgentConfig } from './config.js';
import type { CriClient } from './cri-client.js';
import { conditionOf, crossedThresholds, evictionMessage, evictionOrder, isCriticalPod, observeSignals, type PressureCondition } from './eviction.js';
import { ImageGc, nodeStatusImages } from './image-gc.js';

export interface NodePressureHost {
  pods(): Array<{ pod: V1Pod; isStatic: boolean; evicted: boolean }>;
  evict(uid: string, message: string): void;
  pressureChanged(): void;
}

const TERMINAL = new Set(['Succeeded', 'Failed']);

export class NodePressure {
  pressure: ReadonlySet<PressureCondition> = new Set();
  readonly imageGc: ImageGc;
  private evictionTimer?: NodeJS.Timeout;
  private gcTimer?: NodeJS.Timeout;
  private stopped = false;
  private statusImagesCache: Array<{ names: string[]; sizeBytes: number }> = [];

  constructor(
    private readonly cri: CriClient,
    private readonly config: Pick<AgentConfig, 'root' | 'evictionHard' | 'evictionIntervalMs' | 'imageGcHighThresholdPercent' | 'imageGcLowThresholdPercent' | 'imageMinimumGcAgeMs' | 'imageGcIntervalMs'>,
    private readonly host: NodePressureHost,
    private readonly log: Logger,
  ) {
    this.imageGc = new ImageGc(cri, {
      highThresholdPercent: config.imageGcHighThresholdPercent,
      lowThresholdPercent: config.imageGcLowThresholdPercent,
      minAgeMs: config.imageMinimumGcAgeMs,
    }, log);
  }

  start(): void {
    const evictionLoop = async () => {
      await this.evictionRound().catch((err) => this.log.warn({ err: errorMessage(err) }, 'eviction round failed'));
      if (!this.stopped) this.evictionTimer = setTimeout(evictionLoop, this.config.evictionIntervalMs);
    };
    const gcLoop = async () => {
      await this.gcRound().catch((err) => this.log.warn({ err: errorMessage(err) }, 'image GC failed'));
      if (!this.stopped) this.gcTimer = setTimeout(gcLoop, this.config.imageGcIntervalMs);
    };
    void evictionLoop();
    void gcLoop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.evictionTimer);
    clearTimeout(this.gcTimer);
  }

  statusImages(): Array<{ names: string[]; sizeBytes: number }> {
    return this.statusImagesCache;
  }

  /** One observation; one eviction at most (the next round sees whether it was enough). */
  async evictionRound(): Promise<void> {
    const imagefs = await this.imageGc.imageFs();
    const observations = observeSignals(this.config.root, imagefs);
    // Which images are in use, and the node's image list, stay fresh between collections.
    await this.imageGc.run(undefined).then(() => (this.statusImagesCache = nodeStatusImages(this.imageGc.images)), () => undefined);
    const crossed = crossedThresholds(this.config.evictionHard, observations);
    const next = new Set(crossed.map((t) => conditionOf(t.signal)));
    const changed = next.size !== this.pressure.size || [...next].some((c) => !this.pressure.has(c));
    this.pressure = next;
    if (changed) {
      this.log.info({ pressure: [...next] }, 'node pressure changed');
      this.host.pressureChanged();
    }
    const threshold = crossed[0];
    if (!threshold) return;
    const candidates = this.host
      .pods()
      .filter((p) => !p.evicted && !isCriticalPod(p.pod, p.isStatic) && !TERMINAL.has(p.pod.status?.phase ?? '') && !p.pod.metadata?.deletionTimestamp)
      .map((p) => p.pod);
    const [victim] = evictionOrder(candidates);
    if (!victim) return;
    const message = evictionMessage(threshold, observations[threshold.signal]!);
    this.log.warn({ pod: `${victim.metadata?.namespace}/${victim.metadata?.name}`, signal: threshold.signal }, 'evicting pod');
    this.host.evict(victim.metadata!.uid!, message);
  }

  async gcRound(): Promise<void> {
    await this.imageGc.run(await this.imageGc.imageFs());
    this.statusImagesCache = nodeStatusImages(this.imageGc.images);
  }
}
