// cgroup v2: one unified hierarchy; every controller's files sit in the cgroup's own directory.
import path from 'node:path';
import {
  hugetlbPagesizes, limitFrom, listDir, numberOf, parseFlatKeyed, parseIoStat, parsePressure, parseProcs, readCgroupFile, sharesFromWeight,
  specLimit, workingSet, type CgroupDetail, type CgroupDetailReader, type CgroupSample, type HugetlbUsage,
} from './cgroup.js';

export class CgroupV2Reader implements CgroupDetailReader {
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

  async readDetail(cgroupPath: string): Promise<CgroupDetail | undefined> {
    const dir = path.join(this.root, cgroupPath);
    const names = [
      'cpu.stat', 'cpu.max', 'cpu.weight', 'memory.current', 'memory.stat', 'memory.max', 'memory.low', 'memory.swap.current', 'memory.swap.max',
      'memory.peak', 'memory.events', 'pids.current', 'pids.max', 'cgroup.procs', 'io.stat', 'cpu.pressure', 'memory.pressure', 'io.pressure',
    ] as const;
    const texts = await Promise.all(names.map((n) => readCgroupFile(path.join(dir, n))));
    const file = Object.fromEntries(names.map((n, i) => [n, texts[i]])) as Record<(typeof names)[number], string | undefined>;
    if (file['cpu.stat'] === undefined && file['memory.current'] === undefined && file['pids.current'] === undefined) return undefined;

    const detail: CgroupDetail = {
      spec: {},
      procs: parseProcs(file['cgroup.procs']),
      blockIo: parseIoStat(file['io.stat']),
      hugetlb: await this.hugetlb(dir),
      pressure: { cpu: parsePressure(file['cpu.pressure']), memory: parsePressure(file['memory.pressure']), io: parsePressure(file['io.pressure']) },
    };
    if (file['cpu.stat'] !== undefined) {
      const cpu = parseFlatKeyed(file['cpu.stat']);
      const ns = (k: string) => (cpu.has(k) ? cpu.get(k)! * 1000 : undefined);
      detail.cpu = {
        usageNs: ns('usage_usec'),
        userNs: ns('user_usec'),
        systemNs: ns('system_usec'),
        periods: cpu.get('nr_periods'),
        throttledPeriods: cpu.get('nr_throttled'),
        throttledNs: ns('throttled_usec'),
      };
    }
    // cpu.max is "<quota|max> <period>".
    const [quota, period] = (file['cpu.max'] ?? '').trim().split(/\s+/);
    detail.spec.cpuPeriodUs = numberOf(period);
    detail.spec.cpuQuotaUs = quota === undefined || quota === 'max' ? undefined : numberOf(quota);
    const weight = numberOf(file['cpu.weight']);
    if (weight !== undefined) detail.spec.cpuShares = sharesFromWeight(weight);

    const usageBytes = numberOf(file['memory.current']);
    if (usageBytes !== undefined) {
      const stat = parseFlatKeyed(file['memory.stat'] ?? '');
      const events = parseFlatKeyed(file['memory.events'] ?? '');
      const get = (k: string) => stat.get(k) ?? 0;
      const faults = { minor: get('pgfault'), major: get('pgmajfault') };
      detail.memory = {
        usageBytes,
        workingSetBytes: workingSet(usageBytes, get('inactive_file')),
        rssBytes: get('anon'),
        cacheBytes: get('file'),
        mappedFileBytes: get('file_mapped'),
        swapBytes: numberOf(file['memory.swap.current']) ?? 0,
        // Older kernels have no "kernel" key: their kernel memory is the stacks and the slab.
        kernelBytes: stat.get('kernel') ?? get('kernel_stack') + get('slab'),
        maxUsageBytes: numberOf(file['memory.peak']),
        failcnt: events.get('max'),
        oomKills: events.get('oom_kill'),
        // v2 counts faults for the whole subtree only.
        faults: { container: faults, hierarchy: faults },
      };
      const memMax = limitFrom(file['memory.max']);
      const swapMax = limitFrom(file['memory.swap.max']);
      detail.spec.memoryLimitBytes = memMax ?? 0;
      detail.spec.memoryReservationBytes = specLimit(file['memory.low']);
      // Reported like v1's memsw limit: memory plus swap, 0 when either is unlimited.
      detail.spec.memorySwapLimitBytes = memMax !== undefined && swapMax !== undefined ? memMax + swapMax : 0;
    }
    detail.threads = numberOf(file['pids.current']);
    if (file['pids.max'] !== undefined) detail.threadsMax = specLimit(file['pids.max']);
    return detail;
  }

  private async hugetlb(dir: string): Promise<HugetlbUsage[]> {
    const out: HugetlbUsage[] = [];
    for (const size of hugetlbPagesizes(await listDir(dir))) {
      const usageBytes = numberOf(await readCgroupFile(path.join(dir, `hugetlb.${size}.current`)));
      // v2 keeps no high-water mark for hugetlb.
      if (usageBytes !== undefined) out.push({ pagesize: size, usageBytes });
    }
    return out;
  }
}
