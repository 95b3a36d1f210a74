// Pulling an image: resolve the reference, fetch missing blobs, unpack layers, verify diff ids, then commit the record.
// Nothing becomes visible before every blob and layer it needs is complete.
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { KeyedLock } from '../common/keyed-lock.js';
import { NodeletError, errorMessage, internal, invalidArgument } from '../common/errors.js';
import { logger } from '../common/log.js';
import { crashPoint } from '../common/crash-point.js';
import { BlobStore, abortError, raceAbort, throwIfAborted } from './blob-store.js';
import type { CommitResult, ImageConfig, ImageLayer, ImageStore } from './image-store.js';
import { layerCompression } from './media-types.js';
import type { Descriptor } from './media-types.js';
import { digestedName, formatReference, parseReference, taggedName, type ImageReference } from './reference.js';
import type { RegistryClient, RegistryCredentials } from './registry.js';
import { PassThrough } from 'node:stream';
import type { LayerStore, PreparedLayer } from './layer-store.js';

const LAYER_CONCURRENCY = 3;
const PROGRESS_LOG_INTERVAL_MS = 2000;

/** Reference counts on blob digests and layer diff ids that a running pull needs; gc leaves them alone. */
export class Leases {
  private readonly counts = new Map<string, number>();

  acquire(keys: Iterable<string>): () => void {
    const held = [...new Set(keys)];
    for (const k of held) this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of held) {
        const n = (this.counts.get(k) ?? 1) - 1;
        if (n <= 0) this.counts.delete(k);
        else this.counts.set(k, n);
      }
    };
  }

  has(key: string): boolean {
    return this.counts.has(key);
  }
}

/**
 * One in-flight piece of work per key shared by concurrent callers. Each caller may give up on its own
 * (its signal aborts); the work is cancelled only when every caller has given up.
 */
export class SharedWork<T> {
  private readonly inflight = new Map<string, { promise: Promise<T>; controller: AbortController; waiters: number }>();

  run(key: string, fn: (signal: AbortSignal) => Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
    throwIfAborted(signal, what);
    let entry = this.inflight.get(key);
    if (!entry) {
      const controller = new AbortController();
      const promise = fn(controller.signal).finally(() => {
        if (this.inflight.get(key) === created) this.inflight.delete(key);
      });
      const created = { promise, controller, waiters: 0 };
      entry = created;
      this.inflight.set(key, entry);
    }
    const current = entry;
    current.waiters += 1;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      current.waiters -= 1;
      if (current.waiters === 0 && signal?.aborted) current.controller.abort(signal.reason);
    };
    const waited = raceAbort(current.promise, signal, what);
    return waited.finally(leave);
  }

  get size(): number {
    return this.inflight.size;
  }
}

export interface PullDeps {
  registry: Pick<RegistryClient, 'resolve' | 'downloadBlob'>;
  blobs: BlobStore;
  layers: Pick<LayerStore, 'ensureLayer' | 'has' | 'prepareFromStream' | 'commitPrepared' | 'discardPrepared'>;
  /** Per diff id, shared with gc. */
  layerLocks: KeyedLock;
  images: ImageStore;
  leases: Leases;
}

export interface PullOutcome extends CommitResult {
  reference: string;
  downloadedBytes: number;
  downloadedLayers: number;
  ms: number;
}

/** Parses a reference, naming it in the error. */
export function parseImageReference(refString: string): ImageReference {
  try {
    return parseReference(refString);
  } catch (err) {
    if (err instanceof NodeletError) {
      const message = err.message.includes(refString) ? err.message : `invalid image reference "${refString}": ${err.message}`;
      throw new NodeletError(err.kind, message);
    }
    throw invalidArgument(`invalid image reference "${refString}": ${errorMessage(err)}`);
  }
}

