// Image records: one JSON file per image (<root>/images/<config hex>.json), indexed in memory by id, tag and repo digest.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KeyedLock } from '../common/keyed-lock.js';
import { hasCode, internal } from '../common/errors.js';
import { ensureDir, readJsonIfExists, writeJsonAtomic } from '../common/fsutil.js';
import { logger } from '../common/log.js';
import { digestHex } from './blob-store.js';

/** The parts of an OCI image config nodelet reads; the rest is kept as it came. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  created?: string;
  config?: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    ExposedPorts?: Record<string, unknown>;
    Volumes?: Record<string, unknown>;
    Labels?: Record<string, string> | null;
    StopSignal?: string;
  };
  rootfs?: { type: string; diff_ids: string[] };
  [key: string]: unknown;
}

export interface ImageLayer {
  /** Digest of the blob as stored in the registry (usually compressed). */
  digest: string;
  /** Digest of the uncompressed tar; names the unpacked layer directory. */
  diffId: string;
  size: number;
  mediaType: string;
}

export interface ImageRecord {
  /** sha256:<config digest hex>, the image id. */
  id: string;
  repoTags: string[];
  repoDigests: string[];
  config: ImageConfig;
  manifestDigest: string;
  /** Bottom layer first, as in the manifest. */
  layers: ImageLayer[];
  /** Compressed layer sizes plus the config size. */
  size: number;
  pinned: boolean;
  createdAt: string;
  /** Last change of names; resolves a tag found on two records after a crash mid-move. */
  updatedAt: string;
}

export interface CommitRequest {
  id: string;
  config: ImageConfig;
  manifestDigest: string;
  layers: ImageLayer[];
  size: number;
  /** Full tagged name (registry/repo:tag) to point at this image. */
  repoTag?: string;
  /** Full digested name (registry/repo@sha256:...). */
  repoDigest?: string;
}

export interface CommitResult {
  record: ImageRecord;
  /** Images that lost their last name to this commit (tag moved away). */
  orphaned: ImageRecord[];
}

const RECORD_LOCK = 'records';

export class ImageStore {
  private readonly dir: string;
  private readonly byId = new Map<string, ImageRecord>();
  private readonly byTag = new Map<string, string>();
  private readonly byDigest = new Map<string, string>();
  private readonly lock = new KeyedLock();
  private readonly log = logger({ component: 'image-store' });

  constructor(root: string) {
    this.dir = path.join(root, 'images');
  }

  private file(id: string): string {
    return path.join(this.dir, `${digestHex(id)}.json`);
  }

  /** Rebuilds the indexes from the record files. */
  async load(): Promise<void> {
    await ensureDir(this.dir, 0o700);
    this.byId.clear();
    this.byTag.clear();
    this.byDigest.clear();
    const names = await fsp.readdir(this.dir);
    for (const name of names) {
      const file = path.join(this.dir, name);
      if (name.startsWith('.') && name.endsWith('.tmp')) {
        await fsp.rm(file, { force: true });
        continue;
      }
      if (!/^[0-9a-f]{64}\.json$/.test(name)) continue;
      let record: ImageRecord | undefined;
      try {
        record = await readJsonIfExists<ImageRecord>(file);
      } catch (err) {
        this.log.warn({ file, err: String(err) }, 'unreadable image record skipped');
        continue;
      }
      if (!record || typeof record.id !== 'string') continue;
      record.updatedAt ??= record.createdAt;
      this.byId.set(record.id, record);
    }
    // A crash between writing a tag's new image and the old one leaves the tag on both: the newer change wins.
    const sorted = [...this.byId.values()].sort((a, b) => a.updatedAt.localeCompare(b.updatedAt));
    const stale = new Set<ImageRecord>();
    for (const record of sorted) {
      for (const tag of record.repoTags) {
        const previous = this.byTag.get(tag);
        if (previous && previous !== record.id) {
          const old = this.byId.get(previous)!;
          old.repoTags = old.repoTags.filter((t) => t !== tag);
          stale.add(old);
        }
        this.byTag.set(tag, record.id);
      }
      for (const d of record.repoDigests) this.byDigest.set(d, record.id);
    }
    for (const old of stale) await writeJsonAtomic(this.file(old.id), old);
    this.log.info({ images: this.byId.size }, 'image records loaded');
  }

  get(id: string): ImageRecord | undefined {
    return this.byId.get(id);
  }

  getByTag(name: string): ImageRecord | undefined {
    const id = this.byTag.get(name);
    return id ? this.byId.get(id) : undefined;
  }

  getByDigest(name: string): ImageRecord | undefined {
    const id = this.byDigest.get(name);
    return id ? this.byId.get(id) : undefined;
  }

  list(): ImageRecord[] {
    return [...this.byId.values()];
  }

