// cgroup v1 (and the v1 side of a hybrid host): one hierarchy per controller under the root.
import path from 'node:path';
import {
  hugetlbPagesizes, limitFrom, listDir, numberOf, parseBlkioV1, parseFlatKeyed, parsePressure, parseProcs, readCgroupFile, specLimit, workingSet,
  type CgroupDetail, type CgroupDetailReader, type CgroupSample, type HugetlbUsage,
} from './cgroup.js';

// cpuacct.stat counts in USER_HZ ticks, 100 a second on every Linux architecture nodelet runs on.
const NS_PER_TICK = 10_000_000;

export class CgroupV1Reader implements CgroupDetailReader {
  readonly version = 1 as const;
  /** unifiedRoot: the cgroup2 mount of a hybrid host, where the pressure (PSI) files live. */
  constructor(
    private readonly root = '/sys/fs/cgroup',
    private readonly unifiedRoot = path.join(root, 'unified'),
  ) {}

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

  async readDetail(cgroupPath: string): Promise<CgroupDetail | undefined> {
    const f = (controller: string, name: string) => this.file(controller, cgroupPath, name);
    const [usage, usageUser, usageSys, cpuacctStat, cpuStat, period, quota, shares] = await Promise.all([
      f('cpuacct', 'cpuacct.usage'), f('cpuacct', 'cpuacct.usage_user'), f('cpuacct', 'cpuacct.usage_sys'), f('cpuacct', 'cpuacct.stat'),
      f('cpu', 'cpu.stat'), f('cpu', 'cpu.cfs_period_us'), f('cpu', 'cpu.cfs_quota_us'), f('cpu', 'cpu.shares'),
    ]);
    const [memUsage, memStat, memLimit, softLimit, swapLimit, kmem, maxUsage, failcnt, oomControl] = await Promise.all([
      f('memory', 'memory.usage_in_bytes'), f('memory', 'memory.stat'), f('memory', 'memory.limit_in_bytes'), f('memory', 'memory.soft_limit_in_bytes'),
      f('memory', 'memory.memsw.limit_in_bytes'), f('memory', 'memory.kmem.usage_in_bytes'), f('memory', 'memory.max_usage_in_bytes'),
      f('memory', 'memory.failcnt'), f('memory', 'memory.oom_control'),
    ]);
    const [pidsCurrent, pidsMax, procs, ioBytes, ioOps] = await Promise.all([
      f('pids', 'pids.current'), f('pids', 'pids.max'),
      f('pids', 'cgroup.procs').then(async (t) => t ?? (await f('memory', 'cgroup.procs')) ?? f('cpuacct', 'cgroup.procs')),
      f('blkio', 'blkio.throttle.io_service_bytes_recursive'), f('blkio', 'blkio.throttle.io_serviced_recursive'),
    ]);
    if (usage === undefined && memUsage === undefined && pidsCurrent === undefined) return undefined;

    const detail: CgroupDetail = { spec: {}, procs: parseProcs(procs), blockIo: parseBlkioV1(ioBytes, ioOps), hugetlb: [], pressure: {} };
    const ticks = parseFlatKeyed(cpuacctStat ?? '');
    const throttling = parseFlatKeyed(cpuStat ?? '');
    const ticksNs = (k: string) => (ticks.has(k) ? ticks.get(k)! * NS_PER_TICK : undefined);
    if (usage !== undefined || cpuStat !== undefined) {
      detail.cpu = {
        usageNs: numberOf(usage),
        userNs: numberOf(usageUser) ?? ticksNs('user'),
        systemNs: numberOf(usageSys) ?? ticksNs('system'),
        periods: throttling.get('nr_periods'),
        throttledPeriods: throttling.get('nr_throttled'),
        throttledNs: throttling.get('throttled_time'),
      };
    }
    const quotaUs = numberOf(quota);
    detail.spec.cpuPeriodUs = numberOf(period);
    detail.spec.cpuQuotaUs = quotaUs !== undefined && quotaUs > 0 ? quotaUs : undefined;
    detail.spec.cpuShares = numberOf(shares);
    const usageBytes = numberOf(memUsage);
    if (usageBytes !== undefined) {
      const stat = parseFlatKeyed(memStat ?? '');
      const pick = (key: string) => stat.get(`total_${key}`) ?? stat.get(key) ?? 0;
      detail.memory = {
        usageBytes,
        workingSetBytes: workingSet(usageBytes, pick('inactive_file')),
        rssBytes: pick('rss'),
        cacheBytes: pick('cache'),
        mappedFileBytes: pick('mapped_file'),
        swapBytes: pick('swap'),
        kernelBytes: numberOf(kmem),
        maxUsageBytes: numberOf(maxUsage),
        failcnt: numberOf(failcnt),
        oomKills: parseFlatKeyed(oomControl ?? '').get('oom_kill'),
        faults: {
          container: { minor: stat.get('pgfault') ?? 0, major: stat.get('pgmajfault') ?? 0 },
          hierarchy: { minor: pick('pgfault'), major: pick('pgmajfault') },
        },
      };
      detail.spec.memoryLimitBytes = specLimit(memLimit);
      detail.spec.memoryReservationBytes = specLimit(softLimit);
      detail.spec.memorySwapLimitBytes = specLimit(swapLimit);
    }
    detail.threads = numberOf(pidsCurrent);
    if (pidsMax !== undefined) detail.threadsMax = specLimit(pidsMax);
    detail.hugetlb = await this.hugetlb(cgroupPath);
    const psi = (name: string) => readCgroupFile(path.join(this.unifiedRoot, cgroupPath, name)).then(parsePressure);
    const [cpuPsi, memPsi, ioPsi] = await Promise.all([psi('cpu.pressure'), psi('memory.pressure'), psi('io.pressure')]);
    detail.pressure = { cpu: cpuPsi, memory: memPsi, io: ioPsi };
    return detail;
  }

  private async hugetlb(cgroupPath: string): Promise<HugetlbUsage[]> {
    const sizes = hugetlbPagesizes(await listDir(path.join(this.root, 'hugetlb', cgroupPath)));
    const out: HugetlbUsage[] = [];
    for (const size of sizes) {
      const [usage, max] = await Promise.all([
        this.file('hugetlb', cgroupPath, `hugetlb.${size}.usage_in_bytes`),
        this.file('hugetlb', cgroupPath, `hugetlb.${size}.max_usage_in_bytes`),
      ]);
      const usageBytes = numberOf(usage);
      if (usageBytes !== undefined) out.push({ pagesize: size, usageBytes, maxUsageBytes: numberOf(max) });
    }
    return out;
  }
}
