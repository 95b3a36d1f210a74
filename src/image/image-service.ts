// The image domain: pull, list, status, remove, untag, filesystem usage, garbage collection, and layer lookup for the runtime.
import path from 'node:path';
import { createHash } from 'node:crypto';
import { KeyedLock } from '../common/keyed-lock.js';
import { errorMessage, failedPrecondition, isKind, notFound } from '../common/errors.js';
import { logger } from '../common/log.js';
import { ensureDir } from '../common/fsutil.js';
import { BlobStore } from './blob-store.js';
import { ImageStore, type ImageRecord } from './image-store.js';
import { LayerStore } from './layer-store.js';
import type { LayerLimits } from './unpack.js';
import { Leases, SharedWork, parseImageReference, pullImage, type PullDeps, type PullOutcome } from './pull.js';
import { digestedName, formatReference, parseReference, taggedName } from './reference.js';
import type { RegistryClient, RegistryCredentials } from './registry.js';

export type { ImageRecord } from './image-store.js';

export interface ImageServiceOptions {
  /** Directory holding blobs, unpacked layers and image records, e.g. <config.root>/images. */
  root: string;
  registry: Pick<RegistryClient, 'resolve' | 'downloadBlob'>;
  /** True while a container uses the image (removal is then refused). */
  inUse?: (imageId: string) => boolean;
  /** Waits (bounded) for the background teardown of removed containers still holding the image. */
  settleRemovals?: (imageId: string) => Promise<void>;
  /** Caps on unpacked layer size and compression ratio (default DEFAULT_LAYER_LIMITS). */
  layerLimits?: LayerLimits;
  /** Told about every finished pull (metrics). */
  onPulled?: (outcome: { downloadedBytes: number; downloadedLayers: number; ms: number }) => void;
}

export interface ImageFsUsage {
  bytes: number;
  inodes: number;
  mountpoint: string;
}

export interface GcResult {
  images: string[];
  blobs: string[];
  layers: string[];
}

export interface ResolvedImage {
  record: ImageRecord;
  /** Unpacked layer directories in overlay lowerdir order: top layer first. */
  layerDirs: string[];
}

/** One unpacked layer as overlay sees it: its tree and the directories in it that hide lower layers. */
export interface LayerTree {
  dir: string;
  /** Undefined when not known (a layer unpacked before they were recorded). */
  opaqueDirs?: string[];
}

const ID_RE = /^sha256:[0-9a-f]{64}$/;
const HEX_ID_RE = /^[0-9a-f]{64}$/;

/** References whose canonical names are remembered at once; past it the memo starts afresh. */
const NAMES_KEPT = 256;

/** The name a reference finds its image by: a digested name, or a tagged one. */
interface CanonicalName {
  byDigest: boolean;
  name: string;
}

export class ImageService {
  readonly root: string;
  readonly blobs: BlobStore;
  readonly layers: LayerStore;
  readonly images: ImageStore;
  private readonly leases = new Leases();
  private readonly layerLocks = new KeyedLock();
  private readonly pulls = new SharedWork<PullOutcome>();
  private readonly deps: PullDeps;
  private readonly inUse: (imageId: string) => boolean;
  private readonly settleRemovals: (imageId: string) => Promise<void>;
  private readonly log = logger({ component: 'images' });

  private readonly onPulled: NonNullable<ImageServiceOptions['onPulled']>;

  constructor(opts: ImageServiceOptions) {
    this.root = opts.root;
    this.blobs = new BlobStore(opts.root);
    this.layers = new LayerStore(path.join(opts.root, 'layers'), opts.layerLimits);
    this.images = new ImageStore(opts.root);
    this.inUse = opts.inUse ?? (() => false);
    this.settleRemovals = opts.settleRemovals ?? (async () => undefined);
    this.onPulled = opts.onPulled ?? (() => undefined);
    this.deps = {
      registry: opts.registry,
      blobs: this.blobs,
      layers: this.layers,
      layerLocks: this.layerLocks,
      images: this.images,
      leases: this.leases,
    };
  }

  /** Start-up: drop partial downloads and unpacks, load records, collect what no record needs. */
  async recover(): Promise<void> {
    await ensureDir(this.root, 0o700);
    await this.blobs.recover();
    await this.layers.recover();
    await this.images.load();
    const collected = await this.gc();
    this.log.info({ images: this.images.list().length, collectedBlobs: collected.blobs.length, collectedLayers: collected.layers.length }, 'image store recovered');
  }

