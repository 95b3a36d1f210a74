// Processes the runtime lost: when its --root was wiped, the kernel still runs the container's
// processes in its cgroups. Found from /proc (no runtime call), and killed by SIGKILL.
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { internal } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { checkId } from './paths.js';
import { processAlive, sleep } from './processes.js';

/** Live processes in the container's cgroups (found from /proc, so it works when the runtime forgot the container). */
export async function cgroupProcesses(id: string): Promise<Array<{ pid: number; cgroups: string[] }>> {
  checkId(id);
  const leaves = [`/${id}`, `/nodelet-${id}.scope`];
  const found: Array<{ pid: number; cgroups: string[] }> = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    const text = await fsp.readFile(`/proc/${name}/cgroup`, 'utf8').catch(() => '');
    const cgroups = text.split('\n').filter((line) => leaves.some((leaf) => line.endsWith(leaf)));
    if (cgroups.length > 0 && processAlive(Number(name))) found.push({ pid: Number(name), cgroups });
  }
  return found;
}

/**
 * SIGKILLs every process left in the container's cgroups until none is left, then removes those
 * cgroups; returns how many processes it killed.
 */
export async function killLeftovers(id: string, log: Logger): Promise<number> {
  let killed = 0;
  const cgroupLines = new Set<string>();
  const deadline = Date.now() + 10_000;
  for (;;) {
    const procs = await cgroupProcesses(id);
    if (procs.length === 0) break;
    if (Date.now() > deadline) throw internal(`processes of container ${id} survive SIGKILL: ${procs.map((p) => p.pid).join(', ')}`);
    for (const p of procs) {
      for (const line of p.cgroups) cgroupLines.add(line);
      try {
        process.kill(p.pid, 'SIGKILL');
        killed++;
      } catch {
        // gone meanwhile
      }
    }
    await sleep(50);
  }
  if (killed > 0) {
    log.warn({ containerId: id, killed }, 'killed processes left in the cgroup of a container the runtime had lost');
    for (const dir of cgroupDirs(cgroupLines)) await fsp.rmdir(dir).catch(() => undefined);
  }
  return killed;
}

/** The cgroup directories named by /proc/<pid>/cgroup lines ("N:controllers:/path"), deepest first. */
function cgroupDirs(lines: Iterable<string>): string[] {
  const v2Root = existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
  const dirs: string[] = [];
  for (const line of lines) {
    const [, controllers = '', cgroupPath = ''] = line.split(/:(.*?):/);
    if (!cgroupPath.startsWith('/') || cgroupPath === '/') continue;
    const hierarchy = controllers === '' ? v2Root : path.join('/sys/fs/cgroup', controllers.replace(/^name=/, ''));
    dirs.push(path.join(hierarchy, cgroupPath));
  }
  return dirs.sort((a, b) => b.length - a.length);
}
