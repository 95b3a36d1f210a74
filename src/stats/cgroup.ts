// What a cgroup reader returns, whichever cgroup version the host runs; detection; cgroup path rules.
import { existsSync, promises as fsp } from 'node:fs';
import { posix } from 'node:path';
import { hasCode } from '../common/errors.js';

export interface MemorySample {
  usageBytes: number;
  /** usage − inactive file pages: what the kubelet evicts on (cAdvisor's definition). */
  workingSetBytes: number;
  rssBytes: number;
  pageFaults: number;
  majorPageFaults: number;
  /** The cgroup's hard limit; undefined when unlimited. */
  limitBytes?: number;
}

export interface CgroupSample {
  /** Cumulative CPU time of every task in the cgroup, ns. */
  cpuUsageNs?: number;
  memory?: MemorySample;
  /** Tasks currently in the cgroup. */
  pids?: number;
}

export interface CgroupReader {
  readonly version: 1 | 2;
  /** Reads one cgroup by its path relative to the hierarchy root (e.g. /nodelet/<id>); undefined when it does not exist. */
  read(cgroupPath: string): Promise<CgroupSample | undefined>;
}

// Above this a limit means "no limit" (v1 writes PAGE_COUNTER_MAX rounded to pages).
const UNLIMITED_FLOOR = 2 ** 62;

export function limitFrom(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t === '' || t === 'max') return undefined;
  const n = Number(t);
  return Number.isFinite(n) && n < UNLIMITED_FLOOR ? n : undefined;
}

/** Parses "key value" lines (memory.stat, cpu.stat) into numbers. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp <= 0) continue;
    const n = Number(line.slice(sp + 1).trim());
    if (Number.isFinite(n)) out.set(line.slice(0, sp), n);
  }
  return out;
}

export function workingSet(usageBytes: number, inactiveFileBytes: number): number {
  return Math.max(0, usageBytes - inactiveFileBytes);
}

/** Reads a cgroup file; undefined when it (or its cgroup) does not exist. */
export async function readCgroupFile(file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ENODEV') || hasCode(err, 'ENOTDIR')) return undefined;
    throw err;
  }
}

export function numberOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text.trim());
  return text.trim() !== '' && Number.isFinite(n) ? n : undefined;
}

/** v2 when the root is the unified hierarchy (cgroup.controllers at the top); otherwise v1 (or hybrid). */
export function detectCgroupVersion(root = '/sys/fs/cgroup'): 1 | 2 {
  return existsSync(posix.join(root, 'cgroup.controllers')) ? 2 : 1;
}

/**
 * Turns an OCI linux.cgroupsPath into a path under the hierarchy root.
 * cgroupfs form passes through; systemd form "a-b.slice:prefix:name" becomes
 * /a.slice/a-b.slice/prefix-name.scope, as runc's systemd driver lays it out.
 */
export function cgroupDirFor(cgroupsPath: string): string {
  const parts = cgroupsPath.split(':');
  if (parts.length !== 3 || cgroupsPath.startsWith('/')) return posix.normalize(cgroupsPath.startsWith('/') ? cgroupsPath : `/${cgroupsPath}`);
  const [slice, prefix, name] = parts as [string, string, string];
  return posix.join(expandSlice(slice || '-.slice'), `${prefix}-${name}.scope`);
}

/** "a-b-c.slice" → "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root. */
export function expandSlice(slice: string): string {
  if (slice === '-.slice' || slice === '') return '/';
  const base = slice.endsWith('.slice') ? slice.slice(0, -'.slice'.length) : slice;
  const words = base.split('-');
  let acc = '';
  let dir = '/';
  for (const w of words) {
    acc = acc ? `${acc}-${w}` : w;
    dir = posix.join(dir, `${acc}.slice`);
  }
  return dir;
}

/** CPU figures for the cAdvisor metrics; ns throughout. */
export interface CpuDetail {
  usageNs?: number;
  userNs?: number;
  systemNs?: number;
  /** CFS bandwidth: periods elapsed, periods throttled, time throttled. */
  periods?: number;
  throttledPeriods?: number;
  throttledNs?: number;
}

export interface PageFaults {
  minor: number;
  major: number;
}

export interface MemoryDetail {
  usageBytes: number;
  workingSetBytes: number;
  rssBytes: number;
  cacheBytes: number;
  mappedFileBytes: number;
  swapBytes: number;
  kernelBytes?: number;
  maxUsageBytes?: number;
  /** Times usage hit the limit. */
  failcnt?: number;
  oomKills?: number;
  /** Faults of this cgroup's own tasks, and of the whole subtree. */
  faults: { container: PageFaults; hierarchy: PageFaults };
}

/** The limits the cgroup was given; 0 where it has none (as cAdvisor reports an unlimited spec). */
export interface CgroupSpec {
  cpuPeriodUs?: number;
  /** Undefined when there is no CFS quota. */
  cpuQuotaUs?: number;
  cpuShares?: number;
  memoryLimitBytes?: number;
  memoryReservationBytes?: number;
  memorySwapLimitBytes?: number;
}