  /**
   * Pulls an image and returns its record. Concurrent pulls of one reference with the same credentials share
   * one pull; each caller's signal only ends its own wait.
   */
  async pull(refString: string, creds?: RegistryCredentials, signal?: AbortSignal): Promise<ImageRecord> {
    const ref = parseImageReference(refString);
    const key = `${formatReference(ref)}\u0000${credentialsKey(creds)}`;
    const outcome = await this.pulls.run(key, (sharedSignal) => this.pullAndCollect(refString, creds, sharedSignal), signal, `pull of ${refString}`);
    return this.images.get(outcome.record.id) ?? outcome.record;
  }

  private async pullAndCollect(refString: string, creds: RegistryCredentials | undefined, signal: AbortSignal): Promise<PullOutcome> {
    let outcome: PullOutcome;
    try {
      outcome = await pullImage(this.deps, refString, creds, signal);
    } catch (err) {
      // Refused content (a bomb, a broken layer): its downloaded blobs are not kept for a retry that would fail the same way.
      if (isKind(err, 'InvalidArgument')) await this.gc().catch((gcErr: unknown) => this.log.warn({ err: errorMessage(gcErr) }, 'gc after a refused pull'));
      throw err;
    }
    this.onPulled(outcome);
    let removed = false;
    for (const old of outcome.orphaned) {
      if (!(await this.images.removeIfUnnamed(old.id, (r) => r.pinned || this.inUse(r.id)))) continue;
      this.log.info({ id: old.id }, 'image left without names removed');
      removed = true;
    }
    if (removed) await this.gc();
    return outcome;
  }

  /** Finds an image by id (sha256:<hex> or bare hex), tag (short names normalised) or repo digest. */
  lookup(refOrId: string): ImageRecord | undefined {
    const s = refOrId.trim();
    if (ID_RE.test(s)) return this.images.get(s);
    if (HEX_ID_RE.test(s)) return this.images.get(`sha256:${s}`);
    const name = this.canonicalName(s);
    if (!name) return undefined;
    return name.byDigest ? this.images.getByDigest(name.name) : this.images.getByTag(name.name);
  }

  /** Canonical names of the references asked for, kept: status calls repeat the same few (a bounded memo). */
  private readonly names = new Map<string, CanonicalName | null>();

  private canonicalName(s: string): CanonicalName | null {
    const known = this.names.get(s);
    if (known !== undefined) return known;
    let name: CanonicalName | null = null;
    try {
      const ref = parseReference(s);
      if (ref.digest) {
        name = { byDigest: true, name: digestedName(ref, ref.digest) };
      } else {
        const tagged = taggedName(ref);
        if (tagged) name = { byDigest: false, name: tagged };
      }
    } catch {
      name = null; // not a reference: nothing by that name
    }
    if (s.length > 255) return name; // a client's odd long names are not kept
    if (this.names.size >= NAMES_KEPT) this.names.clear();
    this.names.set(s, name);
    return name;
  }

  list(filter?: { image?: { image?: string } | null } | null): ImageRecord[] {
    const wanted = filter?.image?.image;
    if (wanted) {
      const found = this.lookup(wanted);
      return found ? [found] : [];
    }
    // ISO timestamps order as plain strings; localeCompare (ICU collation) took 6-8 µs for 8 images.
    return this.images.list().sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
  }

  status(refOrId: string): ImageRecord | undefined {
    return this.lookup(refOrId);
  }

  /** Removes the image any of its names or its id refers to, with all its names. Absent is success. */
  async remove(refOrId: string): Promise<void> {
    const record = this.lookup(refOrId);
    if (!record) return;
    // A container removed a moment ago holds its image until its teardown (after RemoveContainer's answer) ends.
    if (this.inUse(record.id)) await this.settleRemovals(record.id);
    if (this.inUse(record.id)) throw failedPrecondition(`image ${refOrId} (${record.id}) is in use by a container`);
    await this.images.remove(record.id);
    this.log.info({ id: record.id, tags: record.repoTags }, 'image removed');
    await this.gc();
  }

  /**
   * Removes one name, like `docker rmi <tag>`: the image stays while other tags name it. An id, or the
   * last tag, removes the whole image (refused while a container uses it). Returns whether the image went away.
   */
  async untag(refOrId: string): Promise<{ record: ImageRecord; imageRemoved: boolean }> {
    const record = this.lookup(refOrId);
    if (!record) throw notFound(`image ${refOrId} not found`);
    const s = refOrId.trim();
    if (ID_RE.test(s) || HEX_ID_RE.test(s)) {
      await this.remove(s);
      return { record, imageRemoved: true };
    }
    const ref = parseReference(s);
    const name = ref.digest ? digestedName(ref, ref.digest) : taggedName(ref)!;
    if (record.repoTags.filter((t) => t !== name).length === 0) {
      await this.remove(record.id);
      return { record, imageRemoved: true };
    }
    const updated = await this.images.removeName(name);
    this.log.info({ id: record.id, name }, 'image name removed');
    return { record: updated ?? record, imageRemoved: false };
  }

