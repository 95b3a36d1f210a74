// cgroup v1 (and the v1 side of a hybrid host): one hierarchy per controller under the root.
import path from 'node:path';
import { limitFrom, numberOf, parseFlatKeyed, readCgroupFile, workingSet, type CgroupReader, type CgroupSample } from './cgroup.js';

export class CgroupV1Reader implements CgroupReader {
  readonly version = 1 as const;
  constructor(private readonly root = '/sys/fs/cgroup') {}

  private file(controller: string, cgroupPath: string, name: string): Promise<string | undefined> {
    return readCgroupFile(path.join(this.root, controller, cgroupPath, name));
  }

  async read(cgroupPath: string): Promise<CgroupSample | undefined> {
    const [cpuacct, usage, statText, limit, pids] = await Promise.all([
      this.file('cpuacct', cgroupPath, 'cpuacct.usage'),
      this.file('memory', cgroupPath, 'memory.usage_in_bytes'),
      this.file('memory', cgroupPath, 'memory.stat'),
      this.file('memory', cgroupPath, 'memory.limit_in_bytes'),
      this.file('pids', cgroupPath, 'pids.current'),
    ]);
    if (cpuacct === undefined && usage === undefined && pids === undefined) return undefined;
    const sample: CgroupSample = { cpuUsageNs: numberOf(cpuacct), pids: numberOf(pids) };
    const usageBytes = numberOf(usage);
    if (usageBytes !== undefined) {
      const stat = parseFlatKeyed(statText ?? '');
      // total_* include descendants (a pod cgroup holds its containers); plain keys are this cgroup only.
      const pick = (key: string) => stat.get(`total_${key}`) ?? stat.get(key) ?? 0;
      sample.memory = {
        usageBytes,
        workingSetBytes: workingSet(usageBytes, pick('inactive_file')),
        rssBytes: pick('rss'),
        pageFaults: pick('pgfault'),
        majorPageFaults: pick('pgmajfault'),
        limitBytes: limitFrom(limit),
      };
    }
    return sample;
  }
}
