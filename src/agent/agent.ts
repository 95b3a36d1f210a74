// The node agent: wires the CRI client, the Node reporter, the pod sources and one worker per pod.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { V1Pod, V1PodStatus, V1Service } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors.js';
import { ensureDir, writeJsonAtomic } from '../common/fsutil.js';
import { logger, type Logger } from '../common/log.js';
import type { AgentConfig } from './config.js';
import { CriClient } from './cri-client.js';
import { ListWatchSource } from './list-watch.js';
import { ServiceStore } from './service-env.js';
import { StaticPodSource } from './static-pod-source.js';
import { apiErrorCode, kubeClientsFromFile, type KubeClients } from './kube-client.js';
import { NodeStatusReporter, detectNodeIp } from './node-status.js';
import { POD_UID_LABEL, type DnsContext } from './pod-spec.js';
import { PodWorker, type PodWorkerDeps } from './pod-worker.js';
import { PodCgroups } from './pod-cgroups.js';
import { qosCgroupPath } from './qos.js';
import os from 'node:os';
import { KubeletApiServer } from './kubelet-api/server.js';
import { AgentMetrics } from './kubelet-api/metrics.js';
import { kubeletConfigz } from './kubelet-api/node-info.js';
import { claimVolumeStats } from './kubelet-api/volume-stats.js';
import { MirrorPods, isMirrorPod } from './mirror-pods.js';
import { KubeVolumeData } from './volumes/sources.js';
import { bootstrapClientCertificate, kubeconfigClientCertificate, useClientCertificateFile } from './bootstrap.js';
import { CertificateRotation, CertificateStore, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER } from './certificates.js';
import { promises as fsp } from 'node:fs';
import { CsiPlugins } from './csi/plugins.js';
import { CsiVolumes } from './csi/volumes.js';
import { PodEventRecorder } from './events.js';
import { ContainerLogRotator } from './log-rotation.js';
import { PodLifecycleEvents } from './pleg.js';
import { NodePressure } from './node-pressure.js';

const HOUSEKEEPING_MS = 2000;

export class Agent {
  readonly cri: CriClient;
  readonly workers = new Map<string, PodWorker>();
  private kube?: KubeClients;
  private nodeReporter?: NodeStatusReporter;
  private apiSource?: ListWatchSource<V1Pod>;
  private serviceSource?: ListWatchSource<V1Service>;
  private services?: ServiceStore;
  private staticSource?: StaticPodSource;
  private mirrors?: MirrorPods;
  kubeletApi?: KubeletApiServer;
  private readonly staticUids = new Set<string>();
  private runtimeName = 'unknown';
  private readonly hostIP: string;
  private readonly log: Logger;
  private housekeeping?: NodeJS.Timeout;
  private housekeepingAt = Date.now();
  private stopped = false;
  private events?: PodEventRecorder;
  private logRotator?: ContainerLogRotator;
  private volumeData?: KubeVolumeData;
  private podCgroups?: PodCgroups;
  readonly metrics: AgentMetrics;
  /** Settles with the reason when the agent can't go on (its main exits; a restart recovers, as with the kubelet). */
  readonly failed: Promise<Error>;
  private fail!: (err: Error) => void;
  clientCertificates?: CertificateRotation;
  csiPlugins?: CsiPlugins;
  private csiVolumes?: CsiVolumes;
  servingCertificates?: CertificateRotation;
  pleg?: PodLifecycleEvents;
  /** Pressure conditions, eviction and image GC. */
  readonly nodePressure: NodePressure;

  constructor(readonly config: AgentConfig) {
    this.log = logger({ component: 'nodelet-agent', node: config.nodeName });
    this.cri = new CriClient(config.criEndpoint);
    this.nodePressure = new NodePressure(this.cri, config, {
      pods: () => [...this.workers.values()].map((w) => ({ pod: w.current, isStatic: this.staticUids.has(w.uid), evicted: w.isEvicted })),
      evict: (uid, message) => this.workers.get(uid)?.evict(message),
      pressureChanged: () => void this.nodeReporter?.updateStatus(false).catch(() => undefined),
    }, this.log);
    this.metrics = new AgentMetrics(this.cri, config.nodeName);
    this.failed = new Promise((resolve) => (this.fail = resolve));
    this.metrics.volumeStats = () => claimVolumeStats(this.volumeData?.claimMounts() ?? []);
    this.cri.observer = (method, seconds, failed) => this.metrics.runtimeOperation(method, seconds, failed);
    this.hostIP = config.nodeIp ?? detectNodeIp();
  }

