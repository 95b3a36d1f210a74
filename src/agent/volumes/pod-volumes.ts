// A pod's volumes on this node: set up before its sandbox, refreshed while it runs, torn down once it is gone.
// Layout: <root>/pods/<uid>/volumes/<plugin>/<volume name>.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { V1Pod, V1Volume } from '@kubernetes/client-node';
import { errorMessage, invalidArgument } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { parseQuantity } from '../pod-spec.js';
import { writePayload, type Payload } from './atomic-writer.js';
import { prepareHostPath } from './host-path.js';
import { downwardApiPayload, keyedPayload, projectedPayload, type VolumeDataSource } from './sources.js';
import { ensureTmpfs, unmountAllUnder } from './tmpfs.js';
import { inlineCsiMount } from '../csi/volumes.js';
import { claimNameOf, claimNotReady, claimProblem, persistentMount, volumeInUseName, type PersistentMount } from './persistent.js';
import { applyFsGroup, fsGroupOf, payloadWithFsGroup } from './fs-group.js';

export const PLUGIN_DIRS = {
  emptyDir: 'kubernetes.io~empty-dir',
  configMap: 'kubernetes.io~configmap',
  secret: 'kubernetes.io~secret',
  downwardAPI: 'kubernetes.io~downward-api',
  projected: 'kubernetes.io~projected',
} as const;

export interface MountedVolume {
  hostPath: string;
  /** API data volumes (configMap, secret, downwardAPI, projected) are always mounted read-only. */
  readOnly: boolean;
}

/** A volume that could not be set up; the message is the kubelet's FailedMount text. */
export class VolumeSetUpError extends Error {
  constructor(readonly volume: string, cause: string) {
    super(`MountVolume.SetUp failed for volume "${volume}" : ${cause}`);
  }
}

/** Mounts CSI volumes through their node plugins (csi/volumes.ts). */
export interface CsiPublisher {
  /** Stages (once per volume) and publishes the volume for the pod (read-only when the claim asks); answers the published path. */
  publish(pod: V1Pod, pvName: string, mount: Extract<PersistentMount, { kind: 'csi' }>, readOnly?: boolean): Promise<string>;
  /** Unpublishes every CSI volume of the pod (and unstages those no other pod uses). */
  unpublishPod(podUid: string): Promise<void>;
}

export function podDir(root: string, uid: string): string {
  return path.join(root, 'pods', uid);
}

export class PodVolumes {
  private readonly volumesDir: string;
  private lastRefresh = 0;

  constructor(
    private readonly root: string,
    readonly uid: string,
    private readonly data: VolumeDataSource,
    private readonly log: Logger,
    private readonly csi?: CsiPublisher,
  ) {
    this.volumesDir = path.join(podDir(root, uid), 'volumes');
  }

  dirOf(plugin: keyof typeof PLUGIN_DIRS, name: string): string {
    return path.join(this.volumesDir, PLUGIN_DIRS[plugin], name);
  }

  /** Makes every volume of the pod ready (idempotent: an adopted pod's volumes are found in place). */
  async setUp(pod: V1Pod): Promise<Map<string, MountedVolume>> {
    const mounted = new Map<string, MountedVolume>();
    const inUse: string[] = [];
    try {
      for (const v of pod.spec?.volumes ?? []) {
        try {
          mounted.set(v.name, await this.setUpOne(pod, v, inUse));
        } catch (err) {
          throw new VolumeSetUpError(v.name, errorMessage(err));
        }
      }
    } finally {
      // Reported before (and while) they are mounted, so nothing detaches a volume a pod is about to use.
      this.data.setVolumesInUse?.(this.uid, inUse);
    }
    this.data.setClaimMounts?.(
      this.uid,
      (pod.spec?.volumes ?? []).flatMap((v) => {
        const claim = claimNameOf(pod, v);
        const m = mounted.get(v.name);
        return claim && m ? [{ podUid: this.uid, namespace: pod.metadata!.namespace!, pod: pod.metadata!.name!, volume: v.name, claim, path: m.hostPath }] : [];
      }),
    );
    this.lastRefresh = Date.now();
    return mounted;
  }

  /** Rewrites the API data volumes from the objects' current contents, at most every minIntervalMs. */
  async refresh(pod: V1Pod, minIntervalMs: number): Promise<void> {
    if (Date.now() - this.lastRefresh < minIntervalMs) return;
    this.lastRefresh = Date.now();
    for (const v of pod.spec?.volumes ?? []) {
      if (!(v.configMap || v.secret || v.downwardAPI || v.projected)) continue;
      try {
        const payload = payloadWithFsGroup(await this.payloadOf(pod, v), fsGroupOf(pod));
        const dir = this.dirOf(pluginOf(v), v.name);
        if (await writePayload(dir, payload)) {
          await applyFsGroup(dir, fsGroupOf(pod), { readOnly: true, policyApplies: false });
          this.log.info({ volume: v.name }, 'volume contents updated');
        }
      } catch (err) {
        // The kubelet keeps the last good contents when an object disappears or cannot be read.
        this.log.debug({ volume: v.name, err: errorMessage(err) }, 'volume refresh failed');
      }
    }
  }

  async tearDown(): Promise<void> {
    const dir = podDir(this.root, this.uid);
    // CSI volumes are the plugin's to unmount; whatever is left under the pod dir is ours.
    await this.csi?.unpublishPod(this.uid);
    this.data.setVolumesInUse?.(this.uid, []);
    this.data.setClaimMounts?.(this.uid, []);
    await unmountAllUnder(dir);
    await fsp.rm(this.volumesDir, { recursive: true, force: true });
    await fsp.rmdir(dir).catch(() => undefined);
  }

