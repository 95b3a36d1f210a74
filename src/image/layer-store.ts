// Unpacked layers: <root>/<diffId hex>/fs (an overlay lowerdir) and <root>/<hex>/layer.json, the completion record.
// Unpacks run in <root>/tmp/<random>/ and are renamed into place whole; a layer dir without layer.json is debris.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { KeyedLock, SingleFlight } from '../common/keyed-lock.js';
import { dataLoss, errorMessage, hasCode, internal, invalidArgument } from '../common/errors.js';
import { ensureDir, fsyncDir, pathExists, readJsonIfExists, writeJsonAtomic } from '../common/fsutil.js';
import { logger } from '../common/log.js';
import { run } from '../common/exec.js';
import type { Readable } from 'node:stream';
import { DEFAULT_LAYER_LIMITS, unpackLayerFrom, type LayerCompression, type LayerLimits, type LayerSource } from './unpack.js';

const DIFF_ID_RE = /^sha256:([0-9a-f]{64})$/;
const HEX_RE = /^[0-9a-f]{64}$/;
const RECORD_FILE = 'layer.json';
const TMP_DIR = 'tmp';

export interface LayerRecord {
  diffId: string;
  /** Size of the blob the layer was unpacked from (compressed bytes). */
  size: number;
  /** Sum of the regular files' sizes. */
  unpackedBytes: number;
  /** Disk bytes charged to the layer (today: unpackedBytes). */
  bytes: number;
  /** Inodes in the layer tree. */
  inodes: number;
  /** Its opaque directories (relative, '' the root); absent in records written before they were kept. */
  opaqueDirs?: string[];
  createdAt: string;
}

/** A layer unpacked into tmp/ and checked, not yet visible: install it with commitPrepared or drop it with discardPrepared. */
export interface PreparedLayer {
  diffId: string;
  work: string;
  record: LayerRecord;
  started: number;
}

function diffIdHex(diffId: string): string {
  const m = DIFF_ID_RE.exec(diffId);
  if (!m) throw invalidArgument(`malformed layer diff id ${JSON.stringify(diffId)} (want sha256:<64 hex>)`);
  return m[1]!;
}

export class LayerStore {
  private readonly tmpRoot: string;
  private readonly inflight = new SingleFlight<string>();
  private readonly locks = new KeyedLock();
  /** Trees of removed layers still being deleted in the background. */
  private readonly removals = new Set<Promise<void>>();
  private readonly log = logger({ component: 'layer-store' });

  constructor(
    readonly root: string,
    private readonly limits: LayerLimits = DEFAULT_LAYER_LIMITS,
  ) {
    this.tmpRoot = path.join(root, TMP_DIR);
  }

  /** The layer's tree (an overlay lowerdir); it exists only when has() is true. */
  fsPath(diffId: string): string {
    return path.join(this.root, diffIdHex(diffId), 'fs');
  }

  private layerDir(diffId: string): string {
    return path.join(this.root, diffIdHex(diffId));
  }

  async has(diffId: string): Promise<boolean> {
    return pathExists(path.join(this.layerDir(diffId), RECORD_FILE));
  }

  /** Unpacks the blob unless the layer is already complete; returns the fs dir. Concurrent calls share one unpack. */
  ensureLayer(expectedDiffId: string, blobPath: string, compression: LayerCompression, signal?: AbortSignal): Promise<string> {
    const hex = diffIdHex(expectedDiffId);
    return this.inflight.do(hex, () => this.locks.run(hex, () => this.unpackOnce(expectedDiffId, blobPath, compression, signal)));
  }

  private async unpackOnce(diffId: string, blobPath: string, compression: LayerCompression, signal?: AbortSignal): Promise<string> {
    if (await this.has(diffId)) return this.fsPath(diffId);
    const prepared = await this.prepare(diffId, { file: blobPath }, (await fsp.stat(blobPath)).size, compression, signal);
    return this.install(prepared);
  }

