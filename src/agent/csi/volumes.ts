// CSI volumes of pods, the kubelet's layout and calls: stage once per volume at
// <root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/globalmount (NodeStageVolume, when the driver has
// STAGE_UNSTAGE_VOLUME), publish per pod at <root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount
// (NodePublishVolume); a vol_data.json beside each says what it is, so an agent restarted later can undo it:
// NodeUnpublishVolume for the pod, NodeUnstageVolume once no other pod publishes that volume.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { StorageV1Api, type KubeConfig, type V1CSIDriver, type V1Pod, type V1Volume } from '@kubernetes/client-node';
import { errorMessage, failedPrecondition } from '../../common/errors.js';
import { apiErrorCode, makeApiClient } from '../kube-client.js';
import type { Logger } from '../../common/log.js';
import type { PersistentMount } from '../volumes/persistent.js';
import type { CsiPublisher } from '../volumes/pod-volumes.js';
import type { CsiPlugins } from './plugins.js';
import { applyFsGroup, fsGroupOf } from '../volumes/fs-group.js';

type CsiMount = Extract<PersistentMount, { kind: 'csi' }>;

interface VolData {
  driverName: string;
  volumeHandle: string;
  specVolID: string;
  stagingPath?: string;
}

export const CSI_PLUGIN_DIR = 'kubernetes.io~csi';

/** The volume capability the kubelet sends for a filesystem volume. */
export function volumeCapability(m: CsiMount): object {
  return { mount: { fs_type: m.fsType ?? '', mount_flags: m.mountOptions }, access_mode: { mode: m.accessMode } };
}

/**
 * Whether the kubelet applies the pod's fsGroup to a published CSI volume itself: never when read-only or the
 * CSIDriver's fsGroupPolicy is None; always with File; with the default ReadWriteOnceWithFSType only for a
 * volume with an fsType that is mounted ReadWriteOnce.
 */
export function csiAppliesFsGroup(policy: string | undefined, m: Pick<CsiMount, 'fsType' | 'readWriteOnce'>, readOnly: boolean): boolean {
  if (readOnly || policy === 'None') return false;
  if (policy === 'File') return true;
  return Boolean(m.fsType) && m.readWriteOnce;
}

/** The VolumeAttachment the attach/detach controller makes for a CSI volume on a node (the kubelet's name). */
export function volumeAttachmentName(volumeHandle: string, driver: string, nodeName: string): string {
  return `csi-${createHash('sha256').update(`${volumeHandle}${driver}${nodeName}`).digest('hex')}`;
}

/** An inline CSI volume's handle: the kubelet's csi-<sha256(pod uid + volume name)>. */
export function inlineVolumeHandle(podUid: string, volumeName: string): string {
  return `csi-${createHash('sha256').update(`${podUid}${volumeName}`).digest('hex')}`;
}

/** How an inline (pod-spec) CSI volume mounts: published only, read-write once unless readOnly. */
export function inlineCsiMount(pod: V1Pod, v: V1Volume): CsiMount {
  const csi = v.csi!;
  return {
    kind: 'csi',
    driver: csi.driver,
    volumeHandle: inlineVolumeHandle(pod.metadata!.uid!, v.name),
    fsType: csi.fsType,
    readOnly: Boolean(csi.readOnly),
    volumeAttributes: csi.volumeAttributes ?? {},
    mountOptions: [],
    accessMode: 'SINGLE_NODE_WRITER',
    readWriteOnce: true,
    ...(csi.nodePublishSecretRef?.name ? { publishSecret: { namespace: pod.metadata!.namespace!, name: csi.nodePublishSecretRef.name } } : {}),
    ephemeral: true,
  };
}

/** The pod's identity in volume_context when the CSIDriver asks for it (podInfoOnMount). */
export function podInfoContext(pod: V1Pod): Record<string, string> {
  return {
    'csi.storage.k8s.io/pod.name': pod.metadata?.name ?? '',
    'csi.storage.k8s.io/pod.namespace': pod.metadata?.namespace ?? '',
    'csi.storage.k8s.io/pod.uid': pod.metadata?.uid ?? '',
    'csi.storage.k8s.io/serviceAccount.name': pod.spec?.serviceAccountName || 'default',
    'csi.storage.k8s.io/ephemeral': 'false',
  };
}

