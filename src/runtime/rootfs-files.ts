// Reading a file of a container's root filesystem on the host, as the container would see it: an image
// controls every symlink in it, so nothing here may follow a link out of the rootfs, block on a FIFO
// or device, or read without bound.
import { promises as fsp, constants as fsConstants, type Stats } from 'node:fs';
import path from 'node:path';
import { hasCode, invalidArgument } from '../common/errors.js';

/** Symlinks followed in one lookup before giving up (Linux's own limit). */
const MAX_SYMLINKS = 40;
/** Default cap for files read on the host on the container's behalf (/etc/passwd, /etc/group). */
export const ROOTFS_FILE_MAX_BYTES = 1024 * 1024;

/**
 * The host path of `containerPath` inside `rootfs`, with every symlink resolved relative to the rootfs
 * root and ".." clamped at it; undefined when some component does not exist (or is not a directory).
 */
export async function resolveInRootfs(rootfs: string, containerPath: string): Promise<string | undefined> {
  const root = path.resolve(rootfs);
  const resolved: string[] = [];
  const pending = containerPath.split('/').filter((c) => c && c !== '.');
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop(); // at the root, ".." is the root
      continue;
    }
    const here = path.join(root, ...resolved, part);
    let st;
    try {
      st = await fsp.lstat(here);
    } catch (err) {
      if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) return undefined;
      throw err;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw invalidArgument(`${containerPath} in the container: too many levels of symbolic links`);
      const target = await fsp.readlink(here);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((c) => c && c !== '.'));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) return undefined;
    resolved.push(part);
  }
  return path.join(root, ...resolved);
}

/**
 * The contents of a regular file of the container's rootfs, undefined when absent. A FIFO, device,
 * socket or directory there, or a file over maxBytes, is refused with an error naming the file.
 */
export async function readRootfsFile(rootfs: string, containerPath: string, maxBytes = ROOTFS_FILE_MAX_BYTES): Promise<string | undefined> {
  const hostPath = await resolveInRootfs(rootfs, containerPath);
  if (!hostPath) return undefined;
  return readRegularFile(hostPath, containerPath, maxBytes);
}

/** Said by readLayeredFile when only the mounted overlay can answer (a symlink on the way, unknown opaque dirs). */
export const NEEDS_MOUNT = Symbol('needs the rootfs mounted');

/**
 * A file of an image as its overlay rootfs would show it, read from the layer trees (top first) without
 * mounting them: the topmost entry of each name decides, a whiteout (0:0 character device) hides, a
 * directory merges with the directories below it down to an opaque one. NEEDS_MOUNT when a symbolic link
 * is on the way (resolving it across layers is the kernel's job) or a layer's opaque directories are unknown.
 */
export async function readLayeredFile(
  layers: Array<{ dir: string; opaqueDirs?: string[] }>,
  containerPath: string,
  maxBytes = ROOTFS_FILE_MAX_BYTES,
): Promise<string | undefined | typeof NEEDS_MOUNT> {
  if (layers.some((l) => !l.opaqueDirs)) return NEEDS_MOUNT;
  const parts = containerPath.split('/').filter((c) => c && c !== '.');
  if (parts.length === 0 || parts.includes('..')) return NEEDS_MOUNT;
  let live = layers;
  for (let i = 0; i < parts.length; i++) {
    const rel = parts.slice(0, i + 1).join('/');
    const entries: Array<{ layer: (typeof layers)[number]; st: Stats }> = [];
    for (const layer of live) {
      const st = await fsp.lstat(path.join(layer.dir, rel)).catch((err: unknown) => {
        if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) return undefined;
        throw err;
      });
      if (st) entries.push({ layer, st });
    }
    const top = entries[0];
    if (!top || isWhiteout(top.st)) return undefined;
    if (top.st.isSymbolicLink()) return NEEDS_MOUNT;
    if (i === parts.length - 1) return readRegularFile(path.join(top.layer.dir, rel), containerPath, maxBytes);
    if (!top.st.isDirectory()) return undefined;
    // The merged directory: this layer's and the directories right below it, down to an opaque one.
    const merged: typeof layers = [];
    for (const e of entries) {
      if (!e.st.isDirectory()) break;
      merged.push(e.layer);
      if (e.layer.opaqueDirs!.includes(rel)) break;
    }
    live = merged;
  }
  return undefined;
}

function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** A regular file on the host read for the container (`containerPath` names it in errors), undefined when absent. */
async function readRegularFile(hostPath: string, containerPath: string, maxBytes: number): Promise<string | undefined> {
  // Judged before any open: opening a device node runs its driver (a watchdog arms on open).
  let seen;
  try {
    seen = await fsp.lstat(hostPath);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
  if (!seen.isFile()) throw invalidArgument(`${containerPath} in the image is not a regular file (${fileKind(seen)})`);
  let handle: fsp.FileHandle;
  try {
    // O_NOFOLLOW: the path was resolved above, a link appearing since is refused, not followed.
    // O_NONBLOCK: opening a FIFO without a writer must not wait for one.
    handle = await fsp.open(hostPath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    if (hasCode(err, 'ELOOP')) throw invalidArgument(`${containerPath} in the image is a symbolic link that changed while it was read`);
    throw err;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile() || st.ino !== seen.ino || st.dev !== seen.dev) throw invalidArgument(`${containerPath} in the image changed while it was read`);
    if (st.size > maxBytes) throw invalidArgument(`${containerPath} in the image is ${st.size} bytes, more than the ${maxBytes} allowed`);
    const buf = Buffer.alloc(maxBytes + 1);
    let filled = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, filled, buf.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
      if (filled > maxBytes) throw invalidArgument(`${containerPath} in the image is more than the ${maxBytes} bytes allowed`);
    }
    return buf.toString('utf8', 0, filled);
  } finally {
    await handle.close();
  }
}

function fileKind(st: { isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isSocket(): boolean; isDirectory(): boolean }): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isDirectory()) return 'a directory';
  return 'not a regular file';
}
