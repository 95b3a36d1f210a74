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
