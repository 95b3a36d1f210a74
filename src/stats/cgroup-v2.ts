// cgroup v2: one unified hierarchy; every controller's files sit in the cgroup's own directory.
import path from 'node:path';
import { limitFrom, numberOf, parseFlatKeyed, readCgroupFile, workingSet, type CgroupReader, type CgroupSample } from './cgroup.js';

export class CgroupV2Reader implements CgroupReader {
  readonly version = 2 as const;
  constructor(private readonly root = '/sys/fs/cgroup') {}

  async read(cgroupPath: string): Promise<CgroupSample | undefined> {
    const dir = path.join(this.root, cgroupPath);
    const [cpuStat, current, memStat, max, pids] = await Promise.all(
      ['cpu.stat', 'memory.current', 'memory.stat', 'memory.max', 'pids.current'].map((f) => readCgroupFile(path.join(dir, f))),
    );
    if (cpuStat === undefined && current === undefined && pids === undefined) return undefined;
    const usageUsec = cpuStat === undefined ? undefined : parseFlatKeyed(cpuStat).get('usage_usec');
    const sample: CgroupSample = { cpuUsageNs: usageUsec === undefined ? undefined : usageUsec * 1000, pids: numberOf(pids) };
    const usageBytes = numberOf(current);
    if (usageBytes !== undefined) {
      const stat = parseFlatKeyed(memStat ?? '');
      sample.memory = {
        usageBytes,
        workingSetBytes: workingSet(usageBytes, stat.get('inactive_file') ?? 0),
        rssBytes: stat.get('anon') ?? 0,
        pageFaults: stat.get('pgfault') ?? 0,
        majorPageFaults: stat.get('pgmajfault') ?? 0,
        limitBytes: limitFrom(max),
      };
    }
    return sample;
  }
}
