// Content-addressed blob storage: <root>/blobs/sha256/<hex>, downloads staged in <root>/ingest/ and renamed into place.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { KeyedLock } from '../common/keyed-lock.js';
import { NodeletError, deadlineExceeded, hasCode, internal, invalidArgument } from '../common/errors.js';
import { ensureDir, fsyncDir, writeFileAtomic } from '../common/fsutil.js';
import { logger } from '../common/log.js';

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

export function digestHex(digest: string): string {
  const m = DIGEST_RE.exec(digest);
  if (!m) throw invalidArgument(`unsupported or malformed digest "${digest}" (want sha256:<64 hex>)`);
  return m[1]!;
}

export function isSha256Digest(s: string): boolean {
  return DIGEST_RE.test(s);
}

/** The error to throw once a signal has been aborted: its reason when typed, else DeadlineExceeded. */
export function abortError(signal: AbortSignal, what: string): NodeletError {
  const reason: unknown = signal.reason;
  if (reason instanceof NodeletError) return reason;
  return deadlineExceeded(`${what}: cancelled or deadline exceeded`);
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}

/** Waits for `work` but gives up as soon as `signal` aborts (the work itself carries on for other waiters). */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(abortError(signal, what));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      work.catch(() => undefined);
      reject(abortError(signal, what));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** Fetches a blob into `destFile` (created by the callee), verifying size and digest. */
export type BlobFetcher = (destFile: string) => Promise<void>;

export class BlobStore {
  /** Per-digest lock shared with garbage collection, so a blob is never removed while being checked or written. */
  readonly locks = new KeyedLock();
  private readonly blobDir: string;
  private readonly ingestDir: string;
  private bytes = 0;
  private count = 0;
  private readonly log = logger({ component: 'blob-store' });

  constructor(readonly root: string) {
    this.blobDir = path.join(root, 'blobs', 'sha256');
    this.ingestDir = path.join(root, 'ingest');
  }

  path(digest: string): string {
    return path.join(this.blobDir, digestHex(digest));
  }

  async has(digest: string): Promise<boolean> {
    try {
      return (await fsp.stat(this.path(digest))).isFile();
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return false;
      throw err;
    }
  }

  /** Removes staged downloads left by a crash and recounts usage. */
  async recover(): Promise<void> {
    await ensureDir(this.blobDir, 0o700);
    await fsp.rm(this.ingestDir, { recursive: true, force: true });
    await ensureDir(this.ingestDir, 0o700);
    let bytes = 0;
    let count = 0;
    for (const name of await fsp.readdir(this.blobDir)) {
      if (name.startsWith('.')) {
        await fsp.rm(path.join(this.blobDir, name), { force: true });
        continue;
      }
      const st = await fsp.stat(path.join(this.blobDir, name));
      bytes += st.size;
      count += 1;
    }
    this.bytes = bytes;
    this.count = count;
  }

  /**
   * Makes the blob present: fetches it into the ingest area and renames it into place.
   * Concurrent callers for one digest are serialised; the later ones find it present.
   * Returns whether this call downloaded it.
   */
  async ingest(desc: { digest: string; size: number }, fetch: BlobFetcher, signal?: AbortSignal): Promise<{ path: string; fetched: boolean }> {
    const target = this.path(desc.digest);
    const work = this.locks.run(desc.digest, async () => {
      throwIfAborted(signal, `download of ${desc.digest}`);
      if (await this.has(desc.digest)) return { path: target, fetched: false };
      await ensureDir(this.ingestDir, 0o700);
      const staging = path.join(this.ingestDir, `${digestHex(desc.digest).slice(0, 12)}-${randomBytes(6).toString('hex')}`);
      try {
        await fetch(staging);
        const st = await fsp.stat(staging);
        if (st.size !== desc.size) throw internal(`blob ${desc.digest}: got ${st.size} bytes, expected ${desc.size}`);
        const fh = await fsp.open(staging, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        await fsp.rename(staging, target);
        await fsyncDir(this.blobDir);
        this.bytes += st.size;
        this.count += 1;
        this.log.debug({ digest: desc.digest, size: st.size }, 'blob stored');
        return { path: target, fetched: true };
      } finally {
        await fsp.rm(staging, { force: true });
      }
    });
    return raceAbort(work, signal, `download of ${desc.digest}`);
  }

  /** Stores a small blob held in memory (an image config), verifying its digest. */
  async putBytes(digest: string, data: Buffer): Promise<string> {
    const target = this.path(digest);
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest) throw internal(`blob digest mismatch: expected ${digest}, content hashes to ${actual}`);
    return this.locks.run(digest, async () => {
      if (await this.has(digest)) return target;
      await ensureDir(this.blobDir, 0o700);
      await writeFileAtomic(target, data, 0o644);
      this.bytes += data.length;
      this.count += 1;
      return target;
    });
  }

  /** Removes a blob. Callers that may race with ingests hold `locks` for the digest. Returns whether it existed. */
  async removeUnlocked(digest: string): Promise<boolean> {
    const file = this.path(digest);
    let size: number;
    try {
      size = (await fsp.stat(file)).size;
      await fsp.unlink(file);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return false;
      throw err;
    }
    this.bytes -= size;
    this.count -= 1;
    return true;
  }

  async remove(digest: string): Promise<boolean> {
    return this.locks.run(digest, () => this.removeUnlocked(digest));
  }

  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.blobDir);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return [];
      throw err;
    }
    return names.filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Bytes and files held, kept as a running count (no directory walk per call). */
  usage(): { bytes: number; files: number } {
    return { bytes: this.bytes, files: this.count };
  }
}
