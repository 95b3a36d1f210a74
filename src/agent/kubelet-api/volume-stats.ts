// PersistentVolumeClaim volume figures (statfs of the mounted volume), as the kubelet reports them: in
// /stats/summary (pods[].volume[] with pvcRef) and as kubelet_volume_stats_* in /metrics — what "PVC almost
// full" alerts read. volumeStatsFromStatfs is pure.
import { promises as fsp, type StatsFs } from 'node:fs';

/** A mounted claim volume of a pod (recorded by the pod's volumes when set up). */
export interface ClaimMount {
  podUid: string;
  namespace: string;
  pod: string;
  volume: string;
  claim: string;
  path: string;
}

export interface VolumeStats {
  time: string;
  name: string;
  pvcRef: { name: string; namespace: string };
  capacityBytes: number;
  availableBytes: number;
  usedBytes: number;
  inodes: number;
  inodesFree: number;
  inodesUsed: number;
}

export function volumeStatsFromStatfs(m: ClaimMount, s: Pick<StatsFs, 'bsize' | 'blocks' | 'bfree' | 'bavail' | 'files' | 'ffree'>, now = Date.now()): VolumeStats {
  return {
    time: new Date(now).toISOString().replace(/\.\d+Z$/, 'Z'),
    name: m.volume,
    pvcRef: { name: m.claim, namespace: m.namespace },
    capacityBytes: s.blocks * s.bsize,
    availableBytes: s.bavail * s.bsize,
    usedBytes: (s.blocks - s.bfree) * s.bsize,
    inodes: s.files,
    inodesFree: s.ffree,
    inodesUsed: s.files - s.ffree,
  };
}

/** The figures of every mounted claim; one that can't be read (gone meanwhile) is left out. */
export async function claimVolumeStats(mounts: ClaimMount[]): Promise<(VolumeStats & { podUid: string })[]> {
  const out: (VolumeStats & { podUid: string })[] = [];
  for (const m of mounts) {
    const s = await fsp.statfs(m.path).catch(() => undefined);
    if (s) out.push({ ...volumeStatsFromStatfs(m, s), podUid: m.podUid });
  }
  return out;
}
