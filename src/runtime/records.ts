// The durable records of sandboxes and containers (what survives a daemon restart).
import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';
import type { ImageVolume } from './image-volumes.js';
import type { OciSpec } from '../oci/types.js';

/**
 * 'creating' marks a record whose set-up did not finish: recovery undoes it. 'removing' (containers):
 * RemoveContainer answered, the teardown runs in the background; recovery finishes it.
 */
export type Phase = 'creating' | 'ready' | 'removing';

export type SandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface SandboxRecord {
  id: string;
  phase: Phase;
  state: SandboxState;
  /** name_namespace_uid_attempt: a second sandbox with it is refused. */
  reservedName: string;
  createdAt: string; // ns since the epoch, decimal
  config: PodSandboxConfig__Output;
  runtimeHandler: string;
  hostNetwork: boolean;
  netnsPath?: string;
  ips: string[];
  /** Network set up and not yet torn down (teardown survives restarts). */
  networkAttached: boolean;
  shmPath: string;
  shmMounted: boolean;
  infraPid?: number;
  stoppedAt?: string;
  /** The first directory of log_directory this sandbox's creation made (removed if the creation fails). */
  createdLogDirectory?: string;
}

export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';

export interface ContainerRecord {
  id: string;
  phase: Phase;
  state: ContainerState;
  sandboxId: string;
  reservedName: string;
  config: ContainerConfig__Output;
  runtimeHandler: string;
  /** What the client asked for (config.image.image) and what it resolved to. */
  imageName: string;
  imageId: string;
  imageRef: string;
  logPath: string;
  rootfs: string;
  rootfsMounted: boolean;
  stopSignal: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  exitCode?: number;
  reason?: string;
  message?: string;
  pid?: number;
  resources?: LinuxContainerResources__Output | null;
  /** The log file did not exist before this container's creation (a failed creation removes it). */
  logFileIsNew?: boolean;
  /** The first directory of the log file's path this container's creation made. */
  createdLogDirectory?: string;
  /** Images mounted as volumes (absent in records written before image volumes existed). */
  imageVolumes?: ImageVolume[];
  /** The identity the container's first process runs as (ContainerStatus.user); absent in older records. */
  user?: { uid: number; gid: number; additionalGids: number[] };
  /**
   * The OCI spec StartContainer hands the runtime. Set only while the container is created and not yet
   * known to the runtime (CreateContainer does not touch it, as containerd's does not); absent in records
   * of containers the runtime has (started ones, and created ones from before the split).
   */
  spec?: OciSpec;
  /** The image's layer dirs (top first) the rootfs overlay is made of; needed to mount it at start. */
  lowerDirs?: string[];
}

/** Image ids a container needs kept: its own image and those of its image volumes. */
export function imageIdsUsedBy(rec: ContainerRecord): string[] {
  return [rec.imageId, ...(rec.imageVolumes ?? []).map((v) => v.imageId)];
}

export function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

export function dateToNs(d: Date): string {
  return (BigInt(d.getTime()) * 1_000_000n).toString();
}