  private async setUpOne(pod: V1Pod, v: V1Volume, inUse: string[]): Promise<MountedVolume> {
    if (v.persistentVolumeClaim || v.ephemeral) return this.setUpClaim(pod, v, inUse);
    if (v.csi) {
      if (!this.csi) throw invalidArgument('csi volumes need the agent\'s CSI plugin manager');
      return { hostPath: await this.csi.publish(pod, v.name, inlineCsiMount(pod, v)), readOnly: Boolean(v.csi.readOnly) };
    }
    if (v.hostPath) {
      await prepareHostPath(v.hostPath.path, v.hostPath.type);
      return { hostPath: v.hostPath.path, readOnly: false };
    }
    if (v.emptyDir) {
      const dir = this.dirOf('emptyDir', v.name);
      const medium = v.emptyDir.medium ?? '';
      if (medium === 'Memory') {
        const size = v.emptyDir.sizeLimit !== undefined ? parseQuantity(v.emptyDir.sizeLimit as string) : undefined;
        await ensureTmpfs(dir, size);
      } else if (medium === '') {
        await fsp.mkdir(dir, { recursive: true, mode: 0o777 });
        // 0777, keeping a setgid bit an fsGroup put there (an adopted pod's volume).
        await fsp.chmod(dir, ((await fsp.stat(dir)).mode & 0o7000) | 0o777);
      } else {
        throw invalidArgument(`emptyDir medium ${JSON.stringify(medium)} is not supported`);
      }
      await applyFsGroup(dir, fsGroupOf(pod), { readOnly: false, policyApplies: true });
      return { hostPath: dir, readOnly: false };
    }
    if (v.configMap || v.secret || v.downwardAPI || v.projected) {
      const plugin = pluginOf(v);
      const dir = this.dirOf(plugin, v.name);
      // Secrets and tokens never touch the disk.
      if (plugin === 'secret' || plugin === 'projected') await ensureTmpfs(dir);
      else await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
      await writePayload(dir, payloadWithFsGroup(await this.payloadOf(pod, v), fsGroupOf(pod)));
      await applyFsGroup(dir, fsGroupOf(pod), { readOnly: true, policyApplies: false });
      return { hostPath: dir, readOnly: true };
    }
    const kind = Object.keys(v).find((k) => k !== 'name') ?? 'unknown';
    throw invalidArgument(`volume type ${kind} is not supported by this node`);
  }

  /** A PVC (or generic ephemeral) volume: waits for the claim to be bound, then mounts its PersistentVolume. */
  private async setUpClaim(pod: V1Pod, v: V1Volume, inUse: string[]): Promise<MountedVolume> {
    if (!this.data.claim || !this.data.persistentVolume) throw invalidArgument('persistentVolumeClaim and ephemeral volumes need an API server');
    const pvc = await this.data.claim(pod.metadata!.namespace!, claimNameOf(pod, v)!);
    const pv = pvc?.status?.phase === 'Bound' && pvc.spec?.volumeName ? await this.data.persistentVolume(pvc.spec.volumeName) : undefined;
    const problem = claimProblem(pod, v, pvc, pv);
    if (problem) throw claimNotReady(problem);
    const mount = persistentMount(pv!);
    const name = volumeInUseName(pv!);
    if (name) inUse.push(name);
    const readOnly = Boolean(v.persistentVolumeClaim?.readOnly);
    switch (mount.kind) {
      case 'hostPath':
        await prepareHostPath(mount.path, mount.type);
        return { hostPath: mount.path, readOnly };
      case 'local': {
        const st = await fsp.stat(mount.path).catch(() => undefined);
        if (!st) throw claimNotReady(`local volume ${pv!.metadata!.name}: path ${mount.path} does not exist`);
        // As the kubelet's local volumes (hostPath ones never get it): the fsGroup unless mounted read-only.
        if (!readOnly) await applyFsGroup(mount.path, fsGroupOf(pod), { readOnly: false, policyApplies: true });
        return { hostPath: mount.path, readOnly };
      }
      case 'csi':
        if (!this.csi) throw invalidArgument(`PersistentVolume ${pv!.metadata!.name}: CSI volumes need the agent's CSI plugin manager`);
        return { hostPath: await this.csi.publish(pod, pv!.metadata!.name!, mount, readOnly || mount.readOnly), readOnly: readOnly || mount.readOnly };
    }
  }

  private async payloadOf(pod: V1Pod, v: V1Volume): Promise<Payload> {
    const ns = pod.metadata!.namespace!;
    if (v.configMap) {
      const name = v.configMap.name!;
      return keyedPayload('configmap', name, await this.data.configMap(ns, name), v.configMap);
    }
    if (v.secret) {
      const name = v.secret.secretName!;
      return keyedPayload('secret', name, await this.data.secret(ns, name), v.secret);
    }
    if (v.downwardAPI) return downwardApiPayload(pod, v.downwardAPI.items ?? [], v.downwardAPI.defaultMode);
    if (v.projected) return projectedPayload(pod, v.projected.sources ?? [], v.projected.defaultMode, this.data);
    throw invalidArgument(`volume ${v.name} has no data source`);
  }
}

function pluginOf(v: V1Volume): keyof typeof PLUGIN_DIRS {
  if (v.configMap) return 'configMap';
  if (v.secret) return 'secret';
  if (v.downwardAPI) return 'downwardAPI';
  if (v.projected) return 'projected';
  return 'emptyDir';
}
