// Writes a volume's files the way the kubelet does, so a running container sees a whole new set at once:
//   <dir>/..<timestamp>/<files>   the current generation
//   <dir>/..data → ..<timestamp>  swapped with one rename
//   <dir>/<top> → ..data/<top>    one symlink per user-visible top-level name
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { invalidArgument } from '../../common/errors.js';

export interface PayloadFile {
  data: Buffer;
  mode: number;
}

/** Relative file path → content and mode. */
export type Payload = Map<string, PayloadFile>;

const DATA_LINK = '..data';

/** A payload path must be relative, without `..` components, and not start with `..` (reserved for the layout). */
export function checkPayloadPath(p: string, field: string): void {
  if (!p) throw invalidArgument(`${field}: path is empty`);
  if (path.isAbsolute(p)) throw invalidArgument(`${field}: path ${JSON.stringify(p)} must be relative`);
  if (p.split('/').includes('..')) throw invalidArgument(`${field}: path ${JSON.stringify(p)} must not contain '..'`);
  if (p.startsWith('..')) throw invalidArgument(`${field}: path ${JSON.stringify(p)} must not start with '..'`);
}

async function readCurrent(dir: string): Promise<Payload | undefined> {
  let target: string;
  try {
    target = await fsp.readlink(path.join(dir, DATA_LINK));
  } catch {
    return undefined;
  }
  const root = path.join(dir, target);
  const out: Payload = new Map();
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await fsp.readdir(path.join(root, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(child);
      else {
        const file = path.join(root, child);
        const [data, st] = await Promise.all([fsp.readFile(file), fsp.stat(file)]);
        out.set(child, { data, mode: st.mode & 0o7777 });
      }
    }
  };
  await walk('');
  return out;
}

function samePayload(a: Payload, b: Payload): boolean {
  if (a.size !== b.size) return false;
  for (const [p, f] of a) {
    const g = b.get(p);
    if (!g || g.mode !== f.mode || !g.data.equals(f.data)) return false;
  }
  return true;
}

function topLevelNames(payload: Payload): Set<string> {
  return new Set([...payload.keys()].map((p) => p.split('/')[0]));
}

function generationName(): string {
  const now = new Date();
  const stamp = now.toISOString().replace(/[-:]/g, '_').replace('T', '_').replace(/\.\d+Z$/, '');
  return `..${stamp}.${process.hrtime.bigint().toString().slice(-9)}`;
}

/** Makes `dir` hold exactly `payload`; returns false when it already did. */
export async function writePayload(dir: string, payload: Payload): Promise<boolean> {
  for (const p of payload.keys()) checkPayloadPath(p, 'payload');
  await fsp.mkdir(dir, { recursive: true });
  const current = await readCurrent(dir);
  const wanted = topLevelNames(payload);
  if (current && samePayload(current, payload)) {
    await linkTopLevel(dir, wanted);
    return false;
  }
  const oldTarget = current ? await fsp.readlink(path.join(dir, DATA_LINK)) : undefined;
  const generation = generationName();
  const genDir = path.join(dir, generation);
  await fsp.mkdir(genDir, { mode: 0o755 });
  for (const [rel, file] of payload) {
    const dest = path.join(genDir, rel);
    await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o755 });
    await fsp.writeFile(dest, file.data, { mode: file.mode });
    await fsp.chmod(dest, file.mode);
  }
  const tmpLink = path.join(dir, `${DATA_LINK}_tmp`);
  await fsp.rm(tmpLink, { force: true });
  await fsp.symlink(generation, tmpLink);
  await fsp.rename(tmpLink, path.join(dir, DATA_LINK));
  await linkTopLevel(dir, wanted);
  if (oldTarget && oldTarget !== generation) await fsp.rm(path.join(dir, oldTarget), { recursive: true, force: true });
  return true;
}

/** Creates the user-visible symlinks and removes the ones no longer in the payload. */
async function linkTopLevel(dir: string, wanted: Set<string>): Promise<void> {
  for (const entry of await fsp.readdir(dir)) {
    if (entry.startsWith('..') || wanted.has(entry)) continue;
    await fsp.rm(path.join(dir, entry), { recursive: true, force: true });
  }
  for (const name of wanted) {
    const link = path.join(dir, name);
    const target = path.join(DATA_LINK, name);
    const existing = await fsp.readlink(link).catch(() => undefined);
    if (existing === target) continue;
    await fsp.rm(link, { recursive: true, force: true });
    await fsp.symlink(target, link);
  }
}
