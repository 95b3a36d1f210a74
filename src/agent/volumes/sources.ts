// The files of API-backed volumes: configMap, secret, downwardAPI and projected, as payloads for the atomic writer.
import type { CoreV1Api, V1KeyToPath, V1Pod, V1DownwardAPIVolumeFile, V1VolumeProjection, V1PersistentVolume, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { invalidArgument, notFound } from '../../common/errors.js';
import { apiErrorCode } from '../kube-client.js';
import { fieldRefValue, resourceFieldValue } from '../pod-spec.js';
import { checkPayloadPath, type Payload } from './atomic-writer.js';
import type { ClaimMount } from '../kubelet-api/volume-stats.js';

export const DEFAULT_VOLUME_MODE = 0o644;
const DEFAULT_TOKEN_SECONDS = 3600;

/** Where volume data comes from: the API when connected; nothing for a standalone agent. */
export interface VolumeDataSource {
  configMap(namespace: string, name: string): Promise<Record<string, Buffer> | undefined>;
  secret(namespace: string, name: string): Promise<Record<string, Buffer> | undefined>;
  serviceAccountToken(pod: V1Pod, audience: string | undefined, expirationSeconds: number): Promise<string>;
  /** PersistentVolumeClaims and PersistentVolumes (absent: a standalone agent has none). */
  claim?(namespace: string, name: string): Promise<V1PersistentVolumeClaim | undefined>;
  persistentVolume?(name: string): Promise<V1PersistentVolume | undefined>;
  /** The pod's volumes that belong in node.status.volumesInUse (replaces what was recorded for it). */
  setVolumesInUse?(uid: string, names: string[]): void;
  /** The pod's mounted claim volumes, for their statistics (replaces what was recorded for it). */
  setClaimMounts?(uid: string, mounts: ClaimMount[]): void;
}

export const noVolumeData: VolumeDataSource = {
  configMap: async () => undefined,
  secret: async () => undefined,
  serviceAccountToken: async () => {
    throw notFound('no API server to request a service account token from');
  },
};

interface CachedToken {
  token: string;
  refreshAt: number;
}

/** Volume data read from the API; tokens cached until 80% of their lifetime (as the kubelet does). */
export class KubeVolumeData implements VolumeDataSource {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inUse = new Map<string, string[]>();
  private readonly claimMountsByPod = new Map<string, ClaimMount[]>();

  constructor(private readonly core: CoreV1Api) {}

  async claim(namespace: string, name: string): Promise<V1PersistentVolumeClaim | undefined> {
    try {
      return await this.core.readNamespacedPersistentVolumeClaim({ name, namespace });
    } catch (err) {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    }
  }

  async persistentVolume(name: string): Promise<V1PersistentVolume | undefined> {
    try {
      return await this.core.readPersistentVolume({ name });
    } catch (err) {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    }
  }

  setClaimMounts(uid: string, mounts: ClaimMount[]): void {
    if (mounts.length) this.claimMountsByPod.set(uid, mounts);
    else this.claimMountsByPod.delete(uid);
  }

  claimMounts(): ClaimMount[] {
    return [...this.claimMountsByPod.values()].flat();
  }

  setVolumesInUse(uid: string, names: string[]): void {
    if (names.length) this.inUse.set(uid, names);
    else this.inUse.delete(uid);
  }

  /** node.status.volumesInUse: every pod's, sorted, once each (node-status.ts reports it). */
  volumesInUse(): string[] {
    return [...new Set([...this.inUse.values()].flat())].sort();
  }

  async configMap(namespace: string, name: string): Promise<Record<string, Buffer> | undefined> {
    try {
      const cm = await this.core.readNamespacedConfigMap({ name, namespace });
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(cm.data ?? {})) out[k] = Buffer.from(v);
      for (const [k, v] of Object.entries(cm.binaryData ?? {})) out[k] = Buffer.from(v, 'base64');
      return out;
    } catch (err) {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    }
  }

  async secret(namespace: string, name: string): Promise<Record<string, Buffer> | undefined> {
    try {
      const secret = await this.core.readNamespacedSecret({ name, namespace });
      const out: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, 'base64');
      for (const [k, v] of Object.entries(secret.stringData ?? {})) out[k] = Buffer.from(v);
      return out;
    } catch (err) {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    }
  }

  async serviceAccountToken(pod: V1Pod, audience: string | undefined, expirationSeconds: number): Promise<string> {
    const m = pod.metadata!;
    const account = pod.spec?.serviceAccountName || 'default';
    const key = `${m.uid}/${account}/${audience ?? ''}/${expirationSeconds}`;
    const cached = this.tokens.get(key);
    if (cached && Date.now() < cached.refreshAt) return cached.token;
    const res = await this.core.createNamespacedServiceAccountToken({
      name: account,
      namespace: m.namespace!,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: {
          audiences: audience ? [audience] : [],
          expirationSeconds,
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: m.name, uid: m.uid },
        },
      },
    });
    const token = res.status?.token;
    if (!token) throw invalidArgument(`TokenRequest for serviceaccount ${m.namespace}/${account} returned no token`);
    const expires = res.status?.expirationTimestamp ? new Date(res.status.expirationTimestamp).getTime() : Date.now() + expirationSeconds * 1000;
    const issued = Date.now();
    this.tokens.set(key, { token, refreshAt: issued + 0.8 * (expires - issued) });
    return token;
  }

  /** Forgets a pod's cached tokens. */
  forget(uid: string): void {
    this.inUse.delete(uid);
    this.claimMountsByPod.delete(uid);
    for (const key of this.tokens.keys()) if (key.startsWith(`${uid}/`)) this.tokens.delete(key);
  }
}

