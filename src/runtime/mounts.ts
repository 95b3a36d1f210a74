// Mounts the runtime owns: container overlay root filesystems, image volumes and pod /dev/shm tmpfs.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '../common/exec.js';
import { ensureDir } from '../common/fsutil.js';
import type { OciMount } from '../oci/types.js';

/** The kernel takes mount options up to one page; leave room for the rest of the string. */
const MOUNT_OPTIONS_MAX = 4000;

/**
 * Runs `mount` with lowerdir entries short enough for one page: paths relative to the layers' common
 * parent (the mount's cwd), or, when even those are too long (deep images), one-character-ish symlinks
 * in a scratch directory beside `target` — overlay resolves them at mount time, so they go right after.
 */
async function mountWithLowers(lowerDirs: string[], target: string, options: (lowers: string) => string): Promise<void> {
  const base = commonParent(lowerDirs);
  const relative = lowerDirs.map((d) => path.relative(base, d)).join(':');
  if (options(relative).length <= MOUNT_OPTIONS_MAX) {
    await run('mount', ['-t', 'overlay', 'overlay', '-o', options(relative), target], { cwd: base, timeoutMs: 30_000 });
    return;
  }
  const links = path.join(path.dirname(path.resolve(target)), `.lowers-${randomBytes(6).toString('hex')}`);
  await fsp.mkdir(links, { mode: 0o700 });
  try {
    const names = lowerDirs.map((_, i) => i.toString(36));
    await Promise.all(lowerDirs.map((d, i) => fsp.symlink(path.resolve(d), path.join(links, names[i]!))));
    const opts = options(names.join(':'));
    if (opts.length > MOUNT_OPTIONS_MAX) throw new Error(`overlay options for ${lowerDirs.length} layers do not fit one page`);
    await run('mount', ['-t', 'overlay', 'overlay', '-o', opts, target], { cwd: links, timeoutMs: 30_000 });
  } finally {
    await fsp.rm(links, { recursive: true, force: true });
  }
}

export async function mountOverlay(lowerDirs: string[], upperDir: string, workDir: string, target: string): Promise<void> {
  await ensureDir(upperDir);
  await ensureDir(workDir);
  await ensureDir(target);
  if (lowerDirs.length === 0) throw new Error('overlay needs at least one lower dir');
  // A single-layer image: overlay needs two lowers without an upper, one with — we always have an upper.
  const upper = path.resolve(upperDir);
  const work = path.resolve(workDir);
  await mountWithLowers(lowerDirs, target, (lowers) => `lowerdir=${lowers},upperdir=${upper},workdir=${work}`);
}

/**
 * The mount mountOverlay makes, as a mount spec for whoever mounts it (absolute paths: no cwd there;
 * containerd shortens a lowerdir list longer than a page itself).
 */
export function overlayMountSpec(lowerDirs: string[], upperDir: string, workDir: string): OciMount {
  if (lowerDirs.length === 0) throw new Error('overlay needs at least one lower dir');
  return {
    destination: '/',
    type: 'overlay',
    source: 'overlay',
    options: [`lowerdir=${lowerDirs.map((d) => path.resolve(d)).join(':')}`, `upperdir=${path.resolve(upperDir)}`, `workdir=${path.resolve(workDir)}`],
  };
}

/** An overlay of lower dirs only (top first; at least two): read-only by construction, nothing to write to. */
export async function mountReadOnlyOverlay(lowerDirs: string[], target: string): Promise<void> {
  if (lowerDirs.length < 2) throw new Error('a read-only overlay needs at least two lower dirs');
  await ensureDir(target);
  await mountWithLowers(lowerDirs, target, (lowers) => `ro,lowerdir=${lowers}`);
}

export async function mountTmpfs(target: string, sizeBytes: number, mode = '1777'): Promise<void> {
  await ensureDir(target);
  await run('mount', ['-t', 'tmpfs', '-o', `nosuid,nodev,noexec,mode=${mode},size=${sizeBytes}`, 'shm', target]);
}

/** Unmounts if mounted; a path that is not a mount point (or is gone) is fine. */
export async function unmountIfMounted(target: string): Promise<void> {
  if (!(await isMountPoint(target))) return;
  const res = await run('umount', [target], { reject: false });
  if (res.exitCode !== 0 && (await isMountPoint(target))) {
    // Busy (a process still has it open): detach lazily so removal can proceed.
    await run('umount', ['-l', target]);
  }
}

export async function isMountPoint(target: string): Promise<boolean> {
  const mounts = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const resolved = path.resolve(target);
  for (const line of mounts.split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint && unescapeMountPath(mountPoint) === resolved) return true;
  }
  return false;
}

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function commonParent(dirs: string[]): string {
  let prefix = path.dirname(dirs[0]!);
  while (!dirs.every((d) => d === prefix || d.startsWith(prefix + path.sep))) prefix = path.dirname(prefix);
  return prefix;
}
