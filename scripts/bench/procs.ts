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
