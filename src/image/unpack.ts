// Unpacks one OCI layer blob into a fresh directory in overlayfs form (whiteouts as 0:0 char devices,
// opaque dirs as trusted.overlay.opaque=y), computing the diff id on the way.
//
// Pipeline: blob → decompressor → TarLayerScanner (hash, validate every header, count) → LayerExtractor (node:fs,
// in this process). The scanner hands on an entry only once its header is validated and resolved to a canonical
// path whose every parent is a real directory of the layer, so the extractor never follows a symlink. Entries node:fs
// cannot make (devices, fifos, whiteouts, xattrs, opaque markers) are collected and made at the end of the layer by
// one batched child, only when the layer has any.
import { closeSync, createReadStream, fchmodSync, fchownSync, futimesSync, linkSync, lchownSync, lstatSync, lutimesSync, mkdirSync, openSync, promises as fsp, chmodSync, chownSync, constants as fsConstants, symlinkSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import path from 'node:path';
import { createHash, type Hash } from 'node:crypto';
import { Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { run, spawnChild } from '../common/exec.js';
import { NodeletError, alreadyExists, deadlineExceeded, errorMessage, hasCode, internal, invalidArgument } from '../common/errors.js';
import { logger } from '../common/log.js';
import { crashPoint } from '../common/crash-point.js';
import { doneReading, releaseArrayBuffer } from '../common/release-buffer.js';

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
  /** Child processes the unpack ran besides a zstd decompressor: 1 when the layer has devices, fifos, whiteouts or xattrs, else 0. */
  childProcesses: number;
  /** Directories (relative, '' the root) marked opaque: they hide what lower layers have there. */
  opaqueDirs: string[];
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

/** One entry of the layer as the extractor makes it; paths are canonical and layer-relative (latin1 = raw bytes). */
export interface LayerEntry {
  /** '' is the layer root. */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  /** Permission bits incl. setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch (may be fractional). */
  mtime: number;
  size: number;
  /** Symlink: the raw target. Hard link: the canonical path of the earlier entry. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** From PAX SCHILY.xattr.* records (overlay's own excluded); values are raw bytes in latin1. */
  xattrs: Map<string, string>;
  /** A parent directory the tar names no entry for: made 0755 root-owned, no metadata of its own. */
  implicit?: boolean;
}

/**
 * What the scanner hands the extractor: an entry, a piece of the current file entry's data, or the memory of an
 * input chunk the scanner is done with (freed once the data before it is written).
 */
export type LayerEvent = { kind: 'entry'; entry: LayerEntry } | { kind: 'data'; chunk: Buffer } | { kind: 'release'; memory: ArrayBufferLike };

const XATTR_PREFIX = 'SCHILY.xattr.';
/** xattr names go into a setfattr dump line by line: printable ASCII without '=' only. */
const XATTR_NAME_RE = /^[\x21-\x3c\x3e-\x7e]+$/;

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
 * Streams the uncompressed tar: hashes every byte, validates each header, models the tree the extraction will
 * produce, collects whiteouts and opaque markers, and emits LayerEvents (object mode) for the extractor.
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
  /** The current member's data goes to the extractor (a file entry it makes). */
  private emitData = false;

  /**
   * releaseInput: the input chunks are nobody else's (a decompressor's output), so the memory of each that fills
   * its buffer to the end (the decompressor has moved on to a new one) is freed as soon as it is extracted.
   */
  constructor(
    private readonly budget: { bytes: number; why: string } = { bytes: Number.POSITIVE_INFINITY, why: '' },
    private readonly releaseInput = false,
  ) {
    super({ writableHighWaterMark: 1 << 20, readableObjectMode: true, readableHighWaterMark: 256 });
  }

  get diffId(): string {
    if (!this.digest) throw internal('layer diff id read before the stream ended');
    return this.digest;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    // Checked before a byte of the chunk goes on: nothing past the budget reaches the disk.
    if (this.totalBytes + chunk.length > this.budget.bytes) return cb(invalidArgument(`layer ${this.budget.why}`));
    if (this.totalBytes > 0) crashPoint('pull.mid-unpack'); // the first chunk went on to the extractor
    this.hash.update(chunk);
    this.totalBytes += chunk.length;
    if (this.ended) return cb(); // bytes after the end-of-archive blocks are only hashed
    try {
      let pos = 0;
      while (pos < chunk.length) {
        if (this.skip > 0) {
          const n = Math.min(this.skip, chunk.length - pos);
          const data = Math.min(n, this.skip - this.skipPadding);
          if (data > 0 && this.emitData) this.push({ kind: 'data', chunk: chunk.subarray(pos, pos + data) } satisfies LayerEvent);
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
          this.ended = true;
          break;
        }
        this.onHeader(this.header);
      }
    } catch (err) {
      return cb(err as Error);
    }
    if (this.releaseInput && chunk.byteOffset + chunk.length === chunk.buffer.byteLength) {
      this.push({ kind: 'release', memory: chunk.buffer } satisfies LayerEvent);
    }
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
      // padding or the end-of-archive blocks (umoci writes such layers): so do we.
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

    const uid = paxValue('uid') !== undefined ? Number(paxValue('uid')) : parseNumeric(block, 108, 8);
    const gid = paxValue('gid') !== undefined ? Number(paxValue('gid')) : parseNumeric(block, 116, 8);
    const mtimeValue = Number(paxValue('mtime') ?? parseNumeric(block, 136, 12));
    const mtime = Number.isFinite(mtimeValue) ? mtimeValue : 0;
    const mode = parseNumeric(block, 100, 8);
    const xattrs = new Map<string, string>();
    for (const records of [this.paxGlobal, pax]) {
      for (const [key, value] of records) {
        if (!key.startsWith(XATTR_PREFIX)) continue;
        const attr = key.slice(XATTR_PREFIX.length);
        // overlay's own xattrs come only from OCI whiteouts, never from layer contents.
        if (attr.startsWith('trusted.overlay.')) continue;
        if (!XATTR_NAME_RE.test(attr)) throw badEntry(name, `unsupported xattr name ${JSON.stringify(latin1ToDisplay(attr))}`);
        xattrs.set(attr, value);
      }
    }

    let kind: EntryKind | 'hardlink';
    let type: LayerEntry['type'];
    switch (typeflag) {
      case 0x30: // '0'
      case 0x00:
      case 0x37: // '7' contiguous: a regular file
        kind = type = name.endsWith('/') ? 'dir' : 'file';
        break;
      case 0x31:
        kind = type = 'hardlink';
        break;
      case 0x32:
        kind = type = 'symlink';
        break;
      case 0x33:
        kind = 'device';
        type = 'char';
        break;
      case 0x34:
        kind = 'device';
        type = 'block';
        break;
      case 0x36:
        kind = 'device';
        type = 'fifo';
        break;
      case 0x35:
        kind = type = 'dir';
        break;
      default:
        throw badEntry(name, `unsupported tar entry type ${JSON.stringify(String.fromCharCode(typeflag))}`);
    }
    // Only regular files carry data; a size elsewhere would make our block walk and other readers' disagree.
    if (kind !== 'file' && size !== 0) throw badEntry(name, `a ${kind} entry with data (size ${size})`);
    this.skipPadding = (BLOCK - (size % BLOCK)) % BLOCK;
    this.skip = size + this.skipPadding;
    this.emitData = false;

    for (const [what, value] of [['uid', uid], ['gid', gid], ['mode', mode]] as const) {
      if (!Number.isSafeInteger(value) || value < 0) throw badEntry(name, `invalid ${what}`);
    }
    const devmajor = type === 'char' || type === 'block' ? parseNumeric(block, 329, 8) : 0;
    const devminor = type === 'char' || type === 'block' ? parseNumeric(block, 337, 8) : 0;
    if (!Number.isSafeInteger(devmajor) || !Number.isSafeInteger(devminor) || devmajor < 0 || devminor < 0) throw badEntry(name, 'invalid device number');
    this.onEntry(name, kind, linkname, size, { path: '', type, mode: mode & 0o7777, uid, gid, mtime, size, linkname, devmajor, devminor, xattrs });
  }

  private emitEntry(entry: LayerEntry): void {
    this.push({ kind: 'entry', entry } satisfies LayerEvent);
  }

  private onEntry(name: string, kind: EntryKind | 'hardlink', linkname: string, size: number, entry: LayerEntry): void {
    const meta = { uid: entry.uid, gid: entry.gid, mtime: entry.mtime };
    const parts = splitMemberName(name);
    if (parts.length === 0) {
      if (kind !== 'dir') throw badEntry(name, 'the layer root must be a directory');
      this.inodes++;
      this.emitEntry(entry); // the layer root's own mode, owner and times
      return;
    }
    // Anything below a ".wh." component is aufs metadata: not extracted.
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
    let targetPath = '';
    if (kind === 'hardlink') {
      const targetParts = splitMemberName(linkname, name);
      if (targetParts.length === 0) throw badEntry(name, 'hard link to the layer root');
      const targetParent = this.resolveDir(name, targetParts.slice(0, -1));
      const targetBase = targetParts[targetParts.length - 1]!;
      targetPath = targetParent ? `${targetParent}/${targetBase}` : targetBase;
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
    this.emitEntry({ ...entry, path: canonical, ...(kind === 'hardlink' ? { linkname: targetPath } : {}) });
    this.emitData = kind === 'file' && size > 0;
  }

  /**
   * The canonical layer-relative path of a directory given as components, walking through symlinks of this
   * layer only when they are relative and free of ".." (so the path stays inside the layer).
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
        // A parent without its own entry: made as a plain directory.
        this.tree.set(key, { kind: 'dir' });
        this.inodes++;
        this.emitEntry({ path: key, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, linkname: '', devmajor: 0, devminor: 0, xattrs: new Map(), implicit: true });
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
  if (!Buffer.from(text, 'utf8').equals(bytes)) throw badEntry(rel, 'name is not valid UTF-8 (needed for whiteouts, devices and fifos)');
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

/** Longest stretch the extractor's synchronous fs calls may hold the event loop before it yields. */
const EXTRACT_SLICE_MS = 4;
const CREATE_FILE_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

/**
 * Makes the scanner's entries with node:fs, in this process. Every path it gets is canonical (each parent a real
 * directory it made), and it never opens or links through a final symlink (O_EXCL | O_NOFOLLOW, unlink first).
 * Directories get their metadata at the end (their contents change their times); devices, fifos, hard links to
 * them and xattrs are collected for the batched child (finishLayer).
 */
export class LayerExtractor extends Writable {
  /** Devices, fifos and hard links to them, by path, in tar order. */
  readonly specials = new Map<string, LayerEntry>();
  readonly xattrs = new Map<string, Map<string, string>>();
  /** Directories with an entry of their own, by path: their final mode, owner and times. */
  readonly dirs = new Map<string, LayerEntry>();
  private file: { fd: number; entry: LayerEntry; left: number } | null = null;
  private sliceStarted = performance.now();

  constructor(private readonly root: string) {
    super({ objectMode: true, highWaterMark: 256 });
  }

  override _write(event: LayerEvent, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    try {
      if (event.kind === 'data') this.writeData(event.chunk);
      else if (event.kind === 'release') return (releaseArrayBuffer(event.memory), cb()); // written synchronously: nothing reads it now
      else this.make(event.entry);
    } catch (err) {
      return cb(err instanceof NodeletError ? err : this.fsError(event, err));
    }
    if (performance.now() - this.sliceStarted < EXTRACT_SLICE_MS) return cb();
    setImmediate(() => {
      this.sliceStarted = performance.now();
      cb();
    });
  }

  override _final(cb: (err?: Error | null) => void): void {
    // The scanner refuses a tar ending inside a member's data, so an open file here is our bug.
    if (this.file) return cb(internal(`layer entry ${JSON.stringify(latin1ToDisplay(this.file.entry.path))}: data ended early`));
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.file) {
      try {
        closeSync(this.file.fd);
      } catch {
        // closing a file of a layer dir about to be removed
      }
      this.file = null;
    }
    cb(err);
  }

  private fsError(event: LayerEvent, err: unknown): NodeletError {
    const name = event.kind === 'entry' ? event.entry.path : (this.file?.entry.path ?? '');
    return internal(`layer entry ${JSON.stringify(latin1ToDisplay(name))}: ${errorMessage(err)}`, err);
  }

  private writeData(chunk: Buffer): void {
    const f = this.file;
    if (!f || chunk.length > f.left) throw internal('layer data without a file entry');
    for (let off = 0; off < chunk.length; ) off += writeSync(f.fd, chunk, off, chunk.length - off);
    f.left -= chunk.length;
    if (f.left === 0) this.finishFile();
  }

  private finishFile(): void {
    const { fd, entry } = this.file!;
    this.file = null;
    try {
      // Owner before mode: chown clears setuid/setgid.
      fchownSync(fd, entry.uid, entry.gid);
      fchmodSync(fd, entry.mode);
      futimesSync(fd, entry.mtime, entry.mtime);
    } finally {
      closeSync(fd);
    }
  }

  private make(entry: LayerEntry): void {
    const p = fsPathOf(this.root, entry.path);
    this.specials.delete(entry.path);
    this.xattrs.delete(entry.path);
    if (entry.xattrs.size > 0 && entry.type !== 'hardlink') this.xattrs.set(entry.path, entry.xattrs);
    switch (entry.type) {
      case 'dir':
        if (entry.path !== '') {
          try {
            mkdirSync(p, entry.implicit ? 0o755 : 0o700);
          } catch (err) {
            if (!hasCode(err, 'EEXIST')) throw err;
            // A directory again keeps its contents; a file or device of the same layer gives way (the scanner
            // refuses a directory over a symlink).
            if (!lstatSync(p).isDirectory()) {
              unlinkSync(p);
              mkdirSync(p, 0o700);
            }
          }
        }
        if (!entry.implicit) this.dirs.set(entry.path, entry);
        return;
      case 'file': {
        const fd = this.replacing(p, () => openSync(p, CREATE_FILE_FLAGS, 0o600));
        this.file = { fd, entry, left: entry.size };
        if (entry.size === 0) this.finishFile();
        return;
      }
      case 'symlink':
        this.replacing(p, () => symlinkSync(Buffer.from(entry.linkname, 'latin1'), p));
        lchownSync(p, entry.uid, entry.gid);
        lutimesSync(p, entry.mtime, entry.mtime);
        return;
      case 'hardlink':
        // A link to a device or fifo not made yet is made by the batched child, after its target.
        if (this.specials.has(entry.linkname)) {
          this.removeNonDir(p);
          this.specials.set(entry.path, entry);
          return;
        }
        // link(2) does not follow a symlink target: the link names the symlink itself, as tar's does.
        this.replacing(p, () => linkSync(fsPathOf(this.root, entry.linkname), p));
        return;
      default:
        this.removeNonDir(p);
        this.specials.set(entry.path, entry);
    }
  }

  /** Runs create; if the name exists (an earlier entry of the layer, never a directory), unlinks it and runs it again. */
  private replacing<T>(p: Buffer, create: () => T): T {
    try {
      return create();
    } catch (err) {
      if (!hasCode(err, 'EEXIST')) throw err;
    }
    this.removeNonDir(p);
    return create();
  }

  private removeNonDir(p: Buffer): void {
    try {
      if (lstatSync(p).isDirectory()) throw internal('replaces a directory of the same layer');
      unlinkSync(p);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
    }
  }
}

/** Runs in the layer dir: $2 = "tar" when a tar of devices/fifos/whiteouts is on stdin; $3 = an xattr dump file or "". */
const SPECIALS_SCRIPT =
  'set -e; cd -- "$1"; if [ "$2" = tar ]; then tar -x -f - --numeric-owner --same-owner --same-permissions; fi; ' +
  'if [ -n "$3" ]; then setfattr -h --restore="$3"; fi';

function tarTypeOf(entry: LayerEntry): 'character-device' | 'block-device' | 'fifo' | 'link' {
  switch (entry.type) {
    case 'char':
      return 'character-device';
    case 'block':
      return 'block-device';
    case 'fifo':
      return 'fifo';
    default:
      return 'link';
  }
}

/**
 * The end of a layer, once every entry is made: OCI whiteouts into overlayfs form, then ONE child (only when the
 * layer needs it) makes the devices, fifos and whiteout devices and sets the xattrs and opaque markers, then the
 * directories get their own mode, owner and times. Returns the number of whiteout devices made.
 */
async function finishLayer(destDir: string, scanner: TarLayerScanner, extractor: LayerExtractor, signal?: AbortSignal): Promise<{ devices: number; childProcesses: number; opaqueDirs: string[] }> {
  const modifiedParents = new Set<string>();
  const devices: WhiteoutRecord[] = [];
  const opaque = new Set(scanner.opaqueDirs);
  for (const w of scanner.whiteouts) {
    const slash = w.path.lastIndexOf('/');
    const parent = slash < 0 ? '' : w.path.slice(0, slash);
    await ensureRealDir(destDir, parent, modifiedParents);
    // The layer re-created the name itself: that entry already hides the lower one.
    if (extractor.specials.has(w.path)) continue;
    try {
      const st = await fsp.lstat(fsPathOf(destDir, w.path));
      // A re-created directory must also hide the lower directory's contents.
      if (st.isDirectory()) opaque.add(w.path);
      continue;
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
    }
    devices.push(w);
    modifiedParents.add(parent);
  }
  for (const dir of opaque) await ensureRealDir(destDir, dir, modifiedParents);

  // Parents without an entry of their own keep the times they had; the others get theirs from the tar below.
  const parentTimes = new Map<string, { atime: Date; mtime: Date }>();
  for (const dir of modifiedParents) {
    if (extractor.dirs.has(dir)) continue;
    const st = await fsp.lstat(fsPathOf(destDir, dir));
    parentTimes.set(dir, { atime: st.atime, mtime: st.mtime });
  }

  const needsChild = devices.length > 0 || extractor.specials.size > 0 || extractor.xattrs.size > 0 || opaque.size > 0;
  if (needsChild) {
    if (signal?.aborted) throw abortedError(signal);
    let tarInput: Buffer | undefined;
    if (devices.length > 0 || extractor.specials.size > 0) {
      // tar-stream only when a layer has such entries.
      const { pack: tarPack } = await import('tar-stream');
      const packer = tarPack();
      const chunks: Buffer[] = [];
      packer.on('data', (c: unknown) => {
        chunks.push(c as Buffer);
      });
      const packed = new Promise<void>((resolve, reject) => {
        packer.on('end', resolve);
        packer.on('error', reject);
      });
      for (const w of devices) {
        packer.entry({ name: utf8Name(w.path), type: 'character-device', devmajor: 0, devminor: 0, mode: 0, uid: w.uid, gid: w.gid, mtime: new Date(w.mtime * 1000) });
      }
      for (const e of extractor.specials.values()) {
        const type = tarTypeOf(e);
        packer.entry({
          name: utf8Name(e.path),
          type,
          ...(type === 'link' ? { linkname: utf8Name(e.linkname) } : { devmajor: e.devmajor, devminor: e.devminor, mode: e.mode, uid: e.uid, gid: e.gid, mtime: new Date(e.mtime * 1000) }),
        });
      }
      packer.finalize();
      await packed;
      tarInput = Buffer.concat(chunks);
    }
    let dumpFile = '';
    const dump: string[] = [];
    for (const [rel, attrs] of extractor.xattrs) {
      dump.push(`# file: ${escapeAttrPath(rel || '.')}\n${[...attrs].map(([k, v]) => `${k}=0x${Buffer.from(v, 'latin1').toString('hex')}`).join('\n')}\n`);
    }
    for (const dir of opaque) dump.push(`# file: ${escapeAttrPath(dir || '.')}\ntrusted.overlay.opaque="y"\n`);
    try {
      if (dump.length > 0) {
        dumpFile = `${destDir}.xattrs`;
        await fsp.writeFile(dumpFile, dump.join('\n'), { encoding: 'latin1', mode: 0o600 });
      }
      await run('sh', ['-c', SPECIALS_SCRIPT, 'nodelet-layer-specials', destDir, tarInput ? 'tar' : '-', dumpFile], tarInput ? { input: tarInput } : {}).catch((err: unknown) => {
        throw internal(`making a layer's devices, whiteouts and xattrs failed: ${errorMessage(err)}`, err);
      });
    } finally {
      if (dumpFile) await fsp.rm(dumpFile, { force: true });
    }
  }

  if (signal?.aborted) throw abortedError(signal);
  // Order does not matter: a directory's metadata leaves its parent's times alone.
  for (const [rel, e] of extractor.dirs) {
    const p = fsPathOf(destDir, rel);
    chownSync(p, e.uid, e.gid);
    chmodSync(p, e.mode);
    utimesSync(p, e.mtime, e.mtime);
  }
  for (const [dir, times] of parentTimes) await fsp.utimes(fsPathOf(destDir, dir), times.atime, times.mtime);
  return { devices: devices.length, childProcesses: needsChild ? 1 : 0, opaqueDirs: [...opaque] };
}

/** A gunzip that tells doneReading when it is through with each input chunk (a download's batch: see the registry client). */
function gunzipDoneReading(): Transform {
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const transform = gunzip._transform.bind(gunzip);
  gunzip._transform = (chunk: Buffer, encoding, callback) =>
    transform(chunk, encoding, (err, data) => {
      doneReading(chunk);
      callback(err, data);
    });
  return gunzip;
}

/** Where a layer's compressed bytes come from: its blob file, or a stream (the download, as it arrives). */
export type LayerSource = { file: string } | { stream: Readable; size: number; name: string };

function decompressorFor(from: LayerSource, compression: LayerCompression): { source: Readable[]; child?: ReturnType<typeof spawnChild> } {
  const raw = () => ('file' in from ? createReadStream(from.file, { highWaterMark: 1 << 20 }) : from.stream);
  switch (compression) {
    case 'gzip':
      return { source: [raw(), gunzipDoneReading()] };
    case 'none':
      return { source: [raw()] };
    case 'zstd': {
      // Node 20 has no zstd in zlib; the zstd binary reads the blob itself.
      if (!('file' in from)) throw internal('zstd layers unpack from their blob file only');
      const child = spawnChild('zstd', ['-d', '-c', '-q'], { inputFile: from.file, stdout: 'pipe', stderr: 'pipe', buffer: { stdout: false } });
      return { source: [child.stdout!], child };
    }
    default:
      throw invalidArgument(`unsupported layer compression ${JSON.stringify(compression)}`);
  }
}

/**
 * Unpacks a layer blob into destDir (created here; it must not exist). On any failure destDir is removed.
 */
export function unpackLayer(
  blobPath: string,
  compression: LayerCompression,
  destDir: string,
  signal?: AbortSignal,
  limits: LayerLimits = DEFAULT_LAYER_LIMITS,
): Promise<UnpackResult> {
  return unpackLayerFrom({ file: blobPath }, compression, destDir, signal, limits);
}

/** unpackLayer from a file or from a stream of the compressed bytes (gzip or none); the stream's size sets the caps. */
export async function unpackLayerFrom(
  from: LayerSource,
  compression: LayerCompression,
  destDir: string,
  signal?: AbortSignal,
  limits: LayerLimits = DEFAULT_LAYER_LIMITS,
): Promise<UnpackResult> {
  const blobPath = 'file' in from ? from.file : from.name;
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
    const blobSize = 'file' in from ? (await fsp.stat(from.file)).size : from.size;
    const scanner = new TarLayerScanner(layerByteBudget(blobSize, limits), compression === 'gzip');
    const extractor = new LayerExtractor(destDir);
    const { source, child: decompressor } = decompressorFor(from, compression);
    const onAbort = () => decompressor?.kill('SIGKILL');
    signal?.addEventListener('abort', onAbort, { once: true });
    let piped: PromiseSettledResult<void>;
    let decompressed: PromiseSettledResult<unknown> | undefined;
    try {
      const flow = pipeline([...source, scanner, extractor], signal ? { signal } : {}).catch((err: unknown) => {
        // A refused entry or a broken source: stop the decompressor too.
        decompressor?.kill('SIGKILL');
        throw err;
      });
      [piped, decompressed] = await Promise.allSettled([flow, decompressor ?? Promise.resolve(undefined)]);
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
      throw internal(`unpacking layer ${blobPath}: ${errorMessage(err)}`, err);
    }

    const { devices, childProcesses, opaqueDirs } = await finishLayer(destDir, scanner, extractor, signal);
    const result: UnpackResult = { diffId: scanner.diffId, unpackedBytes: scanner.unpackedBytes, inodes: scanner.inodes + devices, childProcesses, opaqueDirs };
    logger().debug({ blob: blobPath, diffId: result.diffId, tarBytes: scanner.totalBytes, childProcesses, ms: Date.now() - started }, 'layer unpacked');
    return result;
  } catch (err) {
    await fsp.rm(destDir, { recursive: true, force: true }).catch((rmErr: unknown) => {
      logger().warn({ dir: destDir, err: errorMessage(rmErr) }, 'removing a failed layer directory');
    });
    throw err;
  }
}
