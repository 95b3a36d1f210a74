// File helpers: atomic record writes (temp file, fsync, rename, fsync dir) and tolerant reads.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { hasCode } from './errors.js';

/** `syncDir: false` leaves the rename to the kernel's own pace: survives a killed process, maybe not a host crash. */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644, opts: { syncDir?: boolean } = {}): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await fsp.open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  if (opts.syncDir !== false) await fsyncDir(dir);
}

export async function writeJsonAtomic(file: string, value: unknown, mode = 0o644, opts: { syncDir?: boolean } = {}): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 1) + '\n', mode, opts);
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads and parses a JSON file; undefined when it does not exist. */
export async function readJsonIfExists<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fsp.readFile(file, 'utf8')) as T;
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
}

export async function pathExists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) return false;
    throw err;
  }
}

export async function ensureDir(dir: string, mode = 0o755): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode });
}

/** Removes `dir` and its parents up to `top` (the first directory mkdir created), while they are empty. */
/** The first directory `mkdir -p dir` would create (the topmost missing one), undefined when dir exists. */
export async function firstMissingDir(dir: string): Promise<string | undefined> {
  let missing: string | undefined;
  for (let cur = path.resolve(dir); !(await pathExists(cur)); cur = path.dirname(cur)) {
    missing = cur;
    if (cur === path.dirname(cur)) break;
  }
  return missing;
}

export async function removeEmptyDirsUpTo(dir: string, top: string): Promise<void> {
  let cur = path.resolve(dir);
  const stop = path.resolve(top);
  for (;;) {
    try {
      await fsp.rmdir(cur);
    } catch {
      return; // not empty (someone else's files) or gone
    }
    if (cur === stop || !cur.startsWith(stop + path.sep)) return;
    cur = path.dirname(cur);
  }
}