/** Runs async work over items with at most `limit` at once; the first failure aborts the rest and is thrown. */
async function forEachLimited<T>(items: T[], limit: number, work: (item: T, index: number) => Promise<void>, onFailure: () => void): Promise<void> {
  let next = 0;
  let failed: unknown;
  let hasFailed = false;
  const worker = async () => {
    while (!hasFailed && next < items.length) {
      const index = next++;
      try {
        await work(items[index]!, index);
      } catch (err) {
        if (!hasFailed) {
          hasFailed = true;
          failed = err;
          onFailure();
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (hasFailed) throw failed;
}

export async function pullImage(deps: PullDeps, refString: string, creds: RegistryCredentials | undefined, signal: AbortSignal): Promise<PullOutcome> {
  const started = performance.now();
  const ref = parseImageReference(refString);
  const reference = formatReference(ref);
  const log = logger({ component: 'pull', image: reference });
  const what = `pull of ${reference}`;
  throwIfAborted(signal, what);

  const resolved = await raceAbort(deps.registry.resolve(ref, creds, signal), signal, what);
  throwIfAborted(signal, what);
  const configDigest = resolved.configDescriptor.digest;
  const configHash = `sha256:${createHash('sha256').update(resolved.config).digest('hex')}`;
  if (configHash !== configDigest) throw internal(`${what}: image config hashes to ${configHash}, manifest says ${configDigest}`);
  let config: ImageConfig;
  try {
    config = JSON.parse(resolved.config.toString('utf8')) as ImageConfig;
  } catch (err) {
    throw internal(`${what}: image config ${configDigest} is not JSON`, err);
  }
  const diffIds = config.rootfs?.diff_ids ?? [];
  const layerDescs: Descriptor[] = resolved.layers;
  if (diffIds.length !== layerDescs.length) {
    throw internal(`${what}: manifest has ${layerDescs.length} layers but the config lists ${diffIds.length} diff ids`);
  }
  const layers: ImageLayer[] = layerDescs.map((d, i) => ({ digest: d.digest, diffId: diffIds[i]!, size: d.size, mediaType: d.mediaType }));
  for (const l of layers) layerCompression(l.mediaType); // unsupported layer types fail before any download

  const release = deps.leases.acquire([configDigest, ...layers.map((l) => l.digest), ...layers.map((l) => l.diffId)]);
  let downloadedBytes = 0;
  let downloadedLayers = 0;
  // Layer work stops when the caller gives up or when any layer fails.
  const layerAbort = new AbortController();
  const stopLayers = () => layerAbort.abort(signal.reason);
  signal.addEventListener('abort', stopLayers, { once: true });
  const layerSignal = layerAbort.signal;
  // Each layer in flight listens on it while downloading and unpacking at once: a few listeners per layer.
  setMaxListeners(16 * LAYER_CONCURRENCY, layerSignal);
  try {
    await deps.blobs.putBytes(configDigest, resolved.config);
    await forEachLimited(layers, LAYER_CONCURRENCY, async (layer, index) => {
      throwIfAborted(layerSignal, what);
      const layerLog = log.child({ layer: index, digest: layer.digest });
      const unpack = deps.layerLocks.run(layer.diffId, async () => {
        throwIfAborted(layerSignal, what);
        if (await deps.layers.has(layer.diffId)) return;
        let lastLog = performance.now();
        const onProgress = (bytes: number) => {
          const now = performance.now();
          if (now - lastLog < PROGRESS_LOG_INTERVAL_MS) return;
          lastLog = now;
          layerLog.info({ bytes, size: layer.size, percent: Math.floor((bytes / Math.max(1, layer.size)) * 100) }, 'downloading layer');
        };
        const desc = { digest: layer.digest, size: layer.size, mediaType: layer.mediaType };
        const compression = layerCompression(layer.mediaType);
        const layerStarted = performance.now();
        // The layer unpacks while its blob downloads (one pass: socket → digest check → blob file and extractor).
        // Every attempt of the download feeds a fresh unpack; only the one of the attempt that verified is kept.
        const streamed: Array<Promise<PreparedLayer>> = [];
        const openSink = compression === 'zstd' ? undefined : () => {
          const sink = new PassThrough({ highWaterMark: 1 << 20 });
          sink.on('error', () => undefined); // reported by the unpack reading it
          const prepared = deps.layers.prepareFromStream(layer.diffId, sink, layer.size, compression, layerSignal);
          // An unpack that fails (or never starts reading) lets go of the download: the sink is closed, not waited on.
          prepared.catch(() => sink.destroy());
          streamed.push(prepared);
          return sink;
        };
        const dropStreamed = async (keep?: Promise<PreparedLayer>) => {
          for (const p of streamed) {
            if (p === keep) continue;
            const prepared = await p.catch(() => undefined);
            if (prepared) await deps.layers.discardPrepared(prepared);
          }
        };
        let blob: { path: string; fetched: boolean };
        try {
          blob = await deps.blobs.ingest(
            desc,
            (dest) => deps.registry.downloadBlob(ref, desc, dest, creds, layerSignal, onProgress, openSink),
            layerSignal,
          );
        } catch (err) {
          await dropStreamed(); // a digest mismatch leaves neither blob nor layer
          throw err;
        }
        if (blob.fetched) {
          downloadedBytes += layer.size;
          downloadedLayers += 1;
          layerLog.info({ bytes: layer.size, ms: Math.round(performance.now() - layerStarted) }, 'layer downloaded');
        }
        const last = blob.fetched ? streamed[streamed.length - 1] : undefined;
        await dropStreamed(last);
        throwIfAborted(layerSignal, what);
        crashPoint('pull.blob-fetched');
        if (last) {
          const prepared = await last;
          try {
            throwIfAborted(layerSignal, what);
            await deps.layers.commitPrepared(prepared);
          } catch (err) {
            await deps.layers.discardPrepared(prepared);
            throw err;
          }
        } else {
          await deps.layers.ensureLayer(layer.diffId, blob.path, compression, layerSignal);
        }
        layerLog.debug({ diffId: layer.diffId }, 'layer unpacked');
      });
      await raceAbort(unpack, layerSignal, what);
    }, () => layerAbort.abort(new NodeletError('Internal', `${what}: another layer failed`)));
    throwIfAborted(signal, what);

    const tag = ref.digest ? undefined : taggedName(ref);
    crashPoint('pull.before-record');
    const result = await deps.images.commit({
      id: configDigest,
      config,
      manifestDigest: resolved.manifestDigest,
      layers,
      size: layers.reduce((sum, l) => sum + l.size, 0) + resolved.configDescriptor.size,
      ...(tag ? { repoTag: tag } : {}),
      repoDigest: digestedName(ref, resolved.topDigest),
    });
    const ms = Math.round(performance.now() - started);
    log.info(
      { id: configDigest, ms, downloadedBytes, downloadedLayers, layers: layers.length, kind: downloadedLayers === 0 ? 'warm' : 'cold' },
      'image pulled',
    );
    return { ...result, reference, downloadedBytes, downloadedLayers, ms };
  } catch (err) {
    if (signal.aborted) throw abortError(signal, what);
    throw err;
  } finally {
    signal.removeEventListener('abort', stopLayers);
    release();
  }
}