  /**
   * Unpacks a layer from its compressed bytes as they arrive (a download), into tmp/. Nothing is visible until
   * commitPrepared, which the caller runs only once the blob's digest is verified.
   */
  prepareFromStream(diffId: string, stream: Readable, size: number, compression: LayerCompression, signal?: AbortSignal): Promise<PreparedLayer> {
    diffIdHex(diffId);
    return this.prepare(diffId, { stream, size, name: `${diffId} (streamed)` }, size, compression, signal);
  }

  /** Makes a prepared layer visible (or drops it when the layer became complete meanwhile); returns the fs dir. */
  commitPrepared(prepared: PreparedLayer): Promise<string> {
    return this.locks.run(diffIdHex(prepared.diffId), async () => {
      if (await this.has(prepared.diffId)) {
        await this.removeTree(prepared.work);
        return this.fsPath(prepared.diffId);
      }
      return this.install(prepared);
    });
  }

  async discardPrepared(prepared: PreparedLayer): Promise<void> {
    await this.removeTree(prepared.work);
  }

  private async prepare(diffId: string, from: LayerSource, blobSize: number, compression: LayerCompression, signal?: AbortSignal): Promise<PreparedLayer> {
    const started = Date.now();
    await ensureDir(this.tmpRoot);
    const work = path.join(this.tmpRoot, randomBytes(8).toString('hex'));
    await fsp.mkdir(work, { mode: 0o755 });
    try {
      const result = await unpackLayerFrom(from, compression, path.join(work, 'fs'), signal, this.limits);
      if (result.diffId !== diffId) {
        // The image's config names a diff id its layer does not unpack to: the image's (registry's) fault.
        throw dataLoss(`layer ${diffId} diff id mismatch: blob ${'file' in from ? from.file : from.name} unpacks to ${result.diffId}`);
      }
      // No syncfs here (containerd's overlay snapshotter doesn't either): a killed daemon loses no
      // page cache, and a whole-filesystem sync per layer cost more than the unpack itself.
      const record: LayerRecord = {
        diffId,
        size: blobSize,
        unpackedBytes: result.unpackedBytes,
        bytes: result.unpackedBytes,
        inodes: result.inodes,
        opaqueDirs: result.opaqueDirs,
        createdAt: new Date().toISOString(),
      };
      await writeJsonAtomic(path.join(work, RECORD_FILE), record);
      return { diffId, work, record, started };
    } catch (err) {
      await this.removeTree(work);
      throw err;
    }
  }

  /** Renames a prepared layer into place; the caller holds the diff id's lock. */
  private async install(prepared: PreparedLayer): Promise<string> {
    const finalDir = this.layerDir(prepared.diffId);
    try {
      await this.discardIncomplete(finalDir);
      await fsp.rename(prepared.work, finalDir);
      await fsyncDir(this.root);
    } catch (err) {
      await this.removeTree(prepared.work);
      throw err;
    }
    const { record } = prepared;
    this.log.info({ diffId: prepared.diffId, bytes: record.unpackedBytes, inodes: record.inodes, ms: Date.now() - prepared.started }, 'layer unpacked');
    return path.join(finalDir, 'fs');
  }

  /** Moves an incomplete leftover at finalDir out of the way (a complete one is never there: we hold the key lock). */
  private async discardIncomplete(finalDir: string): Promise<void> {
    if (!(await pathExists(finalDir))) return;
    if (await pathExists(path.join(finalDir, RECORD_FILE))) {
      throw internal(`layer directory ${finalDir} appeared complete during unpack`);
    }
    await this.moveAsideAndRemove(finalDir);
  }

  /** Idempotent. The layer leaves its place in one rename, so a crash never leaves half a tree that looks complete. */
  /**
   * The layer leaves the store at once (renamed into tmp/); its tree is deleted in the background, which was
   * most of a RemoveImage's time. A crash before the deletion ends leaves the tree in tmp/, which recover() clears.
   */
  async remove(diffId: string): Promise<void> {
    const dir = this.layerDir(diffId);
    const trash = await this.locks.run(diffIdHex(diffId), () => this.moveAside(dir));
    if (!trash) return;
    const removal = this.removeTree(trash).finally(() => this.removals.delete(removal));
    this.removals.add(removal);
  }

  private async moveAsideAndRemove(dir: string): Promise<void> {
    const trash = await this.moveAside(dir);
    if (trash) await this.removeTree(trash);
  }