export class CsiVolumes implements CsiPublisher {
  private readonly storage?: StorageV1Api;

  constructor(
    private readonly root: string,
    private readonly plugins: CsiPlugins,
    private readonly log: Logger,
    /** The cluster: CSIDriver (attachRequired, podInfoOnMount) and VolumeAttachment are read from it, secrets too. */
    private readonly cluster?: { config: KubeConfig; nodeName: string; secret(namespace: string, name: string): Promise<Record<string, Buffer> | undefined> },
  ) {
    if (cluster) this.storage = makeApiClient(cluster.config, StorageV1Api);
  }

  private async csiDriver(name: string): Promise<V1CSIDriver | undefined> {
    if (!this.storage) return undefined;
    try {
      return await this.storage.readCSIDriver({ name });
    } catch (err) {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    }
  }

  /** WaitForAttach: with attachRequired (also when no CSIDriver says otherwise) the volume's VolumeAttachment must
   * be attached (by the driver's external-attacher) before staging; its attachmentMetadata is the publish_context. */
  private async attachment(m: CsiMount, csiDriver: V1CSIDriver | undefined): Promise<Record<string, string>> {
    if (!this.storage || !this.cluster || csiDriver?.spec?.attachRequired === false) return {};
    const name = volumeAttachmentName(m.volumeHandle, m.driver, this.cluster.nodeName);
    const va = await this.storage.readVolumeAttachment({ name }).catch((err) => {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    });
    if (!va?.status?.attached) {
      const why = va?.status?.attachError?.message ? `: ${va.status.attachError.message}` : va ? '' : ' (not created yet)';
      throw failedPrecondition(`volume ${m.volumeHandle} is not attached yet: waiting for the external-attacher of ${m.driver} to attach it (VolumeAttachment ${name}${why})`);
    }
    return va.status.attachmentMetadata ?? {};
  }

  stagingPath(driver: string, handle: string): string {
    return path.join(this.root, 'plugins', 'kubernetes.io', 'csi', driver, createHash('sha256').update(handle).digest('hex'), 'globalmount');
  }

  private podCsiDir(podUid: string): string {
    return path.join(this.root, 'pods', podUid, 'volumes', CSI_PLUGIN_DIR);
  }

