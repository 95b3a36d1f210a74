// What /proc says about a cgroup's processes: open descriptors, sockets, the first process's open-files limit.
// Reads only; a process that exits while it is being read is skipped.
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export interface ProcessFigures {
  fileDescriptors: number;
  sockets: number;
  /** Soft RLIMIT_NOFILE of the container's first process; undefined when unlimited or unreadable. */
  maxOpenFilesSoft?: number;
}

/** Parses /proc/<pid>/limits for the soft "Max open files" limit. */
export function softOpenFilesLimit(limitsText: string): number | undefined {
  const m = /^Max open files\s+(\S+)\s+/m.exec(limitsText);
  if (!m || m[1] === 'unlimited') return undefined;
  const n = Number(m[1]);
  return Number.isFinite(n) ? n : undefined;
}

async function descriptorsOf(fdDir: string): Promise<{ fds: number; sockets: number }> {
  let names: string[];
  try {
    names = await fsp.readdir(fdDir);
  } catch {
    return { fds: 0, sockets: 0 };
  }
  const targets = await Promise.all(names.map((n) => fsp.readlink(path.join(fdDir, n)).catch(() => '')));
  return { fds: names.length, sockets: targets.filter((t) => t.startsWith('socket:')).length };
}

/** rootPid: the container's own process (its limits are the ones reported); else the lowest pid. */
export async function readProcessFigures(pids: number[], opts: { rootPid?: number; procRoot?: string } = {}): Promise<ProcessFigures> {
  const procRoot = opts.procRoot ?? '/proc';
  const per = await Promise.all(pids.map((pid) => descriptorsOf(path.join(procRoot, String(pid), 'fd'))));
  const figures: ProcessFigures = {
    fileDescriptors: per.reduce((n, p) => n + p.fds, 0),
    sockets: per.reduce((n, p) => n + p.sockets, 0),
  };
  const first = opts.rootPid !== undefined && pids.includes(opts.rootPid) ? opts.rootPid : pids.length > 0 ? Math.min(...pids) : undefined;
  if (first !== undefined) {
    const limits = await fsp.readFile(path.join(procRoot, String(first), 'limits'), 'utf8').catch(() => undefined);
    if (limits !== undefined) figures.maxOpenFilesSoft = softOpenFilesLimit(limits);
  }
  return figures;
}
