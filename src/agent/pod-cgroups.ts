// The pods' cgroups (cgroupfs driver, v1 or v2): which files to write is decided purely; PodCgroups writes them.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { sharesToWeight, type CgroupLimits } from './qos.js';

/** Where the cgroup hierarchies are mounted: v1 (a dir per controller) or v2 (one unified tree). */
export type CgroupLayout = { version: 1; hierarchies: { dir: string; controllers: string[] }[] } | { version: 2; root: string };

/** Reads the layout from /proc/self/mounts text: a cgroup2 mount at `base` is v2; else the v1 hierarchies (hybrid's unified one included, for removal). */
export function cgroupLayoutFromMounts(mounts: string, base = '/sys/fs/cgroup'): CgroupLayout {
  const hierarchies: { dir: string; controllers: string[] }[] = [];
  for (const line of mounts.split('\n')) {
    const [, dir, type, opts] = line.split(' ');
    if (!dir) continue;
    if (type === 'cgroup2' && dir === base) return { version: 2, root: dir };
    if (type === 'cgroup') {
      const controllers = (opts ?? '').split(',').filter((o) => !['rw', 'ro', 'relatime', 'nosuid', 'nodev', 'noexec', 'clone_children'].includes(o) && !o.startsWith('release_agent'));
      hierarchies.push({ dir, controllers });
    } else if (type === 'cgroup2') hierarchies.push({ dir, controllers: [] });
  }
  return { version: 1, hierarchies };
}

export interface CgroupWrite {
  /** Absolute path of the cgroup directory (created before writing). */
  dir: string;
  file: string;
  value: string;
}

const V1_CONTROLLERS = ['cpu', 'cpuacct', 'memory', 'pids'];

/** The directories a pod cgroup is made in (v1: the cpu, cpuacct, memory and pids hierarchies; runc makes the rest). */
export function cgroupDirs(layout: CgroupLayout, cgroupPath: string): string[] {
  if (layout.version === 2) return [path.join(layout.root, cgroupPath)];
  return layout.hierarchies.filter((h) => h.controllers.some((c) => V1_CONTROLLERS.includes(c))).map((h) => path.join(h.dir, cgroupPath));
}

/** The files that give `cgroupPath` these limits; absent limits are written as unlimited (so a resize can lift one). */
export function cgroupLimitWrites(layout: CgroupLayout, cgroupPath: string, limits: CgroupLimits): CgroupWrite[] {
  if (layout.version === 2) {
    const dir = path.join(layout.root, cgroupPath);
    return [
      { dir, file: 'cpu.weight', value: String(sharesToWeight(limits.cpuShares)) },
      { dir, file: 'cpu.max', value: `${limits.cpuQuotaUs ?? 'max'} ${limits.cpuPeriodUs}` },
      { dir, file: 'memory.max', value: limits.memoryLimitBytes !== undefined ? String(limits.memoryLimitBytes) : 'max' },
    ];
  }
  const writes: CgroupWrite[] = [];
  const cpu = layout.hierarchies.find((h) => h.controllers.includes('cpu'));
  const memory = layout.hierarchies.find((h) => h.controllers.includes('memory'));
  if (cpu) {
    const dir = path.join(cpu.dir, cgroupPath);
    writes.push({ dir, file: 'cpu.shares', value: String(limits.cpuShares) });
    writes.push({ dir, file: 'cpu.cfs_period_us', value: String(limits.cpuPeriodUs) });
    writes.push({ dir, file: 'cpu.cfs_quota_us', value: String(limits.cpuQuotaUs ?? -1) });
  }
  if (memory) writes.push({ dir: path.join(memory.dir, cgroupPath), file: 'memory.limit_in_bytes', value: String(limits.memoryLimitBytes ?? -1) });
  return writes;
}

/** v2: the controllers each ancestor must hand down (cgroup.subtree_control) for `cgroupPath` to have them. */
export function subtreeControlWrites(layout: CgroupLayout, cgroupPath: string): CgroupWrite[] {
  if (layout.version !== 2) return [];
  const parts = cgroupPath.split('/').filter(Boolean);
  const writes: CgroupWrite[] = [];
  for (let i = 0; i < parts.length; i++) {
    writes.push({ dir: path.join(layout.root, ...parts.slice(0, i)), file: 'cgroup.subtree_control', value: '+cpu +memory +pids' });
  }
  return writes;
}

export class PodCgroups {
  constructor(private readonly layout: CgroupLayout, private readonly log: Logger) {}

  static async detect(log: Logger): Promise<PodCgroups> {
    const mounts = await fsp.readFile('/proc/self/mounts', 'utf8');
    return new PodCgroups(cgroupLayoutFromMounts(mounts), log);
  }

  /** Makes the pod's cgroup (and its QoS parents) and sets its limits. */
  async ensure(cgroupPath: string, limits: CgroupLimits): Promise<void> {
    for (const w of subtreeControlWrites(this.layout, cgroupPath)) {
      await fsp.mkdir(w.dir, { recursive: true });
      await fsp.writeFile(path.join(w.dir, w.file), w.value).catch((err) => this.log.debug({ err: errorMessage(err), dir: w.dir }, 'subtree_control not written'));
    }
    for (const dir of cgroupDirs(this.layout, cgroupPath)) await fsp.mkdir(dir, { recursive: true });
    await this.apply(cgroupPath, limits);
  }

  /** Writes the limits; a limit the kernel refuses (below current usage, above a parent's quota) is logged and left. */
  async apply(cgroupPath: string, limits: CgroupLimits): Promise<boolean> {
    let ok = true;
    for (const w of cgroupLimitWrites(this.layout, cgroupPath, limits)) {
      try {
        await fsp.writeFile(path.join(w.dir, w.file), w.value);
      } catch (err) {
        ok = false;
        this.log.warn({ err: errorMessage(err), file: path.join(w.dir, w.file), value: w.value }, 'cgroup limit not written');
      }
    }
    return ok;
  }

  /** Removes the pod's cgroup in every hierarchy (leftover children first); a cgroup a process just left may be busy a moment. */
  async remove(cgroupPath: string): Promise<void> {
    const tops = this.layout.version === 2 ? [path.join(this.layout.root, cgroupPath)] : this.layout.hierarchies.map((h) => path.join(h.dir, cgroupPath));
    for (const top of tops) await removeTree(top);
  }

  /** The QoS cgroups (`kubepods`, its `burstable` and `besteffort`) where no pod is left: an agent that stops leaves no empty cgroups. */
  async removeEmptyQosCgroups(qosPaths: string[]): Promise<void> {
    const bases = this.layout.version === 2 ? [this.layout.root] : this.layout.hierarchies.map((h) => h.dir);
    for (const p of qosPaths) for (const base of bases) await removeIfEmpty(path.join(base, p));
  }
}

/** rmdir only: a cgroup with pods or containers in it stays. */
async function removeIfEmpty(dir: string): Promise<void> {
  await fsp.rmdir(dir).catch(() => undefined);
}

async function removeTree(dir: string): Promise<void> {
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) if (e.isDirectory()) await removeTree(path.join(dir, e.name));
  for (let i = 0; ; i++) {
    try {
      await fsp.rmdir(dir);
      return;
    } catch (err: any) {
      if (err.code === 'ENOENT') return;
      if (err.code !== 'EBUSY' || i >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