  private async secrets(ref: { namespace: string; name: string } | undefined): Promise<Record<string, string>> {
    if (!ref) return {};
    const data = await this.cluster?.secret(ref.namespace, ref.name);
    if (!data) throw failedPrecondition(`secret ${ref.namespace}/${ref.name} not found`);
    return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, v.toString()]));
  }

  /** Stages (when the driver does) and publishes the volume for the pod; `readOnly`: the pod's claim asks for it. */
  async publish(pod: V1Pod, pvName: string, m: CsiMount, readOnly = m.readOnly): Promise<string> {
    const podUid = pod.metadata!.uid!;
    const driver = this.plugins.driver(m.driver);
    if (!driver) throw failedPrecondition(`kubernetes.io/csi: driver name ${m.driver} not found in the list of registered CSI drivers`);
    const csiDriver = await this.csiDriver(m.driver);
    if (m.ephemeral && !(csiDriver?.spec?.volumeLifecycleModes ?? []).includes('Ephemeral')) {
      throw failedPrecondition(`volume mode "Ephemeral" not supported by driver ${m.driver} (only supports ${JSON.stringify(csiDriver?.spec?.volumeLifecycleModes ?? ['Persistent'])})`);
    }
    const publishContext = m.ephemeral ? {} : await this.attachment(m, csiDriver);
    const capability = volumeCapability(m);
    let publishVolumeContext = csiDriver?.spec?.podInfoOnMount ? { ...m.volumeAttributes, ...podInfoContext(pod) } : m.volumeAttributes;
    if (m.ephemeral) publishVolumeContext = { ...publishVolumeContext, 'csi.storage.k8s.io/ephemeral': 'true' };
    let stagingPath: string | undefined;
    if (driver.stageUnstage && !m.ephemeral) {
      stagingPath = this.stagingPath(m.driver, m.volumeHandle);
      await fsp.mkdir(stagingPath, { recursive: true, mode: 0o750 });
      await writeVolData(path.dirname(stagingPath), { driverName: m.driver, volumeHandle: m.volumeHandle, specVolID: pvName });
      await driver.node.call('NodeStageVolume', {
        volume_id: m.volumeHandle, publish_context: publishContext, staging_target_path: stagingPath, volume_capability: capability, volume_context: m.volumeAttributes,
        secrets: await this.secrets(m.stageSecret),
      }, 120_000);
    }
    const dir = path.join(this.podCsiDir(podUid), pvName);
    const target = path.join(dir, 'mount');
    // The parent and its vol_data.json are ours; the target itself is the plugin's to make (CSI spec).
    await fsp.mkdir(dir, { recursive: true, mode: 0o750 });
    await writeVolData(dir, { driverName: m.driver, volumeHandle: m.volumeHandle, specVolID: pvName, stagingPath });
    await driver.node.call('NodePublishVolume', {
      volume_id: m.volumeHandle,
      publish_context: publishContext,
      staging_target_path: stagingPath ?? '',
      target_path: target,
      volume_capability: capability,
      readonly: m.readOnly,
      secrets: await this.secrets(m.publishSecret),
      volume_context: publishVolumeContext,
    }, 120_000);
    this.log.info({ driver: m.driver, volume: m.volumeHandle, pv: pvName, target }, 'CSI volume published');
    if (csiAppliesFsGroup(csiDriver?.spec?.fsGroupPolicy, m, readOnly || m.readOnly)) await applyFsGroup(target, fsGroupOf(pod), { readOnly: false, policyApplies: true });
    return target;
  }

  async unpublishPod(podUid: string): Promise<void> {
    const base = this.podCsiDir(podUid);
    const names = await fsp.readdir(base).catch(() => [] as string[]);
    for (const name of names) {
      const dir = path.join(base, name);
      const data = await readVolData(dir);
      if (!data) continue;
      const driver = this.plugins.driver(data.driverName);
      if (!driver) {
        this.log.warn({ driver: data.driverName, volume: data.volumeHandle }, 'CSI driver not registered; its volume is unmounted without it');
        continue;
      }
      try {
        await driver.node.call('NodeUnpublishVolume', { volume_id: data.volumeHandle, target_path: path.join(dir, 'mount') }, 120_000);
        await fsp.rm(path.join(dir, 'vol_data.json'), { force: true });
        await fsp.rmdir(path.join(dir, 'mount')).catch(() => undefined);
        await fsp.rmdir(dir).catch(() => undefined);
        if (data.stagingPath && !(await this.publishedElsewhere(podUid, data))) {
          await driver.node.call('NodeUnstageVolume', { volume_id: data.volumeHandle, staging_target_path: data.stagingPath }, 120_000);
          await fsp.rmdir(data.stagingPath).catch(() => undefined);
          await fsp.rm(path.join(path.dirname(data.stagingPath), 'vol_data.json'), { force: true });
          await fsp.rmdir(path.dirname(data.stagingPath)).catch(() => undefined);
        }
        this.log.info({ driver: data.driverName, volume: data.volumeHandle, pv: data.specVolID }, 'CSI volume unpublished');
      } catch (err) {
        this.log.warn({ driver: data.driverName, volume: data.volumeHandle, err: errorMessage(err) }, 'CSI unpublish failed');
      }
    }
  }

  /** Whether another pod still has this volume published (its staging must stay). */
  private async publishedElsewhere(podUid: string, data: VolData): Promise<boolean> {
    const podsDir = path.join(this.root, 'pods');
    for (const uid of await fsp.readdir(podsDir).catch(() => [] as string[])) {
      if (uid === podUid) continue;
      const base = path.join(podsDir, uid, 'volumes', CSI_PLUGIN_DIR);
      for (const name of await fsp.readdir(base).catch(() => [] as string[])) {
        const other = await readVolData(path.join(base, name));
        if (other?.driverName === data.driverName && other.volumeHandle === data.volumeHandle) return true;
      }
    }
    return false;
  }
}

async function writeVolData(dir: string, data: VolData): Promise<void> {
  await fsp.writeFile(path.join(dir, 'vol_data.json'), JSON.stringify(data), { mode: 0o600 });
}

async function readVolData(dir: string): Promise<VolData | undefined> {
  try {
    return JSON.parse(await fsp.readFile(path.join(dir, 'vol_data.json'), 'utf8')) as VolData;
  } catch {
    return undefined;
  }
}