  async start(): Promise<void> {
    const version = await this.waitForRuntime();
    this.runtimeName = version.runtime_name;
    if (this.config.cgroupsPerQOS) this.podCgroups = await PodCgroups.detect(this.log);
    this.log.info({ runtime: `${version.runtime_name}://${version.runtime_version}`, hostIP: this.hostIP }, 'runtime connected');
    this.pleg = new PodLifecycleEvents(this.cri, {
      relistMs: this.config.plegRelistMs,
      eventedRelistMs: this.config.plegEventedRelistMs,
      evented: this.config.eventedPleg,
      onPodChanged: (uid) => this.workers.get(uid)?.kick(),
      log: this.log,
    });
    await this.pleg.start();
    if (this.config.kubeconfig && this.config.bootstrapKubeconfig) await this.bootstrap();
    if (this.config.kubeconfig) this.kube = kubeClientsFromFile(this.config.kubeconfig);
    if (this.kube && this.config.rotateCertificates) await this.startClientCertificateRotation();
    const kube = this.kube;
    this.csiPlugins = new CsiPlugins({
      registryDir: this.config.pluginsRegistryDir ?? path.join(this.config.root, 'plugins_registry'),
      nodeName: this.config.nodeName,
      kube: this.kube,
      log: this.log,
    });
    this.csiVolumes = new CsiVolumes(this.config.root, this.csiPlugins, this.log, kube ? { config: kube.config, nodeName: this.config.nodeName, secret: (ns, name) => (this.volumeData ??= new KubeVolumeData(kube.core)).secret(ns, name) } : undefined);
    // Before registration, so the Node reports the port the kubelet API really listens on.
    await this.startKubeletApi();
    if (this.kube && this.config.rotateServerCertificates && this.kubeletApi) await this.startServingCertificateRotation(this.kubeletApi);
    if (this.kube) {
      this.nodeReporter = new NodeStatusReporter(
        this.kube.core,
        this.kube.coordination,
        this.cri,
        {
          nodeName: this.config.nodeName,
          nodeIp: this.hostIP,
          maxPods: this.config.maxPods,
          root: this.config.root,
          runtimeName: version.runtime_name,
          runtimeVersion: version.runtime_version,
          kubeletPort: this.kubeletApi?.port || Number(this.config.kubeletApiAddress.split(':').pop()) || 10250,
          reserved: sumReserved(this.config.kubeReserved, this.config.systemReserved),
          evictionHard: this.config.evictionHard,
        },
        {
          leaseRenewSeconds: this.config.leaseRenewSeconds,
          statusReportSeconds: this.config.nodeStatusReportSeconds,
          log: this.log,
          volumesInUse: () => this.volumeData?.volumesInUse() ?? [],
          pressure: () => this.nodePressure.pressure,
          images: () => this.nodePressure.statusImages(),
        },
      );
    }
    // Static pods need no apiserver: they start while the Node is still being registered.
    const registered = this.nodeReporter?.start();
    if (this.config.podManifestPath) {
      if (this.kube) {
        this.mirrors = new MirrorPods(this.kube.core, this.config.nodeName, this.log);
        this.mirrors.start();
      }
      this.staticSource = new StaticPodSource(
        this.config.podManifestPath,
        this.config.nodeName,
        { upsert: (pod) => this.upsert(pod, true), remove: (uid) => this.remove(uid) },
        this.config.manifestPollMs,
        this.log,
      );
      await this.staticSource.start();
    }
    await registered;
    // After registration: a plugin's CSINode is owned by the Node.
    if (!this.stopped) await this.csiPlugins.start();
    if (this.kube && !this.stopped) {
      const core = this.kube.core;
      // Like the kubelet, pods from the API start only once the Services are known (their env variables).
      const services = new ServiceStore();
      this.serviceSource = new ListWatchSource<V1Service>(this.kube.config, {
        what: 'services',
        path: '/api/v1/services',
        list: () => core.listServiceForAllNamespaces(),
      }, services, this.log);
      await this.serviceSource.start();
      this.services = services;
      this.apiSource = new ListWatchSource<V1Pod>(this.kube.config, {
        what: 'pods',
        path: '/api/v1/pods',
        fieldSelector: `spec.nodeName=${this.config.nodeName}`,
        list: (fieldSelector) => core.listPodForAllNamespaces({ fieldSelector }),
      }, {
        upsert: (pod) => this.upsert(pod, false),
        remove: (uid) => this.remove(uid),
      }, this.log);
      await this.apiSource.start();
    }
    this.scheduleHousekeeping();
    this.nodePressure.start();
    this.logRotator = new ContainerLogRotator(this.cri, {
      maxSizeBytes: this.config.containerLogMaxSizeBytes,
      maxFiles: this.config.containerLogMaxFiles,
      intervalMs: this.config.containerLogMonitorIntervalMs,
    }, this.log);
    if (!this.stopped) this.logRotator.start();
  }