/** Bytes and operations one block device served for the cgroup. */
export interface BlockDeviceIo {
  major: number;
  minor: number;
  readBytes: number;
  writeBytes: number;
  reads: number;
  writes: number;
}

export interface HugetlbUsage {
  /** As the kernel names it in the file name: 2MB, 1GB. */
  pagesize: string;
  usageBytes: number;
  maxUsageBytes?: number;
}

/** PSI totals in µs: "some" (at least one task waiting) and "full" (all tasks stalled). */
export interface PressureTotals {
  someUs: number;
  fullUs?: number;
}

/** Everything the metrics RPCs report about one cgroup. */
export interface CgroupDetail {
  cpu?: CpuDetail;
  memory?: MemoryDetail;
  spec: CgroupSpec;
  /** Tasks (threads) in the cgroup and the pids limit (0 when unlimited). */
  threads?: number;
  threadsMax?: number;
  /** Process ids in cgroup.procs. */
  procs: number[];
  blockIo: BlockDeviceIo[];
  hugetlb: HugetlbUsage[];
  pressure: { cpu?: PressureTotals; memory?: PressureTotals; io?: PressureTotals };
}

export interface CgroupDetailReader extends CgroupReader {
  /** Reads every figure the metrics need; undefined when the cgroup does not exist. */
  readDetail(cgroupPath: string): Promise<CgroupDetail | undefined>;
}

/** Parses a PSI file (cpu.pressure, memory.pressure, io.pressure). */
export function parsePressure(text: string | undefined): PressureTotals | undefined {
  if (text === undefined) return undefined;
  let someUs: number | undefined;
  let fullUs: number | undefined;
  for (const line of text.split('\n')) {
    const total = /\btotal=(\d+)/.exec(line)?.[1];
    if (total === undefined) continue;
    if (line.startsWith('some ')) someUs = Number(total);
    else if (line.startsWith('full ')) fullUs = Number(total);
  }
  return someUs === undefined ? undefined : { someUs, fullUs };
}

/** Parses cgroup.procs: one pid a line. */
export function parseProcs(text: string | undefined): number[] {
  if (!text) return [];
  return text.split('\n').filter((l) => /^\d+$/.test(l.trim())).map((l) => Number(l.trim()));
}

/** Merges v1 blkio "M:m Read N" files (bytes, operations) into one entry per device. */
export function parseBlkioV1(bytesText: string | undefined, opsText: string | undefined): BlockDeviceIo[] {
  const devices = new Map<string, BlockDeviceIo>();
  const add = (text: string | undefined, field: { Read: keyof BlockDeviceIo; Write: keyof BlockDeviceIo }) => {
    for (const line of (text ?? '').split('\n')) {
      const m = /^(\d+):(\d+) (Read|Write) (\d+)$/.exec(line.trim());
      if (!m) continue;
      const key = `${m[1]}:${m[2]}`;
      let dev = devices.get(key);
      if (!dev) devices.set(key, (dev = { major: Number(m[1]), minor: Number(m[2]), readBytes: 0, writeBytes: 0, reads: 0, writes: 0 }));
      (dev[field[m[3] as 'Read' | 'Write']] as number) = Number(m[4]);
    }
  };
  add(bytesText, { Read: 'readBytes', Write: 'writeBytes' });
  add(opsText, { Read: 'reads', Write: 'writes' });
  return [...devices.values()];
}

/** Parses v2 io.stat: "M:m rbytes=.. wbytes=.. rios=.. wios=.. ...". */
export function parseIoStat(text: string | undefined): BlockDeviceIo[] {
  const out: BlockDeviceIo[] = [];
  for (const line of (text ?? '').split('\n')) {
    const [dev, ...pairs] = line.trim().split(/\s+/);
    const m = /^(\d+):(\d+)$/.exec(dev ?? '');
    if (!m) continue;
    const kv = new Map(pairs.map((p) => p.split('=') as [string, string]));
    const n = (k: string) => Number(kv.get(k) ?? 0) || 0;
    out.push({ major: Number(m[1]), minor: Number(m[2]), readBytes: n('rbytes'), writeBytes: n('wbytes'), reads: n('rios'), writes: n('wios') });
  }
  return out;
}

/** v2 cpu.weight back to v1 cpu.shares (the inverse of the conversion runc applies). */
export function sharesFromWeight(weight: number): number {
  return 2 + Math.floor(((weight - 1) * 262142) / 9999);
}

/** A limit for the spec metrics: the number, or 0 when unlimited or absent. */
export function specLimit(text: string | undefined): number {
  return limitFrom(text) ?? 0;
}

/** Page sizes of the hugetlb files in a cgroup directory listing (hugetlb.2MB.current → 2MB). */
export function hugetlbPagesizes(names: string[]): string[] {
  const sizes = new Set<string>();
  for (const n of names) {
    const m = /^hugetlb\.([0-9]+[KMG]B)\./.exec(n);
    if (m) sizes.add(m[1]!);
  }
  return [...sizes].sort();
}

/** Lists a directory; [] when it does not exist. */
export async function listDir(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) return [];
    throw err;
  }
}
