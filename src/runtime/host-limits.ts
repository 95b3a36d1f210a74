// Host facts the request checks need: which CPUs and memory nodes exist, which sysctls exist.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import type { HostLimits } from './validation.js';

/** "0-3,6" → {0,1,2,3,6}; empty when unreadable (then nothing is refused for it). */
export function parseIdList(text: string): Set<number> {
  const ids = new Set<number>();
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let i = a; i <= b && i - a < 65_536; i++) ids.add(i);
  }
  return ids;
}

function firstReadable(files: string[]): string {
  for (const f of files) {
    try {
      const text = readFileSync(f, 'utf8').trim();
      if (text) return text;
    } catch {
      // try the next one
    }
  }
  return '';
}

/** hugepages-2048kB → 2MB, hugepages-1048576kB → 1GB (the kubelet's names). */
export function hugepageSizeName(dirName: string): string | undefined {
  const m = /^hugepages-(\d+)kB$/.exec(dirName);
  if (!m) return undefined;
  const units = ['KB', 'MB', 'GB', 'TB', 'PB'];
  let size = Number(m[1]);
  let unit = 0;
  while (size % 1024 === 0 && unit < units.length - 1) {
    size /= 1024;
    unit++;
  }
  return `${size}${units[unit]}`;
}

function readHugepageSizes(): Set<string> {
  try {
    return new Set(readdirSync('/sys/kernel/mm/hugepages').flatMap((n) => hugepageSizeName(n) ?? []));
  } catch {
    return new Set();
  }
}

export function readHostLimits(): HostLimits {
  const cpus = parseIdList(firstReadable(['/sys/fs/cgroup/cpuset/cpuset.effective_cpus', '/sys/fs/cgroup/cpuset/cpuset.cpus', '/sys/fs/cgroup/cpuset.cpus.effective', '/sys/devices/system/cpu/online']));
  const mems = parseIdList(firstReadable(['/sys/fs/cgroup/cpuset/cpuset.effective_mems', '/sys/fs/cgroup/cpuset/cpuset.mems', '/sys/fs/cgroup/cpuset.mems.effective', '/sys/devices/system/node/online']));
  return {
    cpus,
    mems: mems.size ? mems : new Set([0]),
    hugepageSizes: readHugepageSizes(),
    sysctlExists: (name) => existsSync(`/proc/sys/${name.replace(/\./g, '/')}`),
  };
}
