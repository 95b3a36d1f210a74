// Memory-backed volume directories: tmpfs mounts made for a pod and undone when it goes.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { run } from '../../common/exec.js';

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points of this process's mount namespace, in mount order. */
export async function mountPoints(): Promise<string[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(' ')[4]));
}

export async function isMountPoint(dir: string): Promise<boolean> {
  return (await mountPoints()).includes(path.resolve(dir));
}

/** Mounts a tmpfs on dir unless one is already there (an agent restart finds it mounted). */
export async function ensureTmpfs(dir: string, sizeBytes?: number): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
  if (await isMountPoint(dir)) return;
  const options = ['mode=0755', ...(sizeBytes ? [`size=${Math.max(4096, Math.floor(sizeBytes))}`] : [])];
  await run('mount', ['-t', 'tmpfs', '-o', options.join(','), 'tmpfs', dir]);
}

/** Unmounts every mount at or below dir, deepest first; a busy one is detached lazily. */
export async function unmountAllUnder(dir: string): Promise<void> {
  const root = path.resolve(dir);
  const under = (await mountPoints()).filter((m) => m === root || m.startsWith(`${root}/`));
  for (const m of [...new Set(under)].sort((a, b) => b.length - a.length)) {
    const res = await run('umount', [m], { reject: false });
    if (res.exitCode !== 0) await run('umount', ['-l', m], { reject: false });
  }
}