  /**
   * Makes an image visible (its blobs and layers are already complete) and points the given names at it.
   * A tag already naming another image moves here.
   */
  async commit(req: CommitRequest): Promise<CommitResult> {
    return this.lock.run(RECORD_LOCK, async () => {
      const now = new Date().toISOString();
      const existing = this.byId.get(req.id);
      const record: ImageRecord = existing
        ? { ...existing, repoTags: [...existing.repoTags], repoDigests: [...existing.repoDigests], updatedAt: now }
        : {
            id: req.id,
            repoTags: [],
            repoDigests: [],
            config: req.config,
            manifestDigest: req.manifestDigest,
            layers: req.layers,
            size: req.size,
            pinned: false,
            createdAt: now,
            updatedAt: now,
          };
      const previousOwner = req.repoTag ? this.byTag.get(req.repoTag) : undefined;
      if (req.repoTag && !record.repoTags.includes(req.repoTag)) record.repoTags.push(req.repoTag);
      if (req.repoDigest && !record.repoDigests.includes(req.repoDigest)) record.repoDigests.push(req.repoDigest);
      const changed = !existing || JSON.stringify(existing.repoTags) !== JSON.stringify(record.repoTags) || JSON.stringify(existing.repoDigests) !== JSON.stringify(record.repoDigests);
      if (changed) {
        await ensureDir(this.dir, 0o700);
        await writeJsonAtomic(this.file(record.id), record);
      }
      this.byId.set(record.id, changed ? record : existing!);
      const current = this.byId.get(record.id)!;
      for (const t of current.repoTags) this.byTag.set(t, current.id);
      for (const d of current.repoDigests) this.byDigest.set(d, current.id);

      const orphaned: ImageRecord[] = [];
      if (req.repoTag && previousOwner && previousOwner !== req.id) {
        const old = this.byId.get(previousOwner);
        if (old) {
          const updated: ImageRecord = { ...old, repoTags: old.repoTags.filter((t) => t !== req.repoTag), updatedAt: now };
          await writeJsonAtomic(this.file(old.id), updated);
          this.byId.set(old.id, updated);
          this.log.info({ tag: req.repoTag, from: old.id, to: req.id }, 'tag moved');
          if (updated.repoTags.length === 0 && updated.repoDigests.length === 0) orphaned.push(updated);
        }
      }
      return { record: current, orphaned };
    });
  }

  /** Deletes the record and all its names. Returns it, or undefined when absent. */
  async remove(id: string): Promise<ImageRecord | undefined> {
    return this.lock.run(RECORD_LOCK, async () => {
      const record = this.byId.get(id);
      if (!record) return undefined;
      try {
        await fsp.unlink(this.file(id));
      } catch (err) {
        if (!hasCode(err, 'ENOENT')) throw internal(`removing image record ${id}`, err);
      }
      this.byId.delete(id);
      for (const t of record.repoTags) if (this.byTag.get(t) === id) this.byTag.delete(t);
      for (const d of record.repoDigests) if (this.byDigest.get(d) === id) this.byDigest.delete(d);
      return record;
    });
  }

  /** Deletes the record only if it still has no names (checked under the records lock) and `keep` does not hold. */
  async removeIfUnnamed(id: string, keep: (record: ImageRecord) => boolean = () => false): Promise<ImageRecord | undefined> {
    return this.lock.run(RECORD_LOCK, async () => {
      const record = this.byId.get(id);
      if (!record || record.repoTags.length > 0 || record.repoDigests.length > 0 || keep(record)) return undefined;
      try {
        await fsp.unlink(this.file(id));
      } catch (err) {
        if (!hasCode(err, 'ENOENT')) throw internal(`removing image record ${id}`, err);
      }
      this.byId.delete(id);
      return record;
    });
  }

  /** Removes one name (tag or repo digest) from its image; returns the updated record, or undefined when no image had it. */
  async removeName(name: string): Promise<ImageRecord | undefined> {
    return this.lock.run(RECORD_LOCK, async () => {
      const id = this.byTag.get(name) ?? this.byDigest.get(name);
      const record = id ? this.byId.get(id) : undefined;
      if (!record) return undefined;
      const updated: ImageRecord = {
        ...record,
        repoTags: record.repoTags.filter((t) => t !== name),
        repoDigests: record.repoDigests.filter((d) => d !== name),
        updatedAt: new Date().toISOString(),
      };
      await writeJsonAtomic(this.file(record.id), updated);
      this.byId.set(record.id, updated);
      this.byTag.delete(name);
      this.byDigest.delete(name);
      return updated;
    });
  }

  async setPinned(id: string, pinned: boolean): Promise<ImageRecord | undefined> {
    return this.lock.run(RECORD_LOCK, async () => {
      const record = this.byId.get(id);
      if (!record || record.pinned === pinned) return record;
      const updated = { ...record, pinned, updatedAt: new Date().toISOString() };
      await writeJsonAtomic(this.file(id), updated);
      this.byId.set(id, updated);
      return updated;
    });
  }

  /** Blob digests (config and layer blobs) some record needs. */
  referencedBlobs(): Set<string> {
    const refs = new Set<string>();
    for (const r of this.byId.values()) {
      refs.add(r.id);
      for (const l of r.layers) refs.add(l.digest);
    }
    return refs;
  }

  /** Layer diff ids some record needs. */
  referencedLayers(): Set<string> {
    const refs = new Set<string>();
    for (const r of this.byId.values()) for (const l of r.layers) refs.add(l.diffId);
    return refs;
  }
}
