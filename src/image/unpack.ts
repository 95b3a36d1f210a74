// Unpacks one OCI layer blob into a fresh directory in overlayfs form (whiteouts as 0:0 char devices,
// opaque dirs as trusted.overlay.opaque=y), computing the diff id on the way.
//
// Pipeline: blob → decompressor → TarLayerScanner (hash, validate every header, count) → GNU tar -x.
// The scanner forwards a chunk to tar only after every header completed inside it has been validated,
// so tar never acts on an entry we rejected.
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { run, spawnChild } from '../common/exec.js';
import { NodeletError, alreadyExists, deadlineExceeded, errorMessage, hasCode, internal, invalidArgument } from '../common/errors.js';
import { logger } from '../common/log.js';
import { crashPoint } from '../common/crash-point.js';

export type LayerCompression = 'gzip' | 'zstd' | 'none';

/** Caps on what one layer may expand to; the unpack stops at the first tar byte over them. */
export interface LayerLimits {
  /** Uncompressed (tar stream) bytes allowed per layer. */
  maxBytes: number;
  /** Uncompressed bytes allowed per compressed byte, once past RATIO_FLOOR_BYTES (a decompression bomb). */
  maxRatio: number;
}

/** 32 GiB per layer, and at most 200 times the blob once past 64 MiB. */
export const DEFAULT_LAYER_LIMITS: LayerLimits = { maxBytes: 32 * 1024 ** 3, maxRatio: 200 };
/** Below this, any ratio is fine: small layers of zeros or text compress far better than large real ones. */
export const RATIO_FLOOR_BYTES = 64 * 1024 * 1024;

/** The tar-stream size a blob of blobSize may unpack to, and which cap sets it. */
export function layerByteBudget(blobSize: number, limits: LayerLimits): { bytes: number; why: string } {
  const byRatio = Math.max(RATIO_FLOOR_BYTES, blobSize * limits.maxRatio);
  if (byRatio < limits.maxBytes) {
    return { bytes: byRatio, why: `expands to more than ${limits.maxRatio} times its ${blobSize} compressed bytes (a decompression bomb?); the limit is --max-layer-ratio` };
  }
  return { bytes: limits.maxBytes, why: `unpacks to more than ${limits.maxBytes} bytes; the limit is --max-layer-size` };
}

