// Image volumes (KEP-4639): a pulled image's layers mounted read-only into a container, optionally one
// directory of it (image_sub_path). Deciding is pure (requests, the mounts handed to the spec builder,
// the mounts reported back); resolving a sub path and mounting act on the host.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { invalidArgument, hasCode } from '../common/errors.js';
import { ensureDir } from '../common/fsutil.js';
import { mountReadOnlyOverlay } from './mounts.js';
import type { Mount__Output } from '../cri/generated/runtime/v1/Mount.js';

/** One image volume of a container, as kept in its record. */
export interface ImageVolume {
  /** Index of the mount in config.mounts. */
  index: number;
  /** The image as the client named it (Mount.image.image). */
  image: string;
  /** The resolved image id; it keeps the image in use and is reported as Mount.image.image_ref. */
  imageId: string;
  subPath: string;
  /** Read-only overlay of the image's layers on the host, under the container's directory. */
  mountPoint: string;
  /** What is bind-mounted into the container: the mount point, or the sub path resolved inside it. */
  source?: string;
}

export interface ImageVolumeRequest {
  index: number;
  image: string;
  subPath: string;
}

export function isImageVolume(m: Mount__Output): boolean {
  return Boolean(m.image?.image);
}

/** Validates the image mounts of a container config (refusals name the field) and returns them in order. */
export function imageVolumeRequests(mounts: readonly Mount__Output[]): ImageVolumeRequest[] {
  const out: ImageVolumeRequest[] = [];
  mounts.forEach((m, index) => {
    if (!isImageVolume(m)) return;
    const field = `mounts[${index}]`;
    if (m.host_path) throw invalidArgument(`${field}: host_path and image are mutually exclusive (host_path ${m.host_path}, image ${m.image!.image})`);
    // The KEP defines image volumes as read-only; containerd and CRI-O refuse a writable one too.
    if (!m.readonly) throw invalidArgument(`${field}.readonly: image volumes are read-only; readonly must be true (image ${m.image!.image})`);
    if (m.recursive_read_only) throw invalidArgument(`${field}.recursive_read_only is not supported by this runtime`);
    const subPath = m.image_sub_path ?? '';
    if (subPath) {
      if (subPath.startsWith('/')) throw invalidArgument(`${field}.image_sub_path "${subPath}" must be a path relative to the image root`);
      if (subPath.split('/').includes('..')) throw invalidArgument(`${field}.image_sub_path "${subPath}" must not contain ".."`);
      if (subPath.includes('\0')) throw invalidArgument(`${field}.image_sub_path contains a NUL byte`);
    }
    out.push({ index, image: m.image!.image, subPath });
  });
  return out;
}

/** The mounts for the spec builder: each image mount becomes a read-only bind of its resolved source. */
export function mountsWithImageSources(mounts: readonly Mount__Output[], volumes: readonly ImageVolume[]): Mount__Output[] {
  const byIndex = new Map(volumes.map((v) => [v.index, v]));
  return mounts.map((m, i) => {
    const v = byIndex.get(i);
    if (!v) return m;
    if (!v.source) throw new Error(`image volume ${i} has no resolved source`);
    return { ...m, host_path: v.source, image: null, image_sub_path: '', readonly: true };
  });
}

/** The mounts ContainerStatus reports: image mounts carry the image id they resolved to as image.image_ref. */
export function reportedMounts(mounts: readonly Mount__Output[], volumes: readonly ImageVolume[] | undefined): Mount__Output[] {
  if (!volumes?.length) return [...mounts];
  const byIndex = new Map(volumes.map((v) => [v.index, v]));
  return mounts.map((m, i) => {
    const v = byIndex.get(i);
    return v && m.image ? { ...m, image: { ...m.image, image_ref: v.imageId } } : m;
  });
}

const MAX_SYMLINKS = 40;

/**
 * Resolves `subPath` inside `root` as a process chrooted there would: symlinks are followed relative to
 * root (absolute ones restart at root) and ".." stops at root, so nothing outside root is ever reached.
 * The result must be an existing directory. Safe against swaps only because root is our read-only mount.
 */
export async function resolveInRoot(root: string, subPath: string, field = 'image_sub_path', imageName = 'the image'): Promise<string> {
  const resolved: string[] = [];
  const pending = subPath.split('/').filter((c) => c && c !== '.');
  let links = 0;
  while (pending.length) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const here = path.join(root, ...resolved, part);
    let st;
    try {
      st = await fsp.lstat(here);
    } catch (err) {
      if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) throw invalidArgument(`${field} "${subPath}" does not exist in ${imageName} (no /${[...resolved, part].join('/')})`);
      throw err;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw invalidArgument(`${field} "${subPath}": too many levels of symbolic links`);
      const target = await fsp.readlink(here);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((c) => c && c !== '.'));
      continue;
    }
    if (!st.isDirectory()) throw invalidArgument(`${field} "${subPath}" is not a directory in ${imageName} (/${[...resolved, part].join('/')}); only directories can be mounted`);
    resolved.push(part);
  }
  return path.join(root, ...resolved);
}

/**
 * Mounts the image's layers (top first) read-only at mountPoint. Overlay needs two lower dirs when it
 * has no upper one: a single-layer image gets an empty directory beneath it.
 */
export async function mountImageLayers(layerDirs: string[], mountPoint: string, emptyDir: string): Promise<void> {
  let lowers = layerDirs;
  if (layerDirs.length === 1) {
    await ensureDir(emptyDir);
    lowers = [...layerDirs, emptyDir];
  }
  await mountReadOnlyOverlay(lowers, mountPoint);
}
