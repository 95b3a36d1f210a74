// Bytes and inodes used by a directory tree (a container's writable layer), like `du`: allocated blocks, hard links once.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { hasCode } from '../common/errors.js';

export interface DiskUsage {
  bytes: number;
  inodes: number;
}

/** Walks dir without following symlinks or crossing onto another filesystem; undefined when dir does not exist. */
export async function diskUsage(dir: string): Promise<DiskUsage | undefined> {
  let rootStat;
  try {
    rootStat = await fsp.lstat(dir);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
  const seen = new Set<number>();
  const usage: DiskUsage = { bytes: 0, inodes: 0 };
  const count = (st: { ino: number; blocks: number; nlink: number }) => {
    if (st.nlink > 1) {
      if (seen.has(st.ino)) return;
      seen.add(st.ino);
    }
    usage.inodes += 1;
    usage.bytes += st.blocks * 512;
  };
  count(rootStat);
  if (!rootStat.isDirectory()) return usage;
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.pop()!;
    let names: string[];
    try {
      names = await fsp.readdir(current);
    } catch (err) {
      // Files come and go while a container runs.
      if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) continue;
      throw err;
    }
    for (const name of names) {
      const full = path.join(current, name);
      let st;
      try {
        st = await fsp.lstat(full);
      } catch (err) {
        if (hasCode(err, 'ENOENT')) continue;
        throw err;
      }
      if (st.dev !== rootStat.dev) continue;
      count(st);
      if (st.isDirectory()) pending.push(full);
    }
  }
  return usage;
}
