// What /proc says about a process, and the small waits the runc backend polls with.
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A grace period that does not keep the process alive by itself. */
export function grace(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * State and start time (clock ticks after boot: with the pid, unique for the boot) from /proc/PID/stat;
 * undefined when the process is gone. Read synchronously: procfs answers from kernel memory, and this is
 * on the path of every status call, where a promise round trip through the thread pool costs ~10× more.
 */
export function procStat(pid: number): { state: string; parentPid: number; startTime: string } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', parentPid: Number(fields[1] ?? 0), startTime: fields[19] ?? '' };
}

/** The number of a signal given as `SIGTERM`, `TERM` or a number; undefined for what kill(2) from Node cannot send by name (real-time signals). */
export function signalNumber(signal: string | number): number | undefined {
  if (typeof signal === 'number') return Number.isInteger(signal) && signal > 0 ? signal : undefined;
  if (/^\d+$/.test(signal)) return Number(signal);
  const name = (signal.toUpperCase().startsWith('SIG') ? signal.toUpperCase() : `SIG${signal.toUpperCase()}`) as NodeJS.Signals;
  return osConstants.signals[name];
}

/** True while the process exists and is not a zombie waiting for its reaper. */
export function processAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}