export interface UnpackResult {
  /** sha256:<hex> of the uncompressed tar stream. */
  diffId: string;
  /** Sum of the sizes of the regular files in the layer. */
  unpackedBytes: number;
  /** Inodes the layer directory holds (hard links not counted twice). */
  inodes: number;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const MAX_META_SIZE = 1 << 20;
const MAX_SYMLINK_HOPS = 40;
const BLOCK = 512;

type EntryKind = 'file' | 'dir' | 'symlink' | 'device';

interface TreeNode {
  kind: EntryKind;
  /** Symlink target (latin1 = raw bytes). */
  target?: string;
}

interface WhiteoutRecord {
  /** Canonical layer-relative path of the hidden name (latin1 = raw bytes). */
  path: string;
  uid: number;
  gid: number;
  mtime: number;
}

/** Thrown for an entry we refuse; always names the entry. */
function badEntry(name: string, why: string): NodeletError {
  return invalidArgument(`layer entry ${JSON.stringify(latin1ToDisplay(name))}: ${why}`);
}

function latin1ToDisplay(s: string): string {
  return Buffer.from(s, 'latin1').toString('utf8');
}

/** Parses a tar numeric field: octal text, or base-256 when the high bit of the first byte is set. */
function parseNumeric(buf: Buffer, offset: number, length: number): number {
  const first = buf[offset]!;
  if (first & 0x80) {
    if (first & 0x40) return NaN; // negative base-256: never valid for sizes/ids here
    let value = first & 0x3f;
    for (let i = offset + 1; i < offset + length; i++) value = value * 256 + buf[i]!;
    return value;
  }
  let end = offset + length;
  let start = offset;
  while (start < end && (buf[start] === 0x20 || buf[start] === 0)) start++;
  while (end > start && (buf[end - 1] === 0x20 || buf[end - 1] === 0)) end--;
  if (start === end) return 0;
  const text = buf.toString('latin1', start, end);
  if (!/^[0-7]+$/.test(text)) return NaN;
  return parseInt(text, 8);
}

function cString(buf: Buffer, offset: number, length: number): string {
  let end = offset;
  const limit = offset + length;
  while (end < limit && buf[end] !== 0) end++;
  return buf.toString('latin1', offset, end);
}

function checksumOk(block: Buffer): boolean {
  const stored = parseNumeric(block, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Parses PAX records ("<len> key=value\n"); values kept as raw bytes in latin1 strings. */
function parsePax(buf: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let pos = 0;
  while (pos < buf.length) {
    const space = buf.indexOf(0x20, pos);
    if (space < 0) break;
    const len = parseInt(buf.toString('latin1', pos, space), 10);
    if (!(len > 0) || pos + len > buf.length) throw invalidArgument('layer has a malformed PAX header');
    const record = buf.toString('latin1', space + 1, pos + len - 1); // drop trailing \n
    const eq = record.indexOf('=');
    if (eq < 0) throw invalidArgument('layer has a malformed PAX record');
    records.set(record.slice(0, eq), record.slice(eq + 1));
    pos += len;
  }
  return records;
}

/** Splits a member name into components: leading "/" dropped (absolute names are layer-relative), "." and "" skipped. */
function splitMemberName(name: string, entryName = name): string[] {
  const parts: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      throw badEntry(entryName, name === entryName ? 'path contains ".." (escapes the layer)' : `hard link target ${JSON.stringify(latin1ToDisplay(name))} contains ".." (escapes the layer)`);
    }
    parts.push(c);
  }
  return parts;
}

/** A symlink the tree may be walked through: relative, no "..", so it cannot leave the layer. */
function isContainedSymlink(target: string): boolean {
  if (target.startsWith('/') || target === '') return false;
  return !target.split('/').includes('..');
}

/**
 * Streams the uncompressed tar: hashes every byte, validates each header before the bytes that complete it are
 * forwarded, models the tree the extraction will produce, and collects whiteouts and opaque markers.
 */
export class TarLayerScanner extends Transform {
  readonly whiteouts: WhiteoutRecord[] = [];
  readonly opaqueDirs = new Set<string>();
  unpackedBytes = 0;
  inodes = 0;
  totalBytes = 0;

  private readonly hash: Hash = createHash('sha256');
  private readonly tree = new Map<string, TreeNode>();
  private readonly header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  /** Bytes of member data / padding still to pass over. */
  private skip = 0;
  /** How many of the `skip` bytes are the padding to the next block (the rest is member data). */
  private skipPadding = 0;
  /** Payload of a PAX or GNU long-name header being collected. */
  private meta: { type: number; buf: Buffer; fill: number; padding: number } | null = null;
  private paxGlobal = new Map<string, string>();
  private paxLocal: Map<string, string> | null = null;
  private gnuLongName: string | null = null;
  private gnuLongLink: string | null = null;
  private ended = false;
  private digest: string | null = null;

  constructor(private readonly budget: { bytes: number; why: string } = { bytes: Number.POSITIVE_INFINITY, why: '' }) {
    super({ highWaterMark: 1 << 20 });
  }

