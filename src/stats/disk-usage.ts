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

/** The filesystem a directory lives on, as the container_fs_* metrics report it. */
export interface FilesystemFigures {
  /** The mount source (e.g. /dev/vda1, overlay), or major:minor when no mount names it. */
  device: string;
  capacityBytes: number;
  inodesTotal: number;
  inodesFree: number;
}

/** Linux dev_t → major:minor (glibc's encoding). */
export function majorMinor(dev: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** The mount source of the first mount of device major:minor in a mountinfo text. */
export function mountSourceOf(mountinfo: string, majMin: string): string | undefined {
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (fields[2] !== majMin) continue;
    const sep = fields.indexOf('-');
    if (sep > 0 && fields[sep + 2]) return fields[sep + 2];
  }
  return undefined;
}

/** The mount source of device major:minor from /proc/self/mountinfo (or the file given). */
export async function mountSourceOfDevice(majMin: string, mountinfoPath = '/proc/self/mountinfo'): Promise<string | undefined> {
  return mountSourceOf(await fsp.readFile(mountinfoPath, 'utf8').catch(() => ''), majMin);
}

/** deviceName: how to name the device major:minor (callers cache it: mountinfo can be long). */
export async function filesystemOf(dir: string, deviceName: (majMin: string) => Promise<string | undefined> = mountSourceOfDevice): Promise<FilesystemFigures | undefined> {
  let st;
  let fs;
  try {
    [st, fs] = await Promise.all([fsp.stat(dir), fsp.statfs(dir)]);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
  const majMin = majorMinor(st.dev);
  return {
    device: (await deviceName(majMin)) ?? majMin,
    capacityBytes: fs.blocks * fs.bsize,
    inodesTotal: fs.files,
    inodesFree: fs.ffree,
  };
}

/** /dev/<name> of a block device from sysfs; major:minor when sysfs does not know it. */
export async function blockDeviceName(major: number, minor: number, sysRoot = '/sys'): Promise<string> {
  const uevent = await fsp.readFile(path.join(sysRoot, 'dev', 'block', `${major}:${minor}`, 'uevent'), 'utf8').catch(() => '');
  const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
  return name ? `/dev/${name}` : `${major}:${minor}`;
}
