// Image garbage collection, as the kubelet's image GC manager: when the image filesystem is more than
// --image-gc-high-threshold percent used, unused images (no container, running or not, uses them; not pinned;
// older than the minimum age) are removed least recently used first until usage is down to
// --image-gc-low-threshold percent. Also the node's status.images: the 50 largest, up to 5 names each.
import { statfsSync } from 'node:fs';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { CriClient } from './cri-client.js';

export interface ImageGcPolicy {
  highThresholdPercent: number;
  lowThresholdPercent: number;
  minAgeMs: number;
}

export interface GcCandidate {
  id: string;
  size: number;
  inUse: boolean;
  pinned: boolean;
  firstSeenMs: number;
  lastUsedMs: number;
}

/** Pure: the images to remove to free `bytesToFree`: unused, unpinned, old enough, least recently used first. */
export function imagesToRemove(images: readonly GcCandidate[], bytesToFree: number, nowMs: number, minAgeMs: number): string[] {
  const out: string[] = [];
  let freed = 0;
  const candidates = images.filter((i) => !i.inUse && !i.pinned && nowMs - i.firstSeenMs >= minAgeMs).sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.firstSeenMs - b.firstSeenMs);
  for (const c of candidates) {
    if (freed >= bytesToFree) break;
    out.push(c.id);
    freed += c.size;
  }
  return out;
}

/** Pure: how many bytes to free (0 below the high threshold). */
export function bytesToFree(capacity: number, available: number, policy: ImageGcPolicy): number {
  if (capacity <= 0) return 0;
  const used = capacity - available;
  if ((used * 100) / capacity < policy.highThresholdPercent) return 0;
  return Math.max(0, used - (capacity * policy.lowThresholdPercent) / 100);
}

export const MAX_NODE_STATUS_IMAGES = 50;
const MAX_NAMES_PER_IMAGE = 5;

/** Pure: node.status.images from CRI ListImages: the largest first, at most 50, names digests then tags, at most 5. */
export function nodeStatusImages(images: readonly any[]): Array<{ names: string[]; sizeBytes: number }> {
  return [...images]
    .map((i) => ({ names: [...(i.repo_digests ?? []), ...(i.repo_tags ?? [])].slice(0, MAX_NAMES_PER_IMAGE), sizeBytes: Number(i.size ?? 0) }))
    .filter((i) => i.names.length > 0)
    .sort((a, b) => b.sizeBytes - a.sizeBytes)
    .slice(0, MAX_NODE_STATUS_IMAGES);
}

export class ImageGc {
  private readonly firstSeen = new Map<string, number>();
  private readonly lastUsed = new Map<string, number>();
  /** The latest ListImages answer (node.status.images reads it). */
  images: any[] = [];

  constructor(
    private readonly cri: CriClient,
    private readonly policy: ImageGcPolicy,
    private readonly log: Logger,
  ) {}

  /** Where the runtime keeps its images, as a filesystem's capacity and free bytes (undefined: unknown). */
  async imageFs(): Promise<{ available: number; capacity: number } | undefined> {
    try {
      const res = await this.cri.image('ImageFsInfo', {}, { deadlineMs: 10_000 });
      const mountpoint = res?.image_filesystems?.[0]?.fs_id?.mountpoint;
      if (!mountpoint) return undefined;
      const s = statfsSync(mountpoint);
      return { available: s.bavail * s.bsize, capacity: s.blocks * s.bsize };
    } catch {
      return undefined;
    }
  }

  /** Records which images are in use (call often); removes images when the image filesystem is over the high threshold. */
  async run(fs: { available: number; capacity: number } | undefined): Promise<string[]> {
    const now = Date.now();
    const [{ images }, { containers }] = await Promise.all([
      this.cri.image('ListImages', {}, { deadlineMs: 30_000 }),
      this.cri.runtime('ListContainers', {}, { deadlineMs: 30_000 }),
    ]);
    this.images = images ?? [];
    const used = new Set<string>();
    for (const c of containers ?? []) {
      if (c.image_ref) used.add(c.image_ref);
      if (c.image?.image) used.add(c.image.image);
    }
    const candidates: GcCandidate[] = this.images.map((i: any) => {
      const inUse = used.has(i.id) || (i.repo_tags ?? []).some((t: string) => used.has(t)) || (i.repo_digests ?? []).some((d: string) => used.has(d));
      if (!this.firstSeen.has(i.id)) this.firstSeen.set(i.id, now);
      if (inUse || !this.lastUsed.has(i.id)) this.lastUsed.set(i.id, inUse ? now : this.firstSeen.get(i.id)!);
      return { id: i.id, size: Number(i.size ?? 0), inUse, pinned: Boolean(i.pinned), firstSeenMs: this.firstSeen.get(i.id)!, lastUsedMs: this.lastUsed.get(i.id)! };
    });
    for (const id of [...this.firstSeen.keys()]) {
      if (!candidates.some((c) => c.id === id)) {
        this.firstSeen.delete(id);
        this.lastUsed.delete(id);
      }
    }
    const toFree = fs ? bytesToFree(fs.capacity, fs.available, this.policy) : 0;
    if (toFree <= 0) return [];
    const victims = imagesToRemove(candidates, toFree, now, this.policy.minAgeMs);
    const removed: string[] = [];
    for (const id of victims) {
      try {
        await this.cri.image('RemoveImage', { image: { image: id } }, { deadlineMs: 60_000 });
        removed.push(id);
      } catch (err) {
        this.log.warn({ image: id, err: errorMessage(err) }, 'image GC: removal failed');
      }
    }
    if (removed.length) this.log.info({ removed, bytesToFree: toFree }, 'image GC: removed unused images');
    return removed;
  }
}