  get diffId(): string {
    if (!this.digest) throw internal('layer diff id read before the stream ended');
    return this.digest;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    // Checked before a byte of the chunk goes on: nothing past the budget reaches the disk.
    if (this.totalBytes + chunk.length > this.budget.bytes) return cb(invalidArgument(`layer ${this.budget.why}`));
    if (this.totalBytes > 0) crashPoint('pull.mid-unpack'); // the first chunk went on to tar
    this.hash.update(chunk);
    this.totalBytes += chunk.length;
    if (this.ended) return cb();
    let forwardEnd = chunk.length;
    try {
      let pos = 0;
      while (pos < chunk.length) {
        if (this.skip > 0) {
          const n = Math.min(this.skip, chunk.length - pos);
          this.skip -= n;
          pos += n;
          continue;
        }
        if (this.meta) {
          const m = this.meta;
          const n = Math.min(m.buf.length - m.fill, chunk.length - pos);
          chunk.copy(m.buf, m.fill, pos, pos + n);
          m.fill += n;
          pos += n;
          if (m.fill === m.buf.length) {
            this.meta = null;
            this.skip = m.padding;
            this.skipPadding = m.padding;
            this.applyMeta(m.type, m.buf);
          }
          continue;
        }
        const n = Math.min(BLOCK - this.headerFill, chunk.length - pos);
        chunk.copy(this.header, this.headerFill, pos, pos + n);
        this.headerFill += n;
        pos += n;
        if (this.headerFill < BLOCK) continue;
        this.headerFill = 0;
        if (isZeroBlock(this.header)) {
          // End of archive: tar gets exactly one more zero block from us; trailing bytes are only hashed.
          this.ended = true;
          forwardEnd = pos;
          break;
        }
        this.onHeader(this.header);
      }
    } catch (err) {
      return cb(err as Error);
    }
    if (forwardEnd > 0) this.push(forwardEnd === chunk.length ? chunk : chunk.subarray(0, forwardEnd));
    if (this.ended) this.push(Buffer.alloc(BLOCK));
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.digest = `sha256:${this.hash.digest('hex')}`;
    if (!this.ended) {
      if (this.headerFill !== 0) return cb(invalidArgument('layer tar is truncated (stream ended inside a header)'));
      if (this.meta || this.skip > this.skipPadding) {
        return cb(invalidArgument(`layer tar is truncated (stream ended inside a member's data, ${this.skip - this.skipPadding} bytes short)`));
      }
      // Go's archive/tar (containerd) accepts a stream ending right after the last member's data, without its
      // padding or the end-of-archive blocks (umoci writes such layers); GNU tar needs both, so they are supplied.
      this.push(Buffer.alloc(this.skip + 2 * BLOCK));
    }
    cb();
  }

  private applyMeta(type: number, buf: Buffer): void {
    switch (type) {
      case 0x78: // 'x' PAX per-file
        this.paxLocal = parsePax(buf);
        break;
      case 0x67: {
        // 'g' PAX global
        const records = parsePax(buf);
        for (const key of ['path', 'linkpath', 'size']) {
          if (records.has(key)) throw invalidArgument(`layer has a PAX global header setting "${key}"`);
        }
        for (const [k, v] of records) this.paxGlobal.set(k, v);
        break;
      }
      case 0x4c: // 'L' GNU long name
        this.gnuLongName = cString(buf, 0, buf.length);
        break;
      case 0x4b: // 'K' GNU long link
        this.gnuLongLink = cString(buf, 0, buf.length);
        break;
    }
  }