  /** TLS bootstrap, retried with back-off (an apiserver not up yet, a CSR not approved in time) until it succeeds. */
  private async bootstrap(): Promise<void> {
    for (let failures = 0; !this.stopped; ) {
      try {
        await bootstrapClientCertificate({
          bootstrapKubeconfig: this.config.bootstrapKubeconfig!,
          kubeconfig: this.config.kubeconfig!,
          certDir: this.certDir,
          nodeName: this.config.nodeName,
          log: this.log,
        });
        return;
      } catch (err) {
        failures++;
        this.log.warn({ err: errorMessage(err), failures }, 'TLS bootstrap failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** failures, 30_000)));
      }
    }
  }

  private get certDir(): string {
    return this.config.certDir ?? path.join(this.config.root, 'pki');
  }

  /** --rotate-certificates: the client certificate is renewed by CSR before it expires; the clients switch in place. */
  private async startClientCertificateRotation(): Promise<void> {
    const kube = this.kube!;
    const initial = await kubeconfigClientCertificate(kube.config).catch(() => undefined);
    if (!initial) {
      this.log.warn('--rotate-certificates: the kubeconfig has no client certificate; nothing to rotate');
      return;
    }
    const store = new CertificateStore(this.certDir, 'kubelet-client');
    this.metrics.clientCertificateExpires(Date.parse(initial.validTo));
    this.clientCertificates = new CertificateRotation({
      store,
      kube: () => kube.config,
      request: () => ({ signerName: KUBELET_CLIENT_SIGNER, nodeName: this.config.nodeName }),
      log: this.log,
      onIssued: (cert) => {
        useClientCertificateFile(kube.config, store.currentPath);
        this.metrics.clientCertificateExpires(Date.parse(cert.validTo));
      },
      // The kubelet exits 5 minutes after its client certificate expired unrenewed; restarted, it bootstraps again.
      onExpired: (cert) => this.fail(new Error(`the client certificate expired at ${cert.validTo} and could not be renewed`)),
    });
    await this.clientCertificates.start(initial);
  }

  /** --rotate-server-certificates: the kubelet API serves a kubelet-serving certificate got (and renewed) by CSR. */
  private async startServingCertificateRotation(api: KubeletApiServer): Promise<void> {
    const kube = this.kube!;
    const store = new CertificateStore(this.certDir, 'kubelet-server');
    this.servingCertificates = new CertificateRotation({
      store,
      kube: () => kube.config,
      request: () => ({ signerName: KUBELET_SERVING_SIGNER, nodeName: this.config.nodeName, hosts: [this.config.nodeName, this.hostIP] }),
      log: this.log,
      onIssued: async () => {
        const pem = await fsp.readFile(store.currentPath);
        api.setServingCertificate(pem, pem);
      },
    });
    await this.servingCertificates.start();
  }

  /** The kubelet API (HTTPS, --kubelet-api-address). */
  private async startKubeletApi(): Promise<void> {
    if (!this.config.kubeletApiAddress) return;
    const api = new KubeletApiServer({
      address: this.config.kubeletApiAddress,
      nodeName: this.config.nodeName,
      root: this.config.root,
      tlsCertFile: this.config.tlsCertFile,
      tlsPrivateKeyFile: this.config.tlsPrivateKeyFile,
      clientCaFile: this.config.clientCaFile,
      addresses: [this.hostIP],
      kube: this.kube?.config,
      host: { pods: () => [...this.workers.values()].map((w) => w.current), cri: this.cri, podLogsDir: this.config.podLogsDir },
      log: this.log,
      metrics: this.metrics,
      nodeLogDir: this.config.nodeLogDir,
      servingCertificateFromCsr: Boolean(this.kube && this.config.rotateServerCertificates),
      claimMounts: () => this.volumeData?.claimMounts() ?? [],
      // The kubelet fails syncloop when its loop has not run for a while; ours is the housekeeping loop.
      syncLoopHealthy: () => Date.now() - this.housekeepingAt < 10 * HOUSEKEEPING_MS + 60_000,
      configz: () =>
        kubeletConfigz(this.config, {
          port: this.kubeletApi?.port ?? 0,
          rotateCertificates: this.config.rotateCertificates,
          serverTLSBootstrap: this.config.rotateServerCertificates,
          authenticationWebhook: Boolean(this.kube),
        }),
    });
    // Like the kubelet, a port that can't be bound is fatal: an agent without its API would
    // silently break `kubectl logs/exec/port-forward` for every pod on the node.
    try {
      await api.start();
    } catch (err) {
      throw new Error(`kubelet API on ${this.config.kubeletApiAddress} could not start: ${errorMessage(err)}`);
    }
    this.kubeletApi = api;
  }

  /** Stops the agent; containers keep running (a restarted agent adopts them). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.housekeeping);
    this.clientCertificates?.stop();
    this.servingCertificates?.stop();
    this.pleg?.stop();
    this.nodePressure.stop();
    this.logRotator?.stop();
    this.nodeReporter?.stop();
    this.staticSource?.stop();
    this.mirrors?.stop();
    await this.kubeletApi?.stop();
    await this.apiSource?.stop();
    await this.csiPlugins?.stop();
    await this.serviceSource?.stop();
    for (const w of this.workers.values()) w.stop();
    const root = this.config.cgroupRoot;
    await this.podCgroups?.removeEmptyQosCgroups([qosCgroupPath(root, 'Burstable'), qosCgroupPath(root, 'BestEffort'), qosCgroupPath(root, 'all')]);
    this.cri.close();
  }

  private async waitForRuntime(): Promise<{ runtime_name: string; runtime_version: string }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.cri.runtime('Version', {}, { deadlineMs: 5000 });
      } catch (err) {
        if (attempt >= 60) throw err;
        this.log.warn({ err: errorMessage(err) }, 'waiting for the container runtime');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private upsert(pod: V1Pod, isStatic: boolean): void {
    if (this.stopped) return;
    const uid = pod.metadata!.uid!;
    if (!isStatic && isMirrorPod(pod)) return this.mirrors?.mirrorObserved(pod);
    if (isStatic) {
      this.staticUids.add(uid);
      this.mirrors?.staticPodAdded(pod);
    }
    const existing = this.workers.get(uid);
    if (existing) return existing.update(pod);
    this.metrics.podSeen(uid);
    const worker = new PodWorker(pod, this.workerDeps(isStatic));
    this.workers.set(uid, worker);
    worker.kick();
  }

  private remove(uid: string): void {
    if (this.staticUids.has(uid)) this.mirrors?.staticPodRemoved(uid);
    this.mirrors?.podRemoved(uid);
    this.workers.get(uid)?.remove();
  }

  private workerDeps(isStatic: boolean): PodWorkerDeps {
    const kube = isStatic ? undefined : this.kube;
    const writeStatus: PodWorkerDeps['writeStatus'] = kube
      ? (pod, status) => this.writeApiStatus(pod, status)
      : async (pod, status) => {
          this.mirrors?.writeStatus(pod, status);
          await this.writeLocalStatus(pod, status);
        };
    return {
      cri: this.cri,
      log: this.log,
      metrics: this.metrics,
      csi: this.csiVolumes,
      runtimeName: this.runtimeName,
      nodeName: this.config.nodeName,
      hostIP: this.hostIP,
      podLogsDir: this.config.podLogsDir,
      dns: () => this.dnsContext(),
      lookup: (kind, namespace, name) => this.lookup(kind, namespace, name),
      services: () => this.services?.all() ?? [],
      resyncMs: this.config.podResyncMs,
      backoffInitialMs: this.config.backoffInitialMs,
      backoffMaxMs: this.config.backoffMaxMs,
      writeStatus: (pod, status) => {
        this.metrics.podStatus(pod.metadata!.uid!, status.phase);
        return writeStatus(pod, status);
      },
      finishDeletion: kube ? (pod) => this.finishDeletion(pod) : undefined,
      recordEvent: kube ? (pod, type, reason, message) => (this.events ??= new PodEventRecorder(kube.core, this.config.nodeName, this.log)).record(pod, type, reason, message) : undefined,
      volumeRoot: this.config.root,
      podCgroups: this.podCgroups,
      cgroupRoot: this.config.cgroupRoot,
      memoryCapacity: os.totalmem(),
      nodeCapacity: { cpu: os.cpus().length, memory: os.totalmem() },
      volumeData: kube ? (this.volumeData ??= new KubeVolumeData(kube.core)) : undefined,
      onTerminated: (uid) => {
        this.metrics.podForgotten(uid);
        this.volumeData?.forget(uid);
        this.workers.delete(uid);
        this.staticUids.delete(uid);
      },
    };
  }

  private dnsContext(): DnsContext {
    let hostResolvConf = '';
    try {
      hostResolvConf = readFileSync('/etc/resolv.conf', 'utf8');
    } catch {
      // no host DNS
    }
    return { clusterDns: this.config.clusterDns, clusterDomain: this.config.clusterDomain, hostResolvConf };
  }

  private async lookup(kind: 'ConfigMap' | 'Secret', namespace: string, name: string): Promise<Record<string, string> | undefined> {
    if (!this.kube) return undefined;
    try {
      if (kind === 'ConfigMap') {
        const cm = await this.kube.core.readNamespacedConfigMap({ name, namespace });
        return { ...(cm.data ?? {}), ...Object.fromEntries(Object.entries(cm.binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()])) };
      }
      const secret = await this.kube.core.readNamespacedSecret({ name, namespace });
      return {
        ...Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()])),
        ...(secret.stringData ?? {}),
      };
    } catch (err) {
      if (apiErrorCode(err) === 404) return undefined;
      throw err;
    }
  }

  /** PUT to the status subresource from the newest pod we know; a 409 re-reads the pod and tries again. */
  private async writeApiStatus(pod: V1Pod, status: V1PodStatus): Promise<string | undefined> {
    const core = this.kube!.core;
    const name = pod.metadata!.name!;
    const namespace = pod.metadata!.namespace!;
    let base = pod;
    for (let attempt = 0; ; attempt++) {
      try {
        const written = await core.replaceNamespacedPodStatus({ name, namespace, body: { ...base, status } });
        return written.metadata?.resourceVersion;
      } catch (err) {
        const code = apiErrorCode(err);
        if (code === 404) return undefined;
        if (code !== 409 || attempt >= 4) throw err;
        try {
          // GET pods, not pods/status: the node authorizer lets a node read its pods but not their status subresource.
          base = await core.readNamespacedPod({ name, namespace });
        } catch (readErr) {
          // A pod gone from the API (or not bound here any more) reads as 404 — or 403 from the node authorizer.
          const readCode = apiErrorCode(readErr);
          if (readCode === 404 || readCode === 403) return undefined;
          throw readErr;
        }
        if (base.metadata?.uid !== pod.metadata?.uid) return undefined;
      }
    }
  }

  private async writeLocalStatus(pod: V1Pod, status: V1PodStatus): Promise<void> {
    const dir = path.join(this.config.root, 'pods', pod.metadata!.uid!);
    await ensureDir(dir);
    await writeJsonAtomic(path.join(dir, 'status.json'), { metadata: pod.metadata, status });
  }

  private async finishDeletion(pod: V1Pod): Promise<void> {
    try {
      await this.kube!.core.deleteNamespacedPod({
        name: pod.metadata!.name!,
        namespace: pod.metadata!.namespace!,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata!.uid } },
      });
    } catch (err) {
      const code = apiErrorCode(err);
      if (code !== 404 && code !== 409) throw err;
    }
  }

  private scheduleHousekeeping(): void {
    if (this.stopped) return;
    this.housekeeping = setTimeout(async () => {
      this.housekeepingAt = Date.now();
      await this.removeOrphans().catch((err) => this.log.warn({ err: errorMessage(err) }, 'housekeeping failed'));
      this.scheduleHousekeeping();
    }, HOUSEKEEPING_MS);
  }

  /** Sandboxes of pods no source knows any more (deleted while the agent was away) are stopped and removed. */
  private async removeOrphans(): Promise<void> {
    // The PLEG's last relist: no listing of our own.
    const isOrphan = (s: any) => s.labels?.[POD_UID_LABEL] && !this.workers.has(s.labels[POD_UID_LABEL]);
    if (!this.pleg?.sandboxes.some(isOrphan)) return;
    // A relist from before a pod's worker finished would show its sandbox: judge on a fresh one.
    await this.pleg.relist();
    for (const s of this.pleg.sandboxes as any[]) {
      if (!isOrphan(s)) continue;
      const uid = s.labels[POD_UID_LABEL];
      const orphan: V1Pod = {
        metadata: { uid, name: s.metadata?.name, namespace: s.metadata?.namespace },
        spec: { containers: [], terminationGracePeriodSeconds: 30 },
      };
      this.log.info({ uid, pod: `${orphan.metadata!.namespace}/${orphan.metadata!.name}` }, 'removing orphaned pod');
      const worker = new PodWorker(orphan, { ...this.workerDeps(true), writeStatus: async () => undefined, finishDeletion: undefined });
      this.workers.set(uid, worker);
      worker.remove();
    }
  }
}

/** --kube-reserved plus --system-reserved, per resource. */
function sumReserved(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}