function add(payload: Payload, rel: string, data: Buffer, mode: number, field: string): void {
  checkPayloadPath(rel, field);
  if (payload.has(rel)) throw invalidArgument(`${field}: conflicting path ${JSON.stringify(rel)}`);
  payload.set(rel, { data, mode });
}

/** The files of a configMap or secret (all keys, or the listed items). */
export function keyedPayload(
  kind: 'configmap' | 'secret',
  name: string,
  data: Record<string, Buffer> | undefined,
  opts: { items?: V1KeyToPath[]; defaultMode?: number; optional?: boolean },
  into: Payload = new Map(),
): Payload {
  const mode = opts.defaultMode ?? DEFAULT_VOLUME_MODE;
  if (!data) {
    if (opts.optional) return into;
    throw notFound(`${kind} "${name}" not found`);
  }
  if (!opts.items?.length) {
    for (const [key, value] of Object.entries(data)) add(into, key, value, mode, `${kind} ${name}`);
    return into;
  }
  for (const item of opts.items) {
    const value = data[item.key];
    if (value === undefined) {
      if (opts.optional) continue;
      throw notFound(`${kind} references non-existent ${kind === 'configmap' ? 'config' : 'secret'} key: ${item.key}`);
    }
    add(into, item.path, value, item.mode ?? mode, `${kind} ${name} item ${item.key}`);
  }
  return into;
}

/** Labels and annotations the way the kubelet writes them: sorted `key="value"` lines. */
function formatMap(map: Record<string, string> | undefined): string {
  return Object.keys(map ?? {})
    .sort()
    .map((k) => `${k}=${JSON.stringify(map![k])}`)
    .join('\n');
}

export function downwardApiPayload(
  pod: V1Pod,
  items: V1DownwardAPIVolumeFile[],
  defaultMode: number | undefined,
  into: Payload = new Map(),
): Payload {
  for (const item of items) {
    const mode = item.mode ?? defaultMode ?? DEFAULT_VOLUME_MODE;
    let value: string;
    if (item.fieldRef) {
      const fieldPath = item.fieldRef.fieldPath;
      if (fieldPath === 'metadata.labels') value = formatMap(pod.metadata?.labels);
      else if (fieldPath === 'metadata.annotations') value = formatMap(pod.metadata?.annotations);
      else value = fieldRefValue(pod, fieldPath, { nodeName: pod.spec?.nodeName ?? '', podIP: '', podIPs: [], hostIP: '', lookup: async () => undefined });
    } else if (item.resourceFieldRef) {
      const ref = item.resourceFieldRef;
      const all = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
      const container = all.find((c) => c.name === ref.containerName) ?? (all.length === 1 ? all[0] : undefined);
      if (!container) throw invalidArgument(`downwardAPI ${item.path}: container ${JSON.stringify(ref.containerName)} not found`);
      value = resourceFieldValue(container, ref.resource, ref.divisor as string | undefined);
    } else {
      throw invalidArgument(`downwardAPI ${item.path}: one of fieldRef or resourceFieldRef is required`);
    }
    add(into, item.path, Buffer.from(value), mode, `downwardAPI ${item.path}`);
  }
  return into;
}

export async function projectedPayload(
  pod: V1Pod,
  sources: V1VolumeProjection[],
  defaultMode: number | undefined,
  data: VolumeDataSource,
): Promise<Payload> {
  const ns = pod.metadata!.namespace!;
  const payload: Payload = new Map();
  for (const s of sources) {
    if (s.configMap) {
      const cm = await data.configMap(ns, s.configMap.name!);
      keyedPayload('configmap', s.configMap.name!, cm, { items: s.configMap.items, defaultMode, optional: s.configMap.optional }, payload);
    } else if (s.secret) {
      const secret = await data.secret(ns, s.secret.name!);
      keyedPayload('secret', s.secret.name!, secret, { items: s.secret.items, defaultMode, optional: s.secret.optional }, payload);
    } else if (s.downwardAPI) {
      downwardApiPayload(pod, s.downwardAPI.items ?? [], defaultMode, payload);
    } else if (s.serviceAccountToken) {
      const t = s.serviceAccountToken;
      const token = await data.serviceAccountToken(pod, t.audience, t.expirationSeconds ?? DEFAULT_TOKEN_SECONDS);
      // As the kubelet: with an fsGroup the token is 0600 (0640 once the group is applied), not world-readable.
      const mode = pod.spec?.securityContext?.fsGroup !== undefined && pod.spec?.securityContext?.fsGroup !== null ? 0o600 : (defaultMode ?? DEFAULT_VOLUME_MODE);
      add(payload, t.path, Buffer.from(token), mode, 'serviceAccountToken');
    } else {
      throw invalidArgument('projected volume source not supported (clusterTrustBundle, podCertificate)');
    }
  }
  return payload;
}
