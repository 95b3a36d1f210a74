// Process lookups and memory figures read straight from /proc.
import { promises as fsp } from 'node:fs';

export interface ProcessInfo {
  pid: number;
  args: string[];
}

/** Every live process whose argv matches. */
export async function findProcesses(match: (args: string[]) => boolean): Promise<ProcessInfo[]> {
  const found: ProcessInfo[] = [];
  for (const entry of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const raw = await fsp.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (!raw) continue;
    const args = raw.split('\0');
    if (args[args.length - 1] === '') args.pop();
    if (match(args)) found.push({ pid: Number(entry), args });
  }
  return found;
}

async function statusField(pid: number, file: 'status' | 'smaps_rollup', field: string): Promise<number | undefined> {
  const text = await fsp.readFile(`/proc/${pid}/${file}`, 'utf8').catch(() => '');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** Resident set size in bytes (VmRSS), undefined when the process is gone. */
export function rssBytes(pid: number): Promise<number | undefined> {
  return statusField(pid, 'status', 'VmRSS');
}

/** Proportional set size in bytes: shared pages divided among the processes mapping them. */
export function pssBytes(pid: number): Promise<number | undefined> {
  return statusField(pid, 'smaps_rollup', 'Pss');
}

export interface MemoryFigures {
  rss: number;
  pss: number;
}

export async function memoryOf(pid: number): Promise<MemoryFigures> {
  return { rss: (await rssBytes(pid)) ?? 0, pss: (await pssBytes(pid)) ?? 0 };
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}

/** Resident bytes by kind of mapping, from /proc/PID/smaps: where a daemon's RSS sits. */
export interface MemoryParts {
  /** Pages of the process's own executable. */
  binary: number;
  /** Pages of other files (shared libraries, ICU data, ...). */
  files: number;
  /** The brk heap: glibc malloc's main arena. */
  brk: number;
  /** Anonymous mappings inside 64 MiB-aligned reservations: glibc malloc's thread arenas. */
  threadArenas: number;
  /** Every other anonymous mapping: V8's heap pages and code, large malloc blocks, stacks. */
  anon: number;
}

export async function memoryParts(pid: number): Promise<MemoryParts> {
  const [text, exe] = await Promise.all([
    fsp.readFile(`/proc/${pid}/smaps`, 'utf8'),
    fsp.readlink(`/proc/${pid}/exe`).catch(() => ''),
  ]);
  const parts: MemoryParts = { binary: 0, files: 0, brk: 0, threadArenas: 0, anon: 0 };
  const arenaSize = 64 * 1024 * 1024;
  let kind: keyof MemoryParts = 'anon';
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const [, start, , inode, name] = head;
      if (name === exe) kind = 'binary';
      else if (inode !== '0') kind = 'files';
      else if (name === '[heap]') kind = 'brk';
      else if (name === '' && BigInt(`0x${start}`) % BigInt(arenaSize) === 0n) kind = 'threadArenas';
      else kind = 'anon';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) parts[kind] += Number(rss[1]) * 1024;
  }
  return parts;
}

export function describeMemoryParts(parts: MemoryParts): string {
  return `RSS by mapping: ${Object.entries(parts).map(([k, v]) => `${k} ${(v / 2 ** 20).toFixed(1)}`).join(', ')} MiB`;
}