  /** Number of pulls running (shared pulls count once). */
  pullsInFlight(): number {
    return this.pulls.size;
  }

  async setPinned(refOrId: string, pinned: boolean): Promise<ImageRecord> {
    const record = this.lookup(refOrId);
    if (!record) throw notFound(`image ${refOrId} not found`);
    return (await this.images.setPinned(record.id, pinned)) ?? record;
  }

  /** Bytes and inodes held by blobs and unpacked layers, from running counts. */
  async fsInfo(): Promise<ImageFsUsage> {
    const blobs = this.blobs.usage();
    const layers = await this.layers.usage();
    return { bytes: blobs.bytes + layers.bytes, inodes: blobs.files + layers.inodes, mountpoint: this.root };
  }

  /** The image's record and its layer directories (top first) for building a container rootfs. */
  async resolveImage(refOrId: string): Promise<ResolvedImage> {
    const record = this.lookup(refOrId);
    if (!record) throw notFound(`image ${refOrId} not found`);
    const layerDirs: string[] = [];
    for (const layer of [...record.layers].reverse()) {
      if (!(await this.layers.has(layer.diffId))) throw failedPrecondition(`image ${refOrId}: layer ${layer.diffId} is missing; pull the image again`);
      layerDirs.push(await this.layers.fsPath(layer.diffId));
    }
    return { record, layerDirs };
  }

  /** The image's layers, top first, with their opaque directories: enough to read a file without mounting. */
  async layerTrees(record: ImageRecord): Promise<LayerTree[]> {
    return Promise.all([...record.layers].reverse().map(async (l) => ({ dir: this.layers.fsPath(l.diffId), opaqueDirs: await this.layers.opaqueDirsOf(l.diffId) })));
  }

  /** Removes images left without names (unused, unpinned), then blobs and layers no record or running pull needs. */
  async gc(): Promise<GcResult> {
    const result: GcResult = { images: [], blobs: [], layers: [] };
    for (const record of this.images.list()) {
      if (record.repoTags.length > 0 || record.repoDigests.length > 0) continue;
      if (await this.images.removeIfUnnamed(record.id, (r) => r.pinned || this.inUse(r.id))) result.images.push(record.id);
    }
    let referencedBlobs = this.images.referencedBlobs();
    for (const digest of await this.blobs.list()) {
      if (referencedBlobs.has(digest) || this.leases.has(digest)) continue;
      const removed = await this.blobs.locks.run(digest, async () => {
        // A pull may have committed since the snapshot: check again under the lock.
        referencedBlobs = this.images.referencedBlobs();
        if (referencedBlobs.has(digest) || this.leases.has(digest)) return false;
        return this.blobs.removeUnlocked(digest);
      });
      if (removed) result.blobs.push(digest);
    }
    let referencedLayers = this.images.referencedLayers();
    for (const diffId of await this.layers.list()) {
      if (referencedLayers.has(diffId) || this.leases.has(diffId)) continue;
      const removed = await this.layerLocks.run(diffId, async () => {
        referencedLayers = this.images.referencedLayers();
        if (referencedLayers.has(diffId) || this.leases.has(diffId)) return false;
        await this.layers.remove(diffId);
        return true;
      });
      if (removed) result.layers.push(diffId);
    }
    if (result.images.length + result.blobs.length + result.layers.length > 0) {
      this.log.info({ images: result.images.length, blobs: result.blobs.length, layers: result.layers.length }, 'garbage collected');
    }
    return result;
  }

  /** The chain id of the top layer (as containerd reports in verbose status). */
  chainId(record: ImageRecord): string | undefined {
    let chain: string | undefined;
    for (const l of record.layers) {
      chain = chain ? `sha256:${createHash('sha256').update(`${chain} ${l.diffId}`).digest('hex')}` : l.diffId;
    }
    return chain;
  }
}

function credentialsKey(creds: RegistryCredentials | undefined): string {
  if (!creds) return '';
  return createHash('sha256').update(JSON.stringify(creds)).digest('hex');
}