  private onHeader(block: Buffer): void {
    if (!checksumOk(block)) throw invalidArgument('layer tar has a header with a bad checksum');
    const typeflag = block[156]!;
    let size = parseNumeric(block, 124, 12);
    if (!Number.isSafeInteger(size) || size < 0) throw invalidArgument('layer tar has a header with an invalid size');

    // Meta headers: collect their payload, apply it to the next real header.
    if (typeflag === 0x78 || typeflag === 0x67 || typeflag === 0x4c || typeflag === 0x4b) {
      if (size > MAX_META_SIZE) throw invalidArgument('layer tar has an oversized extended header');
      this.meta = { type: typeflag, buf: Buffer.alloc(size), fill: 0, padding: (BLOCK - (size % BLOCK)) % BLOCK };
      if (size === 0) {
        this.meta = null;
        this.applyMeta(typeflag, Buffer.alloc(0));
      }
      return;
    }

    const magic = block.toString('latin1', 257, 263);
    let name = cString(block, 0, 100);
    if (magic === 'ustar\0') {
      const prefix = cString(block, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    let linkname = cString(block, 157, 100);
    if (this.gnuLongName !== null) name = this.gnuLongName;
    if (this.gnuLongLink !== null) linkname = this.gnuLongLink;
    const pax = this.paxLocal ?? new Map<string, string>();
    const paxValue = (key: string) => pax.get(key) ?? this.paxGlobal.get(key);
    for (const key of pax.keys()) {
      if (key.startsWith('GNU.sparse.')) throw badEntry(paxValue('path') ?? name, 'sparse files are not supported');
    }
    name = paxValue('path') ?? name;
    linkname = paxValue('linkpath') ?? linkname;
    const paxSize = paxValue('size');
    if (paxSize !== undefined) {
      size = Number(paxSize);
      if (!Number.isSafeInteger(size) || size < 0) throw badEntry(name, 'invalid PAX size');
    }
    this.paxLocal = null;
    this.gnuLongName = null;
    this.gnuLongLink = null;

    const uid = parseNumeric(block, 108, 8);
    const gid = parseNumeric(block, 116, 8);
    const mtime = Number(paxValue('mtime') ?? parseNumeric(block, 136, 12));

    let kind: EntryKind | 'hardlink';
    switch (typeflag) {
      case 0x30: // '0'
      case 0x00:
      case 0x37: // '7' contiguous: a regular file
        kind = name.endsWith('/') ? 'dir' : 'file';
        break;
      case 0x31:
        kind = 'hardlink';
        break;
      case 0x32:
        kind = 'symlink';
        break;
      case 0x33:
      case 0x34:
      case 0x36:
        kind = 'device';
        break;
      case 0x35:
        kind = 'dir';
        break;
      default:
        throw badEntry(name, `unsupported tar entry type ${JSON.stringify(String.fromCharCode(typeflag))}`);
    }
    // Only regular files carry data; a size elsewhere would make our block walk and GNU tar's disagree.
    if (kind !== 'file' && size !== 0) throw badEntry(name, `a ${kind} entry with data (size ${size})`);
    this.skipPadding = (BLOCK - (size % BLOCK)) % BLOCK;
    this.skip = size + this.skipPadding;

    this.onEntry(name, kind, linkname, size, { uid, gid, mtime });
  }

  private onEntry(name: string, kind: EntryKind | 'hardlink', linkname: string, size: number, meta: { uid: number; gid: number; mtime: number }): void {
    const parts = splitMemberName(name);
    if (parts.length === 0) {
      if (kind !== 'dir') throw badEntry(name, 'the layer root must be a directory');
      this.inodes++;
      return;
    }
    // Anything below a ".wh." component is aufs metadata; GNU tar is told to exclude it.
    const whIndex = parts.findIndex((p) => p.startsWith(WHITEOUT_PREFIX));
    if (whIndex >= 0 && whIndex < parts.length - 1) return;

    const base = parts[parts.length - 1]!;
    const parent = this.resolveDir(name, parts.slice(0, -1));
    const canonical = parent ? `${parent}/${base}` : base;

    if (base.startsWith(WHITEOUT_PREFIX)) {
      if (base === OPAQUE_MARKER) {
        this.opaqueDirs.add(parent);
      } else if (!base.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) {
        const hidden = base.slice(WHITEOUT_PREFIX.length);
        if (hidden === '' || hidden === '.' || hidden === '..') throw badEntry(name, 'invalid whiteout name');
        this.whiteouts.push({ path: parent ? `${parent}/${hidden}` : hidden, ...meta });
      }
      return;
    }

    const existing = this.tree.get(canonical);
    let node: TreeNode;
    if (kind === 'hardlink') {
      const targetParts = splitMemberName(linkname, name);
      if (targetParts.length === 0) throw badEntry(name, 'hard link to the layer root');
      const targetParent = this.resolveDir(name, targetParts.slice(0, -1));
      const targetBase = targetParts[targetParts.length - 1]!;
      const targetPath = targetParent ? `${targetParent}/${targetBase}` : targetBase;
      const target = this.tree.get(targetPath);
      if (!target) throw badEntry(name, `hard link target ${JSON.stringify(latin1ToDisplay(linkname))} is not an earlier entry of the layer`);
      if (target.kind === 'dir') throw badEntry(name, 'hard link to a directory');
      if (targetPath === canonical) throw badEntry(name, 'hard link to itself');
      node = target;
    } else {
      node = kind === 'symlink' ? { kind, target: linkname } : { kind };
      this.inodes++;
      if (kind === 'file') this.unpackedBytes += size;
    }
    if (existing) {
      if (existing.kind === 'dir' && node.kind !== 'dir') throw badEntry(name, 'replaces a directory of the same layer');
      if (existing.kind === 'symlink' && node.kind === 'dir') throw badEntry(name, 'directory replaces a symlink of the same layer');
      if (existing.kind === 'dir' && node.kind === 'dir') this.inodes--; // same directory again
    }
    this.tree.set(canonical, node);
  }

  /**
   * The canonical layer-relative path of a directory given as components, walking through symlinks of this
   * layer only when they are relative and free of ".." (GNU tar creates only those before the end).
   */
  private resolveDir(entryName: string, parts: string[]): string {
    const out: string[] = [];
    const queue = parts.slice();
    let hops = 0;
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') throw badEntry(entryName, 'path escapes the layer through a symlink');
      out.push(c);
      const key = out.join('/');
      const node = this.tree.get(key);
      if (!node) {
        // A parent without its own entry: tar creates it as a directory.
        this.tree.set(key, { kind: 'dir' });
        this.inodes++;
        continue;
      }
      if (node.kind === 'dir') continue;
      if (node.kind !== 'symlink') throw badEntry(entryName, `parent ${JSON.stringify(latin1ToDisplay(out.join('/')))} is not a directory`);
      if (!isContainedSymlink(node.target!) || ++hops > MAX_SYMLINK_HOPS) {
        throw badEntry(entryName, `path goes through symlink ${JSON.stringify(latin1ToDisplay(out.join('/')))} -> ${JSON.stringify(latin1ToDisplay(node.target!))}`);
      }
      out.pop();
      queue.unshift(...node.target!.split('/'));
    }
    return out.join('/');
  }
}

function abortedError(signal: AbortSignal): NodeletError {
  const reason: unknown = signal.reason;
  if (reason instanceof NodeletError) return reason;
  return deadlineExceeded('layer unpack: cancelled or deadline exceeded');
}

/** Layer-relative latin1 path → filesystem path Buffer (byte exact). */
function fsPathOf(root: string, rel: string): Buffer {
  return rel ? Buffer.concat([Buffer.from(root + '/'), Buffer.from(rel, 'latin1')]) : Buffer.from(root);
}

/** Makes sure every component of rel is a real directory (creating missing ones 0755), never following a symlink. */
async function ensureRealDir(root: string, rel: string, modifiedParents: Set<string>): Promise<void> {
  if (!rel) return;
  const parts = rel.split('/');
  for (let i = 1; i <= parts.length; i++) {
    const sub = parts.slice(0, i).join('/');
    try {
      const st = await fsp.lstat(fsPathOf(root, sub));
      if (!st.isDirectory()) throw badEntry(sub, 'whiteout parent is not a directory after extraction');
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
      modifiedParents.add(parts.slice(0, i - 1).join('/'));
      await fsp.mkdir(fsPathOf(root, sub), { mode: 0o755 });
    }
  }
}

function utf8Name(rel: string): string {
  const bytes = Buffer.from(rel, 'latin1');
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) throw badEntry(rel, 'whiteout name is not valid UTF-8');
  return text;
}

/** getfattr/setfattr dump escaping: octal for anything outside printable ASCII, space and backslash. */
function escapeAttrPath(rel: string): string {
  let out = '';
  for (const ch of rel) {
    const code = ch.charCodeAt(0);
    out += code <= 0x20 || code >= 0x7f || ch === '\\' ? `\\${code.toString(8).padStart(3, '0')}` : ch;
  }
  return out;
}

/** Turns the collected OCI whiteouts into overlayfs form inside destDir (which GNU tar has fully written). */
async function applyWhiteouts(destDir: string, scanner: TarLayerScanner): Promise<number> {
  if (scanner.whiteouts.length === 0 && scanner.opaqueDirs.size === 0) return 0;
  const modifiedParents = new Set<string>();
  const devices: WhiteoutRecord[] = [];
  const opaque = new Set(scanner.opaqueDirs);
  for (const w of scanner.whiteouts) {
    const slash = w.path.lastIndexOf('/');
    const parent = slash < 0 ? '' : w.path.slice(0, slash);
    await ensureRealDir(destDir, parent, modifiedParents);
    try {
      const st = await fsp.lstat(fsPathOf(destDir, w.path));
      // The layer re-created the name itself: that entry already hides the lower one; a directory must also hide
      // the lower directory's contents.
      if (st.isDirectory()) opaque.add(w.path);
      continue;
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
    }
    devices.push(w);
    modifiedParents.add(parent);
  }
  for (const dir of opaque) await ensureRealDir(destDir, dir, modifiedParents);

  const parentTimes = new Map<string, { atime: Date; mtime: Date }>();
  for (const dir of modifiedParents) {
    const st = await fsp.lstat(fsPathOf(destDir, dir));
    parentTimes.set(dir, { atime: st.atime, mtime: st.mtime });
  }

  if (devices.length > 0) {
    // One GNU tar run creates all the 0:0 character devices with the whiteouts' owners and times.
    // tar-stream only when a layer has whiteout devices to make.
    const { pack: tarPack } = await import('tar-stream');
    const packer = tarPack();
    const extractor = spawnChild('tar', ['-x', '-f', '-', '-C', destDir, '--numeric-owner', '--same-owner', '--same-permissions'], {
      stdin: 'pipe',
      stdout: 'ignore',
      stderr: 'pipe',
    });
    for (const w of devices) {
      packer.entry({
        name: utf8Name(w.path),
        type: 'character-device',
        devmajor: 0,
        devminor: 0,
        mode: 0,
        uid: w.uid,
        gid: w.gid,
        mtime: new Date((Number.isFinite(w.mtime) ? w.mtime : 0) * 1000),
      });
    }
    packer.finalize();
    const [piped, result] = await Promise.allSettled([pipeline(packer as unknown as Readable, extractor.stdin!), extractor]);
    if (result.status === 'rejected') throw internal(`creating whiteout devices failed: ${errorMessage(result.reason)}`);
    if (result.value.exitCode !== 0) throw internal(`creating whiteout devices failed: ${String(result.value.stderr).trim()}`);
    if (piped.status === 'rejected') throw internal(`creating whiteout devices failed: ${errorMessage(piped.reason)}`);
  }

  if (opaque.size > 0) {
    const dump = [...opaque].map((dir) => `# file: ${escapeAttrPath(dir || '.')}\ntrusted.overlay.opaque="y"\n`).join('\n');
    await run('setfattr', ['--restore=-'], { cwd: destDir, input: Buffer.from(dump, 'latin1') });
  }

  for (const [dir, times] of parentTimes) await fsp.utimes(fsPathOf(destDir, dir), times.atime, times.mtime);
  return devices.length;
}

function decompressorFor(blobPath: string, compression: LayerCompression): { source: Readable[]; child?: ReturnType<typeof spawnChild> } {
  switch (compression) {
    case 'gzip':
      return { source: [createReadStream(blobPath, { highWaterMark: 1 << 20 }), createGunzip({ chunkSize: 256 * 1024 })] };
    case 'none':
      return { source: [createReadStream(blobPath, { highWaterMark: 1 << 20 })] };
    case 'zstd': {
      // Node 20 has no zstd in zlib; the zstd binary reads the blob itself.
      const child = spawnChild('zstd', ['-d', '-c', '-q'], { inputFile: blobPath, stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false } });
      return { source: [child.stdout!], child };
    }
    default:
      throw invalidArgument(`unsupported layer compression ${JSON.stringify(compression)}`);
  }
}

