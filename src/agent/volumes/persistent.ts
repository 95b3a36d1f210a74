// PersistentVolumeClaim and generic ephemeral volumes: the claim (for `ephemeral`, the one the controller-manager
// makes from the template, named <pod>-<volume> and owned by the pod) must be Bound before its PersistentVolume
// is mounted — the kubelet's volume manager waits the same way — and the PV's source says how: hostPath and local
// by path, csi through the node plugin. Pure parts: which claim, what is wrong with it, the mount, the in-use name.
import type { V1PersistentVolume, V1PersistentVolumeClaim, V1Pod, V1Volume } from '@kubernetes/client-node';
import { failedPrecondition, invalidArgument } from '../../common/errors.js';

/** The claim a pod volume uses: its own claimName, or <pod>-<volume> for a generic ephemeral volume. */
export function claimNameOf(pod: V1Pod, v: V1Volume): string | undefined {
  if (v.persistentVolumeClaim) return v.persistentVolumeClaim.claimName;
  if (v.ephemeral) return `${pod.metadata!.name}-${v.name}`;
  return undefined;
}

/** Why the claim can't be used yet (the kubelet's wording), or undefined when it is bound to `pv`. */
export function claimProblem(pod: V1Pod, v: V1Volume, pvc: V1PersistentVolumeClaim | undefined, pv?: V1PersistentVolume): string | undefined {
  const ns = pod.metadata!.namespace!;
  const name = claimNameOf(pod, v)!;
  if (!pvc) {
    return v.ephemeral
      ? `error processing PVC ${ns}/${name}: PVC ${ns}/${name} not found (the ephemeral volume controller has not created it yet)`
      : `error processing PVC ${ns}/${name}: PVC ${ns}/${name} not found`;
  }
  if (pvc.metadata?.deletionTimestamp) return `error processing PVC ${ns}/${name}: PVC is being deleted`;
  if (v.ephemeral && !pvc.metadata?.ownerReferences?.some((o) => o.controller && o.uid === pod.metadata!.uid)) {
    return `error processing PVC ${ns}/${name}: PVC was not created for pod ${ns}/${pod.metadata!.name} (pod is not owner)`;
  }
  if (pvc.status?.phase !== 'Bound' || !pvc.spec?.volumeName) return `error processing PVC ${ns}/${name}: PVC is not bound`;
  if (!pv) return `error processing PVC ${ns}/${name}: PersistentVolume ${pvc.spec.volumeName} not found`;
  if (pv.spec?.claimRef?.uid !== pvc.metadata?.uid) {
    return `error processing PVC ${ns}/${name}: PersistentVolume ${pv.metadata!.name} is not bound to this claim (claimRef ${pv.spec?.claimRef?.namespace}/${pv.spec?.claimRef?.name})`;
  }
  return undefined;
}

export type PersistentMount =
  | { kind: 'hostPath'; path: string; type?: string }
  | { kind: 'local'; path: string }
  | {
      kind: 'csi';
      driver: string;
      volumeHandle: string;
      fsType?: string;
      readOnly: boolean;
      volumeAttributes: Record<string, string>;
      mountOptions: string[];
      accessMode: string;
      /** The PV lists ReadWriteOnce (inline volumes: always): the default fsGroupPolicy applies the fsGroup only then. */
      readWriteOnce: boolean;
      /** Secrets for NodeStageVolume and NodePublishVolume (namespace/name). */
      stageSecret?: { namespace: string; name: string };
      publishSecret?: { namespace: string; name: string };
      /** An inline (pod-spec) ephemeral volume: published only, never staged. */
      ephemeral?: boolean;
    };

/** How a bound PV is mounted; a source this node can't mount is an InvalidArgument naming it. */
export function persistentMount(pv: V1PersistentVolume): PersistentMount {
  const spec = pv.spec ?? {};
  if (spec.volumeMode === 'Block') throw invalidArgument(`PersistentVolume ${pv.metadata!.name}: volumeMode Block is not supported by this node`);
  if (spec.hostPath) return { kind: 'hostPath', path: spec.hostPath.path, type: spec.hostPath.type };
  if (spec.local) return { kind: 'local', path: spec.local.path };
  if (spec.csi) {
    const modes = spec.accessModes ?? [];
    // The kubelet's mapping of the PV's access modes to the CSI one.
    const accessMode = modes.includes('ReadWriteOncePod')
      ? 'SINGLE_NODE_SINGLE_WRITER'
      : modes.includes('ReadWriteMany')
        ? 'MULTI_NODE_MULTI_WRITER'
        : modes.includes('ReadOnlyMany') && !modes.includes('ReadWriteOnce')
          ? 'MULTI_NODE_READER_ONLY'
          : 'SINGLE_NODE_WRITER';
    return {
      kind: 'csi',
      driver: spec.csi.driver,
      volumeHandle: spec.csi.volumeHandle,
      fsType: spec.csi.fsType,
      readOnly: Boolean(spec.csi.readOnly),
      volumeAttributes: spec.csi.volumeAttributes ?? {},
      mountOptions: spec.mountOptions ?? [],
      accessMode,
      readWriteOnce: modes.includes('ReadWriteOnce'),
      ...(spec.csi.nodeStageSecretRef?.name ? { stageSecret: { namespace: spec.csi.nodeStageSecretRef.namespace ?? 'default', name: spec.csi.nodeStageSecretRef.name } } : {}),
      ...(spec.csi.nodePublishSecretRef?.name ? { publishSecret: { namespace: spec.csi.nodePublishSecretRef.namespace ?? 'default', name: spec.csi.nodePublishSecretRef.name } } : {}),
    };
  }
  const kind = Object.keys(spec).find((k) => !['accessModes', 'capacity', 'claimRef', 'persistentVolumeReclaimPolicy', 'storageClassName', 'mountOptions', 'volumeMode', 'nodeAffinity', 'volumeAttributesClassName'].includes(k));
  throw invalidArgument(`PersistentVolume ${pv.metadata!.name}: volume source ${kind ?? 'unknown'} is not supported by this node`);
}

/** node.status.volumesInUse name of a PV, for the kinds the kubelet reports (device-mountable or attachable). */
export function volumeInUseName(pv: V1PersistentVolume): string | undefined {
  if (pv.spec?.local) return `kubernetes.io/local-volume/${pv.metadata!.name}`;
  if (pv.spec?.csi) return `kubernetes.io/csi/${pv.spec.csi.driver}^${pv.spec.csi.volumeHandle}`;
  return undefined;
}

/** A claim that is not usable yet: the pod waits (its worker retries), as the kubelet's volume manager does. */
export function claimNotReady(message: string): Error {
  return failedPrecondition(message);
}
