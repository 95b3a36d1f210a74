// Mirror pods: each static pod shown in the API as a pod annotated kubernetes.io/config.mirror = its config
// hash and owned by the Node; recreated when deleted or out of date, removed with the manifest, and carrying
// the static pod's status. The static pod runs from its file whatever happens to its mirror.
// Mirror pods are known from the pod watch (they are bound to this node), never read by name: the node
// authorizer refuses a node's GET of a pod that is not (yet) bound to it, which a missing mirror is.
import type { CoreV1Api, V1Pod, V1PodStatus } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { apiErrorCode, plain } from './kube-client.js';
import { statusFingerprint } from './pod-status.js';
import { CONFIG_HASH_ANNOTATION } from './static-pod-source.js';

export const CONFIG_MIRROR_ANNOTATION = 'kubernetes.io/config.mirror';

export function isMirrorPod(pod: V1Pod): boolean {
  return pod.metadata?.annotations?.[CONFIG_MIRROR_ANNOTATION] !== undefined;
}

function podKey(pod: V1Pod): string {
  return `${pod.metadata!.namespace}/${pod.metadata!.name}`;
}

function configHash(staticPod: V1Pod): string {
  return staticPod.metadata?.annotations?.[CONFIG_HASH_ANNOTATION] ?? staticPod.metadata!.uid!;
}

/** The mirror of a static pod as the kubelet creates it. */
export function mirrorPodFor(staticPod: V1Pod, node: { name: string; uid: string }): V1Pod {
  const m = staticPod.metadata!;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: m.name,
      namespace: m.namespace,
      labels: m.labels,
      annotations: { ...(m.annotations ?? {}), [CONFIG_MIRROR_ANNOTATION]: configHash(staticPod) },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node.name, uid: node.uid, controller: true }],
    },
    spec: plain(staticPod.spec!),
  };
}

export class MirrorPods {
  /** Static pods by namespace/name. */
  private readonly desired = new Map<string, V1Pod>();
  private readonly staticKeys = new Map<string, string>(); // static uid → key
  private readonly mirrorKeys = new Map<string, string>(); // mirror uid → key
  private readonly observed = new Map<string, V1Pod>(); // key → the mirror pod as last seen in the API
  private readonly statuses = new Map<string, V1PodStatus>(); // static uid → latest status
  private readonly dirty = new Set<string>();
  private running = false;
  private stopped = false;
  private nodeUid?: string;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly core: CoreV1Api,
    private readonly nodeName: string,
    private readonly log: Logger,
    private readonly resyncMs = 5000,
  ) {}

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      for (const key of this.desired.keys()) this.dirty.add(key);
      this.kick();
      this.timer = setTimeout(tick, this.resyncMs);
    };
    this.timer = setTimeout(tick, this.resyncMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  staticPodAdded(pod: V1Pod): void {
    const key = podKey(pod);
    this.desired.set(key, pod);
    this.staticKeys.set(pod.metadata!.uid!, key);
    this.mark(key);
  }

  staticPodRemoved(uid: string): void {
    const key = this.staticKeys.get(uid);
    if (!key) return;
    this.staticKeys.delete(uid);
    this.statuses.delete(uid);
    if (this.desired.get(key)?.metadata?.uid === uid) this.desired.delete(key);
    this.mark(key);
  }

  /** A mirror pod seen in the API (watch or list). */
  mirrorObserved(pod: V1Pod): void {
    const key = podKey(pod);
    this.mirrorKeys.set(pod.metadata!.uid!, key);
    this.observed.set(key, pod);
    const want = this.desired.get(key);
    const current = want && pod.metadata?.annotations?.[CONFIG_MIRROR_ANNOTATION] === configHash(want) && !pod.metadata?.deletionTimestamp;
    if (!current) this.mark(key);
  }

  /** A pod deleted from the API: when it was a mirror of a static pod we run, it comes back. */
  podRemoved(uid: string): void {
    const key = this.mirrorKeys.get(uid);
    if (!key) return;
    this.mirrorKeys.delete(uid);
    if (this.observed.get(key)?.metadata?.uid === uid) this.observed.delete(key);
    this.mark(key);
  }

  /** Records the static pod's status; it is written to the mirror in the background. */
  writeStatus(staticPod: V1Pod, status: V1PodStatus): void {
    const uid = staticPod.metadata!.uid!;
    if (!this.staticKeys.has(uid)) return;
    this.statuses.set(uid, plain(status));
    this.mark(podKey(staticPod));
  }

  private mark(key: string): void {
    this.dirty.add(key);
    this.kick();
  }

  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    void (async () => {
      while (this.dirty.size > 0 && !this.stopped) {
        const [key] = this.dirty;
        this.dirty.delete(key!);
        await this.reconcile(key!).catch((err) => this.log.warn({ pod: key, err: errorMessage(err) }, 'mirror pod sync failed'));
      }
      this.running = false;
    })();
  }

  private async node(): Promise<{ name: string; uid: string }> {
    if (!this.nodeUid) this.nodeUid = (await this.core.readNode({ name: this.nodeName })).metadata!.uid!;
    return { name: this.nodeName, uid: this.nodeUid };
  }

  private async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const want = this.desired.get(key);
    let mirror = this.observed.get(key);
    if (mirror && (!want || mirror.metadata!.annotations![CONFIG_MIRROR_ANNOTATION] !== configHash(want) || mirror.metadata!.deletionTimestamp)) {
      this.log.info({ pod: key, uid: mirror.metadata!.uid }, 'deleting mirror pod');
      await this.deleteMirror(mirror);
      mirror = undefined;
    }
    if (!want) return;
    if (!mirror) {
      try {
        mirror = plain(await this.core.createNamespacedPod({ namespace, body: mirrorPodFor(want, await this.node()) }));
      } catch (err) {
        // Its old copy may still be on its way out, or not yet seen in the watch; the next pass tries again.
        if (apiErrorCode(err) === 409) return this.retryLater(key, 1000);
        throw err;
      }
      this.mirrorKeys.set(mirror.metadata!.uid!, key);
      if (!this.observed.has(key)) this.observed.set(key, mirror);
      this.log.info({ pod: key, uid: mirror.metadata!.uid }, 'created mirror pod');
    }
    const status = this.statuses.get(want.metadata!.uid!);
    if (status && statusFingerprint(status) !== statusFingerprint(mirror.status ?? {})) {
      try {
        const written = plain(await this.core.replaceNamespacedPodStatus({ name, namespace, body: { ...mirror, status } }));
        // Until the watch brings it, the written copy is the newest we know (its resourceVersion, its status).
        if (this.observed.get(key)?.metadata?.uid === written.metadata?.uid) this.observed.set(key, written);
      } catch (err) {
        const code = apiErrorCode(err);
        if (code === 409 || code === 404) return this.retryLater(key);
        throw err;
      }
    }
  }

  private retryLater(key: string, ms = 200): void {
    setTimeout(() => this.mark(key), ms).unref();
  }

  private async deleteMirror(mirror: V1Pod): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({
        name: mirror.metadata!.name!,
        namespace: mirror.metadata!.namespace!,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: mirror.metadata!.uid } },
      });
    } catch (err) {
      const code = apiErrorCode(err);
      if (code !== 404 && code !== 409) throw err;
    }
    this.mirrorKeys.delete(mirror.metadata!.uid!);
    if (this.observed.get(podKey(mirror))?.metadata?.uid === mirror.metadata!.uid) this.observed.delete(podKey(mirror));
  }
}
