// Mounts the runtime owns: container overlay root filesystems, image volumes and pod /dev/shm tmpfs.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { run } from '../common/exec.js';
import { ensureDir } from '../common/fsutil.js';

/** Mount options are limited to one page: long lowerdir lists use paths relative to their common parent (the mount's cwd). */
export async function mountOverlay(lowerDirs: string[], upperDir: string, workDir: string, target: string): Promise<void> {
  await ensureDir(upperDir);
  await ensureDir(workDir);
  await ensureDir(target);
  if (lowerDirs.length === 0) throw new Error('overlay needs at least one lower dir');
  const base = commonParent(lowerDirs);
  const lowers = lowerDirs.map((d) => path.relative(base, d));
  // A single-layer image: overlay needs two lowers without an upper, one with — we always have an upper.
  const options = `lowerdir=${lowers.join(':')},upperdir=${upperDir},workdir=${workDir}`;
  await run('mount', ['-t', 'overlay', 'overlay', '-o', options, target], { cwd: base, timeoutMs: 30_000 });
}

/** An overlay of lower dirs only (top first; at least two): read-only by construction, nothing to write to. */
export async function mountReadOnlyOverlay(lowerDirs: string[], target: string): Promise<void> {
  if (lowerDirs.length < 2) throw new Error('a read-only overlay needs at least two lower dirs');
  await ensureDir(target);
  const base = commonParent(lowerDirs);
  const lowers = lowerDirs.map((d) => path.relative(base, d));
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lowers.join(':')}`, target], { cwd: base, timeoutMs: 30_000 });
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