/**
 * Unpacks a layer blob into destDir (created here; it must not exist). On any failure destDir is removed.
 */
export async function unpackLayer(
  blobPath: string,
  compression: LayerCompression,
  destDir: string,
  signal?: AbortSignal,
  limits: LayerLimits = DEFAULT_LAYER_LIMITS,
): Promise<UnpackResult> {
  if (signal?.aborted) throw abortedError(signal);
  const started = Date.now();
  await fsp.mkdir(path.dirname(destDir), { recursive: true });
  try {
    await fsp.mkdir(destDir, { mode: 0o755 });
  } catch (err) {
    if (hasCode(err, 'EEXIST')) throw alreadyExists(`layer directory ${destDir} already exists`);
    throw err;
  }
  try {
    const scanner = new TarLayerScanner(layerByteBudget((await fsp.stat(blobPath)).size, limits));
    const { source, child: decompressor } = decompressorFor(blobPath, compression);
    const extractor = spawnChild(
      'tar',
      ['-x', '-f', '-', '-C', destDir, '--numeric-owner', '--same-owner', '--same-permissions', '--xattrs', '--xattrs-include=*',
        // overlay's own xattrs come only from OCI whiteouts, never from layer contents.
        '--xattrs-exclude=trusted.overlay.*', '--exclude=.wh.*',
        // Read to EOF: exiting at the end-of-archive blocks (the scanner sends nothing after them) could
        // close tar's stdin before the pipeline ended it, failing the unpack with "Premature close".
        '--ignore-zeros'],
      { stdin: 'pipe', stdout: 'ignore', stderr: 'pipe' },
    );
    const onAbort = () => {
      extractor.kill('SIGKILL');
      decompressor?.kill('SIGKILL');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let piped: PromiseSettledResult<void>;
    let extracted: PromiseSettledResult<Awaited<typeof extractor>>;
    let decompressed: PromiseSettledResult<unknown> | undefined;
    try {
      const flow = pipeline([...source, scanner, extractor.stdin!], signal ? { signal } : {}).catch((err: unknown) => {
        // A refused entry or a broken source: stop tar before it reads anything more.
        extractor.kill('SIGKILL');
        decompressor?.kill('SIGKILL');
        throw err;
      });
      [piped, extracted, decompressed] = await Promise.allSettled([flow, extractor, decompressor ?? Promise.resolve(undefined)]);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (signal?.aborted) throw abortedError(signal);
    // zstd exiting by itself with an error explains a truncated stream better than the scanner can.
    const zstdResult = decompressed?.status === 'fulfilled' ? (decompressed.value as { exitCode?: number; stderr?: unknown } | undefined) : undefined;
    if (zstdResult && zstdResult.exitCode !== undefined && zstdResult.exitCode !== 0) {
      throw invalidArgument(`layer blob ${blobPath} is not valid zstd: ${String(zstdResult.stderr).trim()}`);
    }
    if (piped.status === 'rejected' && piped.reason instanceof NodeletError) throw piped.reason;
    if (piped.status === 'rejected') {
      const err: unknown = piped.reason;
      if (hasCode(err, 'Z_DATA_ERROR') || hasCode(err, 'Z_BUF_ERROR')) throw invalidArgument(`layer blob ${blobPath} is not valid gzip: ${errorMessage(err)}`);
    }
    if (extracted.status === 'rejected') throw internal(`tar failed unpacking ${blobPath}: ${errorMessage(extracted.reason)}`);
    if (extracted.value.exitCode !== 0) throw internal(`tar failed unpacking ${blobPath}: ${String(extracted.value.stderr).trim().slice(0, 2000)}`);
    if (piped.status === 'rejected') throw internal(`unpacking layer ${blobPath}: ${errorMessage(piped.reason)}`, piped.reason);

    const devices = await applyWhiteouts(destDir, scanner);
    const result: UnpackResult = { diffId: scanner.diffId, unpackedBytes: scanner.unpackedBytes, inodes: scanner.inodes + devices };
    logger().debug({ blob: blobPath, diffId: result.diffId, tarBytes: scanner.totalBytes, ms: Date.now() - started }, 'layer unpacked');
    return result;
  } catch (err) {
    await fsp.rm(destDir, { recursive: true, force: true }).catch((rmErr: unknown) => {
      logger().warn({ dir: destDir, err: errorMessage(rmErr) }, 'removing a failed layer directory');
    });
    throw err;
  }
}