  /** Renames the directory into tmp/ (durably); undefined when it was not there. */
  private async moveAside(dir: string): Promise<string | undefined> {
    await ensureDir(this.tmpRoot);
    const trash = path.join(this.tmpRoot, `rm-${randomBytes(8).toString('hex')}`);
    try {
      await fsp.rename(dir, trash);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return undefined;
      throw err;
    }
    await fsyncDir(this.root);
    return trash;
  }

  private async removeTree(dir: string): Promise<void> {
    try {
      await fsp.rm(dir, { recursive: true, force: true });
    } catch (err) {
      this.log.warn({ dir, err: errorMessage(err) }, 'removing a layer tree failed; recover() retries');
    }
  }

  /** Diff ids of the complete layers. */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await this.layerDirNames()) {
      if (await pathExists(path.join(this.root, name, RECORD_FILE))) out.push(`sha256:${name}`);
    }
    return out.sort();
  }

  private async layerDirNames(): Promise<string[]> {
    try {
      return (await fsp.readdir(this.root)).filter((n) => HEX_RE.test(n));
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return [];
      throw err;
    }
  }

  /** Start-up: drops interrupted unpacks and removals (tmp/) and layer dirs without a completion record. */
  async recover(): Promise<void> {
    await this.removalsDone();
    await ensureDir(this.root);
    await ensureDir(this.tmpRoot);
    await this.spreadUnpacks();
    let leftovers: string[] = [];
    try {
      leftovers = await fsp.readdir(this.tmpRoot);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
    }
    for (const name of leftovers) await this.removeTree(path.join(this.tmpRoot, name));
    let incomplete = 0;
    for (const name of await this.layerDirNames()) {
      if (await pathExists(path.join(this.root, name, RECORD_FILE))) continue;
      await this.locks.run(name, () => this.moveAsideAndRemove(path.join(this.root, name)));
      incomplete++;
    }
    if (leftovers.length + incomplete > 0) this.log.info({ tmp: leftovers.length, incomplete }, 'layer store recovered');
  }

  /**
   * Marks tmp/ a top directory (ext4 TOPDIR, `chattr +T`): each unpack then gets a block group of its own. ext4
   * without a journal scans past every inode freed in the last minutes of a group before reusing one; in the group
   * of the layers removed just before, that made each symlink/mkdir ~165 µs. Placement only; other filesystems refuse.
   */
  private async spreadUnpacks(): Promise<void> {
    try {
      await run('chattr', ['+T', this.tmpRoot], { timeoutMs: 10_000 });
    } catch (err) {
      this.log.debug({ dir: this.tmpRoot, err: errorMessage(err) }, 'could not mark the unpack directory as a top directory');
    }
  }

  /** Resolves once the trees of layers removed so far are deleted. */
  async removalsDone(): Promise<void> {
    await Promise.all([...this.removals]);
  }

  /** Opaque directories of complete layers, by diff id (a layer's content never changes). */
  private readonly opaqueCache = new Map<string, string[]>();

  /** The layer's opaque directories; undefined when its record does not say (older records) or it is gone. */
  async opaqueDirsOf(diffId: string): Promise<string[] | undefined> {
    const known = this.opaqueCache.get(diffId);
    if (known) return known;
    const dirs = (await this.record(diffId))?.opaqueDirs;
    if (dirs) this.opaqueCache.set(diffId, dirs);
    return dirs;
  }

  /** The record of a complete layer, or undefined. */
  async record(diffId: string): Promise<LayerRecord | undefined> {
    return readJsonIfExists<LayerRecord>(path.join(this.layerDir(diffId), RECORD_FILE));
  }

  /** Bytes and inodes of the complete layers, summed from their records. */
  async usage(): Promise<{ bytes: number; inodes: number }> {
    let bytes = 0;
    let inodes = 0;
    for (const diffId of await this.list()) {
      const rec = await this.record(diffId);
      if (!rec) continue;
      bytes += rec.bytes ?? rec.unpackedBytes ?? 0;
      inodes += rec.inodes ?? 0;
    }
    return { bytes, inodes };
  }
}
