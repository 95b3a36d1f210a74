// The pod's fsGroup on its volumes, as the kubelet's SetVolumeOwnership: every file and directory gets the group,
// group read (and write, unless the volume is read-only) permission, directories the setgid bit so new files
// inherit the group. fsGroupChangePolicy OnRootMismatch skips the walk when the volume's root already matches.
import { promises as fsp, type Stats } from 'node:fs';
import path from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import type { Payload } from './atomic-writer.js';

const RW_MASK = 0o660;
const RO_MASK = 0o440;
const EXEC_MASK = 0o110;
const SETGID = 0o2000;

export interface FsGroup {
  gid: number;
  onRootMismatch: boolean;
}

export function fsGroupOf(pod: V1Pod): FsGroup | undefined {
  const sc = pod.spec?.securityContext;
  if (sc?.fsGroup === undefined || sc.fsGroup === null) return undefined;
  return { gid: Number(sc.fsGroup), onRootMismatch: sc.fsGroupChangePolicy === 'OnRootMismatch' };
}

/** Pure: the mode a file or directory gets under an fsGroup. */
export function fsGroupMode(mode: number, isDir: boolean, readOnly: boolean): number {
  let mask = readOnly ? RO_MASK : RW_MASK;
  if (isDir) mask |= EXEC_MASK | SETGID;
  return (mode & 0o7777) | mask;
}

/** Pure: does the volume's root say the walk is needed (OnRootMismatch)? */
export function rootMismatch(root: Pick<Stats, 'gid' | 'mode' | 'isDirectory'>, gid: number, readOnly: boolean): boolean {
  if (root.gid !== gid || !root.isDirectory()) return true;
  const want = (readOnly ? RO_MASK : RW_MASK) | EXEC_MASK;
  return (root.mode & want) !== want || (root.mode & SETGID) === 0;
}

/** Payload files carry the fsGroup modes already, so a refresh that changed nothing compares equal. */
export function payloadWithFsGroup(payload: Payload, fsGroup: FsGroup | undefined): Payload {
  if (!fsGroup) return payload;
  return new Map([...payload].map(([p, f]) => [p, { ...f, mode: fsGroupMode(f.mode, false, true) }]));
}

/** Applies the pod's fsGroup to a volume directory (nothing without one). `policyApplies`: false for API data volumes (always walked, as the kubelet does). */
export async function applyFsGroup(dir: string, fsGroup: FsGroup | undefined, opts: { readOnly: boolean; policyApplies: boolean }): Promise<void> {
  if (!fsGroup) return;
  if (opts.policyApplies && fsGroup.onRootMismatch && !rootMismatch(await fsp.stat(dir), fsGroup.gid, opts.readOnly)) return;
  const walk = async (p: string): Promise<void> => {
    const st = await fsp.lstat(p);
    await fsp.lchown(p, -1, fsGroup.gid);
    if (st.isSymbolicLink()) return; // symlinks keep their (meaningless) mode
    const mode = fsGroupMode(st.mode, st.isDirectory(), opts.readOnly);
    if (mode !== (st.mode & 0o7777)) await fsp.chmod(p, mode);
    if (st.isDirectory()) for (const entry of await fsp.readdir(p)) await walk(path.join(p, entry));
  };
  await walk(dir);
}
