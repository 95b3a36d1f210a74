// Which cgroup controllers this host offers, for settings the OCI runtime fails on when the controller is missing.
import { readFileSync } from 'node:fs';

export interface CgroupHostFacts {
  cgroupV2: boolean;
  /** Content of /proc/self/mountinfo. */
  mountinfo: string;
  /** Content of the root's cgroup.controllers on a cgroup v2 host ('' elsewhere). */
  rootControllers: string;
}

/** Controllers of the mounted cgroup v1 hierarchies (a `cgroup` mount names its controllers in its super options). */
export function cgroupV1Controllers(mountinfo: string): Set<string> {
  const found = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    if (fstype !== 'cgroup') continue;
    for (const opt of superOptions.split(',')) if (opt !== 'rw' && opt !== 'ro') found.add(opt);
  }
  return found;
}

/** Whether the OCI runtime can apply hugepage limits: a v1 hierarchy with hugetlb, or hugetlb among the v2 root's controllers. */
export function hasHugetlbController(facts: CgroupHostFacts): boolean {
  if (facts.cgroupV2) return facts.rootControllers.split(/\s+/).includes('hugetlb');
  return cgroupV1Controllers(facts.mountinfo).has('hugetlb');
}

const readOr = (file: string, fallback: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
};

export function detectHugetlbController(cgroupV2: boolean): boolean {
  return hasHugetlbController({
    cgroupV2,
    mountinfo: cgroupV2 ? '' : readOr('/proc/self/mountinfo', ''),
    rootControllers: cgroupV2 ? readOr('/sys/fs/cgroup/cgroup.controllers', '') : '',
  });
}
