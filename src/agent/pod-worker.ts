// One worker per pod: serialises every action on the pod (sync, restart, kill) and reports its status when it changed.
import type { V1Container, V1Pod, V1PodStatus, V1ResourceRequirements, V1Service } from '@kubernetes/client-node';
import { decideResize, type NodeCapacity } from './resize.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { CriClient } from './cri-client.js';
import { runLifecycleHook } from './hooks.js';
import { serviceEnv } from './service-env.js';
import { PodProbes, type ProbeKind, type RunningContainer } from './probes/pod-probes.js';
import { containerLinuxResources, podCgroupLimits, podCgroupParent, qosClassOf, type QosClass } from './qos.js';
import type { PodCgroups } from './pod-cgroups.js';
import { computePodActions, terminationOrder } from './pod-actions.js';
import { createTerminationMessageFile, terminationMessage } from './termination-message.js';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { isSidecar } from './qos.js';
import { containerMountsFor } from './volumes/container-mounts.js';
import { PodVolumes, VolumeSetUpError, type CsiPublisher, type MountedVolume } from './volumes/pod-volumes.js';
import { noVolumeData, type VolumeDataSource } from './volumes/sources.js';
import type { AgentMetrics } from './kubelet-api/metrics.js';
import {
  POD_UID_LABEL,
  containerConfigFor,
  podDns,
  pullPolicyOf,
  resolveEnv,
  sandboxConfigFor,
  type ContainerKind,
  type DnsContext,
  type EnvContext,
} from './pod-spec.js';
import {
  computePodStatus,
  containersByName,
  statusFingerprint,
  type ObservedContainer,
  type ObservedPod,
  type ObservedSandbox,
  type WaitingReason,
} from './pod-status.js';

export interface PodWorkerDeps {
  cri: CriClient;
  log: Logger;
  /** The kubelet's metrics (probe results). */
  metrics?: AgentMetrics;
  /** CSI node plugins, for csi PersistentVolumes. */
  csi?: CsiPublisher;
  runtimeName: string;
  nodeName: string;
  hostIP: string;
  podLogsDir: string;
  dns: () => DnsContext;
  lookup: EnvContext['lookup'];
  /** The cluster's Services, for the containers' service variables (none in standalone mode). */
  services?(): Iterable<V1Service>;
  resyncMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Writes the pod's status (API status subresource, or a local file for static pods). */
  writeStatus(pod: V1Pod, status: V1PodStatus): Promise<string | void>;
  /** Finishes a deletion the API asked for (delete with grace period 0). */
  finishDeletion?(pod: V1Pod): Promise<void>;
  recordEvent?(pod: V1Pod, type: 'Normal' | 'Warning', reason: string, message: string): void;
  onTerminated(uid: string): void;
  /** The agent's root: volumes live under <root>/pods/<uid>/volumes. */
  volumeRoot?: string;
  /** configMaps, secrets and service account tokens for volumes (absent: standalone, none). */
  volumeData?: VolumeDataSource;
  /** How often configMap/secret/downwardAPI/projected volumes are re-read (default 3 s). */
  volumeRefreshMs?: number;
  /** Pod cgroups under <cgroupRoot>/kubepods (absent: the runtime's default parent). */
  podCgroups?: PodCgroups;
  cgroupRoot?: string;
  /** The node's memory, for a Burstable container's oom_score_adj. */
  memoryCapacity?: number;
  /** What a resized pod must fit in (absent: any resize is admitted). */
  nodeCapacity?: NodeCapacity;
}

interface PendingKill {
  name: string;
  reason: ProbeKind;
  message: string;
}

/** The kubelet's minimum grace period for a kill (seconds). */
const MIN_GRACE_SECONDS = 2;
const POST_START_TIMEOUT_SECONDS = 60;

interface Backoff {
  delayMs: number;
}

const TERMINAL = new Set(['Succeeded', 'Failed']);

export class PodWorker {
  private pod: V1Pod;
  private removed = false;
  private syncing = false;
  private again = false;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private finished = false;
  /** The terminal status of a pod deleted in the API was written (once: its containers go away right after). */
  private reportedDeleted = false;
  private lastWritten?: string;
  private readonly waiting = new Map<string, WaitingReason>();
  private readonly backoff = new Map<string, Backoff>();
  private readonly log: Logger;
  private readonly volumes?: PodVolumes;
  private mounted?: Map<string, MountedVolume>;
  private lastMountError?: string;
  private readonly probes: PodProbes;
  private readonly pendingKills = new Map<string, PendingKill>();
  private podIP = '';
  /** The resources admitted per container: the spec's, until a resize the node cannot fit. */
  private readonly allocated = new Map<string, V1ResourceRequirements | undefined>();
  private resizeState: { infeasible?: string; error?: string } = {};
  /** The eviction manager evicted the pod: it is stopped and reported Failed, reason Evicted, for good. */
  private evicted?: { message: string };
  /** Termination messages of exited containers (they never change once read). */
  private readonly exitMessages = new Map<string, string>();

  constructor(pod: V1Pod, private readonly deps: PodWorkerDeps) {
    this.pod = pod;
    // Evicted before an agent restart: still evicted (the phase alone would be recomputed from the containers).
    if (pod.status?.phase === 'Failed' && pod.status.reason === 'Evicted') this.evicted = { message: pod.status.message ?? '' };
    this.allocate(pod);
    this.log = deps.log.child({ pod: `${pod.metadata!.namespace}/${pod.metadata!.name}`, uid: pod.metadata!.uid });
    if (deps.volumeRoot) this.volumes = new PodVolumes(deps.volumeRoot, pod.metadata!.uid!, deps.volumeData ?? noVolumeData, this.log, deps.csi);
    this.probes = new PodProbes({
      cri: deps.cri,
      log: this.log,
      podIP: () => this.podIP,
      onResultChange: () => this.kick(),
      onFailure: (reason, container, containerId, message) => {
        this.pendingKills.set(containerId, { name: container.name, reason, message });
        this.kick();
      },
      recordEvent: deps.recordEvent ? (type, reason, message) => deps.recordEvent!(this.pod, type, reason, message) : undefined,
      observeResult: deps.metrics ? (kind, container, result) => deps.metrics!.probe(this.pod, kind, container, result) : undefined,
    });
  }

  get uid(): string {
    return this.pod.metadata!.uid!;
  }

  get current(): V1Pod {
    return this.pod;
  }

  update(pod: V1Pod): void {
    this.pod = pod;
    this.kick();
  }

  /** The pod left its source (deleted in the API or its manifest removed): stop it. */
  remove(): void {
    this.removed = true;
    this.kick();
  }

  get isEvicted(): boolean {
    return Boolean(this.evicted);
  }

  /** Node pressure: stop the pod and report it Failed, reason Evicted (the kubelet's eviction manager). */
  evict(message: string): void {
    if (this.evicted) return;
    this.evicted = { message };
    this.deps.recordEvent?.(this.pod, 'Warning', 'Evicted', message);
    this.kick();
  }

  /** Stops working on the pod without touching its containers (agent shutdown). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.probes.stopAll();
  }

  kick(): void {
    if (this.stopped || this.finished) return;
    clearTimeout(this.timer);
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.syncing = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.sync();
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, 'pod sync failed');
      }
    } while (this.again && !this.stopped && !this.finished);
    this.syncing = false;
    if (!this.stopped && !this.finished) this.timer = setTimeout(() => this.kick(), this.deps.resyncMs);
  }

  private schedule(afterMs: number): void {
    // A back-off ending wakes the worker earlier than the next resync.
    if (afterMs < this.deps.resyncMs) setTimeout(() => this.kick(), Math.max(afterMs, 10)).unref();
  }

  private async sync(): Promise<void> {
    const pod = this.pod;
    if (this.removed || pod.metadata?.deletionTimestamp) {
      await this.terminate(pod);
      return;
    }
    if (this.evicted) {
      await this.stopEvicted(pod);
      return;
    }
    await this.killUnhealthy(pod);
    let observed = await this.observe();
    const phase = pod.status?.phase;
    if (phase && TERMINAL.has(phase) && !observed.sandbox?.ready) {
      // A finished pod is never run again.
      await this.report(pod, observed);
      return;
    }
    if (!(await this.ensureVolumes(pod))) {
      await this.report(pod, observed);
      return;
    }
    if (!observed.sandbox?.ready) {
      observed = await this.createSandbox(pod, observed);
    }
    const sandbox = observed.sandbox!;
    const byName = containersByName(observed);
    const actions = computePodActions(pod, byName, { probed: (spec, id) => this.probes.statusOf(spec, id) });
    for (const name of actions.settled) this.waiting.delete(name);
    for (const a of actions.start) {
      if (a.previous) await this.maybeRestart(pod, a.spec, a.kind, a.previous, sandbox);
      else if (a.kind === 'ephemeral') await this.startEphemeral(pod, a.spec, sandbox, byName);
      else await this.startContainer(pod, a.spec, a.kind, 0, sandbox);
    }
    for (const k of actions.killSidecars) {
      this.log.info({ container: k.spec.name }, 'stopping sidecar: the app containers are done');
      this.deps.recordEvent?.(pod, 'Normal', 'Killing', `Stopping container ${k.spec.name}`);
      await this.killContainer(pod, k.spec, k.containerId, this.podIP, pod.spec?.terminationGracePeriodSeconds ?? 30, 'sidecar');
    }
    await this.resize(pod, observed, byName);
    await this.removeOldAttempts(byName);
    const after = await this.observe();
    // App containers that finished during this sync leave sidecars to stop: at once, not at the next resync.
    if (computePodActions(pod, containersByName(after), { probed: (spec, id) => this.probes.statusOf(spec, id) }).killSidecars.length) this.again = true;
    this.syncProbes(pod, after);
    const status = await this.report(pod, after);
    if (TERMINAL.has(status.phase ?? '')) {
      this.log.info({ phase: status.phase }, 'pod finished; stopping its sandbox');
      await this.deps.cri.runtime('StopPodSandbox', { pod_sandbox_id: sandbox.id }).catch(() => undefined);
    }
  }

  /** An evicted pod's containers are stopped at once (hard eviction: the minimum grace) and its sandbox too. */
  private async stopEvicted(pod: V1Pod): Promise<void> {
    this.probes.stopAll();
    this.waiting.clear();
    const observed = await this.observe();
    const running = observed.containers.filter((c) => c.state === 'CONTAINER_RUNNING' || c.state === 'CONTAINER_CREATED');
    if (running.length) this.log.info({ containers: running.length }, 'evicting pod: stopping its containers');
    await Promise.all(running.map((c) => this.deps.cri.runtime('StopContainer', { container_id: c.id, timeout: MIN_GRACE_SECONDS }, { deadlineMs: 60_000 }).catch(() => undefined)));
    for (const s of observed.sandboxes) if (s.ready) await this.deps.cri.runtime('StopPodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
    await this.report(pod, running.length ? await this.observe() : observed, true);
  }

  private async report(pod: V1Pod, observed: ObservedPod, evictionDone = false): Promise<V1PodStatus> {
    const status = computePodStatus(pod, observed, {
      runtimeName: this.deps.runtimeName,
      hostIP: this.deps.hostIP,
      now: new Date(),
      waiting: this.waiting,
      probes: (spec, containerId) => this.probes.statusOf(spec, containerId),
      allocated: (spec) => this.allocatedOf(spec),
      resize: this.resizeState,
      ...(this.evicted ? { deleted: true } : {}),
    });
    // Evicted during this sync: the Failed status waits until stopEvicted stopped the containers.
    if (this.evicted && !evictionDone) return status;
    if (this.evicted) {
      // As the kubelet reports an evicted pod: Failed, reason Evicted, and a DisruptionTarget condition.
      status.phase = 'Failed';
      status.reason = 'Evicted';
      status.message = this.evicted.message;
      const before = pod.status?.conditions?.find((c) => c.type === 'DisruptionTarget');
      status.conditions = [
        ...(status.conditions ?? []).filter((c) => c.type !== 'DisruptionTarget'),
        { type: 'DisruptionTarget', status: 'True', reason: 'TerminationByKubelet', message: this.evicted.message, lastProbeTime: null as any, lastTransitionTime: before?.lastTransitionTime ?? new Date() },
      ];
    }
    const fingerprint = statusFingerprint(status);
    if (fingerprint !== this.lastWritten) {
      const resourceVersion = await this.deps.writeStatus(pod, status);
      this.lastWritten = fingerprint;
      // The status the API now holds is what the next computation starts from (startTime, transition times).
      this.pod = { ...this.pod, status: JSON.parse(JSON.stringify(status)) };
      if (resourceVersion) this.pod.metadata = { ...this.pod.metadata, resourceVersion };
    }
    return status;
  }

  /** The last status of a pod deleted in the API: its containers terminated, its phase terminal. Never fatal. */
  private async reportDeleted(pod: V1Pod): Promise<void> {
    this.reportedDeleted = true;
    try {
      this.waiting.clear();
      const status = computePodStatus(pod, await this.observe(), {
        runtimeName: this.deps.runtimeName,
        hostIP: this.deps.hostIP,
        now: new Date(),
        waiting: this.waiting,
        deleted: true,
      });
      await this.deps.writeStatus(pod, status);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'final pod status not written');
    }
  }

  async observe(): Promise<ObservedPod> {
    const cri = this.deps.cri;
    const selector = { label_selector: { [POD_UID_LABEL]: this.uid } };
    const { items } = await cri.runtime('ListPodSandbox', { filter: selector });
    const sandboxes: ObservedSandbox[] = [];
    for (const s of items as any[]) {
      let ip = '';
      let ips: string[] = [];
      const ready = s.state === 'SANDBOX_READY';
      if (ready) {
        const res = await cri.runtime('PodSandboxStatus', { pod_sandbox_id: s.id }).catch(() => undefined);
        ip = res?.status?.network?.ip ?? '';
        ips = (res?.status?.network?.additional_ips ?? []).map((a: any) => a.ip);
      }
      sandboxes.push({ id: s.id, attempt: s.metadata?.attempt ?? 0, ready, createdAt: Number(s.created_at), ip, ips });
    }
    sandboxes.sort((a, b) => Number(b.ready) - Number(a.ready) || b.createdAt - a.createdAt);
    const sandbox = sandboxes[0];
    const { containers } = await cri.runtime('ListContainers', { filter: selector });
    const observed: ObservedContainer[] = [];
    for (const c of containers as any[]) {
      if (c.pod_sandbox_id !== sandbox?.id) continue;
      const res = await cri.runtime('ContainerStatus', { container_id: c.id }).catch(() => undefined);
      const st = res?.status;
      if (!st) continue;
      let message = st.message ?? '';
      if (st.state === 'CONTAINER_EXITED') {
        let extra = this.exitMessages.get(c.id);
        if (extra === undefined) {
          extra = await terminationMessage({ exitCode: st.exit_code, reason: st.reason ?? '', annotations: st.annotations, mounts: st.mounts, logPath: st.log_path }).catch(() => '');
          this.exitMessages.set(c.id, extra);
        }
        if (extra) message = message ? `${message}: ${extra}` : extra;
      }
      observed.push({
        id: c.id,
        sandboxId: c.pod_sandbox_id,
        name: st.metadata?.name ?? c.metadata?.name,
        attempt: st.metadata?.attempt ?? 0,
        state: st.state,
        createdAt: Number(st.created_at),
        startedAt: Number(st.started_at),
        finishedAt: Number(st.finished_at),
        exitCode: st.exit_code,
        reason: st.reason ?? '',
        message,
        imageRef: st.image_ref ?? '',
        resources: st.resources?.linux ?? null,
      });
    }
    for (const id of this.exitMessages.keys()) if (!observed.some((c) => c.id === id)) this.exitMessages.delete(id);
    return { sandbox, sandboxes, containers: observed };
  }

  private sandboxConfig(pod: V1Pod, attempt: number): Record<string, any> {
    return sandboxConfigFor(pod, attempt, podDns(pod, this.deps.dns()), this.deps.podLogsDir, this.cgroupParent(pod));
  }

  /** `/kubepods/burstable/pod<uid>` as the kubelet names it; '' (the runtime's default) without pod cgroups. */
  private cgroupParent(pod: V1Pod, qos: QosClass = qosClassOf(pod)): string {
    return this.deps.podCgroups ? podCgroupParent(this.deps.cgroupRoot ?? '/', qos, this.uid) : '';
  }

  private async createSandbox(pod: V1Pod, observed: ObservedPod): Promise<ObservedPod> {
    const cri = this.deps.cri;
    for (const old of observed.sandboxes) {
      await cri.runtime('StopPodSandbox', { pod_sandbox_id: old.id }).catch(() => undefined);
      await cri.runtime('RemovePodSandbox', { pod_sandbox_id: old.id }).catch(() => undefined);
    }
    const attempt = observed.sandboxes.reduce((n, s) => Math.max(n, s.attempt + 1), 0);
    const config = this.sandboxConfig(pod, attempt);
    if (this.deps.podCgroups) await this.deps.podCgroups.ensure(config.linux.cgroup_parent, podCgroupLimits(pod, qosClassOf(pod), (c) => this.allocatedOf(c)));
    const { mkdir } = await import('node:fs/promises');
    await mkdir(config.log_directory, { recursive: true });
    this.log.info({ attempt }, 'running pod sandbox');
    await cri.runtime('RunPodSandbox', { config, runtime_handler: pod.spec?.runtimeClassName ?? '' });
    // New sandbox, new containers: the old ones went with the old sandbox.
    this.waiting.clear();
    const fresh = await this.observe();
    if (!fresh.sandbox?.ready) throw new Error('sandbox not ready after RunPodSandbox');
    return fresh;
  }

  private async maybeRestart(pod: V1Pod, c: V1Container, kind: ContainerKind, cur: ObservedContainer, sandbox: ObservedSandbox): Promise<void> {
    let entry = this.backoff.get(c.name);
    if (!entry && cur.attempt > 0) {
      // No memory of this container (the agent restarted): its restart count says where its back-off was.
      entry = { delayMs: derivedBackoffMs(cur.attempt, this.deps.backoffInitialMs, this.deps.backoffMaxMs) };
      this.backoff.set(c.name, entry);
    }
    const finishedMs = cur.finishedAt / 1e6;
    if (entry) {
      // A container that ran long enough earns a fresh back-off.
      if (cur.startedAt && finishedMs - cur.startedAt / 1e6 > 2 * this.deps.backoffMaxMs) entry.delayMs = this.deps.backoffInitialMs;
      const due = finishedMs + entry.delayMs;
      const now = Date.now();
      if (now < due) {
        const m = pod.metadata!;
        const message = `back-off ${Math.round(entry.delayMs / 1000)}s restarting failed container=${c.name} pod=${m.name}_${m.namespace}(${m.uid})`;
        if (this.waiting.get(c.name)?.reason !== 'CrashLoopBackOff') this.deps.recordEvent?.(pod, 'Warning', 'BackOff', message);
        this.waiting.set(c.name, { reason: 'CrashLoopBackOff', message });
        this.schedule(due - now);
        return;
      }
      entry.delayMs = Math.max(this.deps.backoffInitialMs, Math.min(entry.delayMs * 2, this.deps.backoffMaxMs));
    } else {
      this.backoff.set(c.name, { delayMs: this.deps.backoffInitialMs });
    }
    await this.startContainer(pod, c, kind, cur.attempt + 1, sandbox);
  }

  private async ensureImage(pod: V1Pod, c: V1Container, sandboxConfig: Record<string, any>): Promise<void> {
    const cri = this.deps.cri;
    const image = c.image ?? '';
    const policy = pullPolicyOf(c);
    if (policy !== 'Always') {
      const res = await cri.image('ImageStatus', { image: { image } });
      if (res.image) return;
      if (policy === 'Never') {
        throw new ContainerWaiting('ErrImageNeverPull', `Container image "${image}" is not present with pull policy of Never`);
      }
    }
    const key = `pull:${c.name}`;
    const entry = this.backoff.get(key);
    if (entry && this.waiting.get(c.name)?.reason === 'ErrImagePull') {
      throw new ContainerWaiting('ImagePullBackOff', `Back-off pulling image "${image}"`);
    }
    this.deps.recordEvent?.(pod, 'Normal', 'Pulling', `Pulling image "${image}"`);
    const started = Date.now();
    try {
      const auth = await this.pullAuth(pod, image);
      await cri.image('PullImage', { image: { image }, auth, sandbox_config: sandboxConfig });
    } catch (err) {
      const delay = entry ? Math.min(entry.delayMs * 2, this.deps.backoffMaxMs) : this.deps.backoffInitialMs;
      this.backoff.set(key, { delayMs: delay });
      setTimeout(() => {
        if (this.waiting.get(c.name)?.reason === 'ImagePullBackOff' || this.waiting.get(c.name)?.reason === 'ErrImagePull') this.waiting.delete(c.name);
        this.kick();
      }, delay).unref();
      this.deps.recordEvent?.(pod, 'Warning', 'Failed', `Failed to pull image "${image}": ${errorMessage(err)}`);
      throw new ContainerWaiting('ErrImagePull', errorMessage(err));
    }
    this.backoff.delete(key);
    this.deps.recordEvent?.(pod, 'Normal', 'Pulled', `Successfully pulled image "${image}" in ${Date.now() - started}ms`);
  }

  /** Credentials from the pod's imagePullSecrets (kubernetes.io/dockerconfigjson) for the image's registry. */
  private async pullAuth(pod: V1Pod, image: string): Promise<Record<string, string> | undefined> {
    const host = image.includes('/') && /[.:]|^localhost$/.test(image.split('/')[0]) ? image.split('/')[0] : 'docker.io';
    for (const ref of pod.spec?.imagePullSecrets ?? []) {
      const data = await this.deps.lookup('Secret', pod.metadata!.namespace!, ref.name!).catch(() => undefined);
      const text = data?.['.dockerconfigjson'] ?? data?.['.dockercfg'];
      if (!text) continue;
      let parsed: any;
      try {
        parsed = JSON.parse(text);
      } catch {
        continue;
      }
      const auths = parsed.auths ?? parsed;
      for (const [server, entry] of Object.entries<any>(auths)) {
        const serverHost = server.replace(/^https?:\/\//, '').split('/')[0];
        const matches = serverHost === host || (host === 'docker.io' && /(^|\.)docker\.io$/.test(serverHost));
        if (!matches) continue;
        let { username, password } = entry;
        if (!username && entry.auth) [username, password] = Buffer.from(entry.auth, 'base64').toString().split(/:(.*)/s);
        return { username: username ?? '', password: password ?? '', server_address: serverHost };
      }
    }
    return undefined;
  }

  /** An ephemeral (debug) container: in the pod's sandbox, in its target container's process namespace when it names one. */
  private async startEphemeral(pod: V1Pod, c: V1Container, sandbox: ObservedSandbox, byName: Map<string, ObservedContainer[]>): Promise<void> {
    const targetName = (c as { targetContainerName?: string }).targetContainerName;
    let targetId: string | undefined;
    if (targetName) {
      const [target] = byName.get(targetName) ?? [];
      if (target?.state !== 'CONTAINER_RUNNING') {
        // The kubelet waits for the target to run rather than start the debugger in a namespace of its own.
        this.waiting.set(c.name, { reason: 'ContainerCreating', message: `target container ${targetName} is not running` });
        return;
      }
      targetId = target.id;
    }
    await this.startContainer(pod, c, 'ephemeral', 0, sandbox, targetId);
  }

  private async startContainer(pod: V1Pod, c: V1Container, kind: ContainerKind, attempt: number, sandbox: ObservedSandbox, targetId?: string): Promise<void> {
    const cri = this.deps.cri;
    const sandboxConfig = this.sandboxConfig(pod, sandbox.attempt);
    try {
      await this.ensureImage(pod, c, sandboxConfig);
      let env: Map<string, string>;
      try {
        env = await resolveEnv(pod, c, {
          nodeName: this.deps.nodeName,
          podIP: pod.spec?.hostNetwork ? this.deps.hostIP : sandbox.ip,
          podIPs: pod.spec?.hostNetwork ? [this.deps.hostIP] : [sandbox.ip, ...sandbox.ips],
          hostIP: this.deps.hostIP,
          lookup: this.deps.lookup,
          serviceEnv: serviceEnv(this.deps.services?.() ?? [], pod.metadata!.namespace!, pod.spec?.enableServiceLinks),
        });
      } catch (err) {
        throw new ContainerWaiting('CreateContainerConfigError', errorMessage(err));
      }
      let mounts: object[];
      try {
        mounts = await containerMountsFor(c, this.mounted ?? new Map(), env);
      } catch (err) {
        throw new ContainerWaiting('CreateContainerConfigError', errorMessage(err));
      }
      const messagePath = c.terminationMessagePath ?? '/dev/termination-log';
      if (this.deps.volumeRoot && messagePath) {
        // The kubelet's termination-log file: the container writes its last words there, read once it exited.
        const hostFile = await createTerminationMessageFile(this.deps.volumeRoot, this.uid, c.name);
        mounts = [...mounts, { container_path: messagePath, host_path: hostFile, readonly: false }];
      }
      const config = containerConfigFor(pod, c, kind, attempt, env, mounts, containerLinuxResources(c, qosClassOf(pod), this.deps.memoryCapacity, this.allocatedOf(c)), {
        targetId,
        ...(this.deps.volumeRoot ? { seccompRoot: path.join(this.deps.volumeRoot, 'seccomp') } : {}),
      });
      let containerId: string;
      try {
        ({ container_id: containerId } = await cri.runtime('CreateContainer', { pod_sandbox_id: sandbox.id, config, sandbox_config: sandboxConfig }));
      } catch (err) {
        throw new ContainerWaiting('CreateContainerError', errorMessage(err));
      }
      this.deps.recordEvent?.(pod, 'Normal', 'Created', `Created container ${c.name}`);
      try {
        await cri.runtime('StartContainer', { container_id: containerId });
      } catch (err) {
        this.deps.recordEvent?.(pod, 'Warning', 'Failed', `Error: ${errorMessage(err)}`);
        throw new ContainerWaiting('RunContainerError', errorMessage(err));
      }
      this.waiting.delete(c.name);
      this.log.info({ container: c.name, attempt, id: containerId }, 'container started');
      this.deps.recordEvent?.(pod, 'Normal', 'Started', `Started container ${c.name}`);
      const postStart = c.lifecycle?.postStart;
      if (postStart) {
        const podIP = pod.spec?.hostNetwork ? this.deps.hostIP : sandbox.ip;
        const res = await runLifecycleHook(postStart, { cri, container: c, containerId, podIP }, POST_START_TIMEOUT_SECONDS);
        if (!res.ok) {
          const message = `PostStartHook failed: ${res.output.trim()}`;
          this.log.warn({ container: c.name, err: res.output }, 'postStart hook failed; killing the container');
          this.deps.recordEvent?.(pod, 'Warning', 'FailedPostStartHook', message);
          await this.killContainer(pod, c, containerId, podIP, this.gracePeriod(pod), 'FailedPostStartHook');
        }
      }
    } catch (err) {
      if (!(err instanceof ContainerWaiting)) throw err;
      this.log.warn({ container: c.name, reason: err.reason, err: err.message }, 'container not started');
      this.waiting.set(c.name, { reason: err.reason, message: err.message });
    }
  }

  private allocate(pod: V1Pod): void {
    for (const c of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) this.allocated.set(c.name, c.resources);
  }

  private allocatedOf(c: V1Container): V1ResourceRequirements | undefined {
    return this.allocated.has(c.name) ? this.allocated.get(c.name) : c.resources;
  }

  /** In-place resize: admit the desired resources if the node fits them, then grow the pod cgroup, update the containers, shrink it. */
  private async resize(pod: V1Pod, observed: ObservedPod, byName: Map<string, ObservedContainer[]>): Promise<void> {
    const qos = qosClassOf(pod);
    const specs = [...(pod.spec!.initContainers ?? []).filter(isSidecar), ...pod.spec!.containers];
    const running = specs.flatMap((spec) => {
      const [cur] = byName.get(spec.name) ?? [];
      return cur?.state === 'CONTAINER_RUNNING' ? [{ spec, id: cur.id, actual: cur.resources }] : [];
    });
    // Only a change of the desired resources is judged against the node (a pod admitted as it is stays admitted).
    const asked = [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].some((c) => JSON.stringify(c.resources ?? {}) !== JSON.stringify(this.allocatedOf(c) ?? {}));
    const capacity = asked && this.deps.nodeCapacity ? this.deps.nodeCapacity : { cpu: Infinity, memory: Infinity };
    const d = decideResize(pod, running, qos, capacity, this.deps.memoryCapacity);
    if (d.infeasible) {
      if (this.resizeState.infeasible !== d.infeasible) this.deps.recordEvent?.(pod, 'Warning', 'ResizeInfeasible', `Pod resize Infeasible: ${d.infeasible}`);
      this.resizeState = { infeasible: d.infeasible };
      return;
    }
    this.allocate(pod);
    if (this.resizeState.infeasible) this.resizeState = {};
    if (d.update.length === 0 && d.restart.length === 0) {
      this.resizeState = {};
      return;
    }
    // The API shows PodResizeInProgress (allocated ≠ actual) before anything changes.
    await this.report(pod, observed);
    const changes = [...d.update, ...d.restart].map((c) => ({ name: c.spec.name, resources: c.spec.resources }));
    this.deps.recordEvent?.(pod, 'Normal', 'ResizeStarted', `Pod resize started: ${JSON.stringify({ containers: changes })}`);
    const cgroupPath = this.cgroupParent(pod, qos);
    const podLimits = podCgroupLimits(pod, qos, (c) => this.allocatedOf(c));
    // A larger limit goes on the pod cgroup first; a smaller one after the containers shrank (a child never exceeds its parent).
    if (this.deps.podCgroups) await this.deps.podCgroups.apply(cgroupPath, podLimits);
    let error: string | undefined;
    for (const u of d.update) {
      this.log.info({ container: u.spec.name, resources: u.resources }, 'resizing container');
      await this.deps.cri.runtime('UpdateContainerResources', { container_id: u.id, linux: u.resources }).catch((err: unknown) => {
        error = `container ${u.spec.name}: ${errorMessage(err)}`;
      });
    }
    for (const r of d.restart) {
      this.deps.recordEvent?.(pod, 'Normal', 'Killing', `Container ${r.spec.name} resize requires restart`);
      await this.killContainer(pod, r.spec, r.id, this.podIP, pod.spec?.terminationGracePeriodSeconds ?? 30, 'resize');
      this.backoff.set(r.spec.name, { delayMs: 0 }); // a restart for a resize is not a crash: no wait
    }
    if (this.deps.podCgroups && !(await this.deps.podCgroups.apply(cgroupPath, podLimits)) && !error) error = 'pod cgroup limits not applied';
    if (error) {
      if (this.resizeState.error !== error) this.deps.recordEvent?.(pod, 'Warning', 'ResizeError', `Pod resize error: ${error}`);
      this.resizeState = { error };
      this.schedule(1000);
    } else {
      this.resizeState = {};
      this.deps.recordEvent?.(pod, 'Normal', 'ResizeCompleted', `Pod resize completed: ${JSON.stringify({ containers: changes })}`);
    }
  }

  /** Dead-container GC with the kubelet's MaxPerPodContainer 1: the newest exited container of each name stays (lastState's), older ones go. */
  private async removeOldAttempts(byName: Map<string, ObservedContainer[]>): Promise<void> {
    for (const list of byName.values()) {
      for (const old of list.filter((c) => c.state === 'CONTAINER_EXITED').slice(1)) {
        await this.deps.cri.runtime('RemoveContainer', { container_id: old.id }).catch(() => undefined);
      }
    }
  }

  private gracePeriod(pod: V1Pod): number {
    return pod.metadata?.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
  }

  /** Sets up the pod's volumes once, then keeps API data volumes fresh; false while a volume cannot be set up. */
  private async ensureVolumes(pod: V1Pod): Promise<boolean> {
    if (!this.volumes) return true;
    if (this.mounted) {
      await this.volumes.refresh(pod, this.deps.volumeRefreshMs ?? 3000);
      return true;
    }
    try {
      this.mounted = await this.volumes.setUp(pod);
      this.lastMountError = undefined;
      return true;
    } catch (err) {
      if (!(err instanceof VolumeSetUpError)) throw err;
      if (err.message !== this.lastMountError) {
        this.log.warn({ err: err.message }, 'volume set-up failed');
        this.deps.recordEvent?.(pod, 'Warning', 'FailedMount', err.message);
        this.lastMountError = err.message;
      }
      return false;
    }
  }

  /** Probes follow the newest running container of each app container. */
  private syncProbes(pod: V1Pod, observed: ObservedPod): void {
    const sandbox = observed.sandbox;
    this.podIP = pod.spec?.hostNetwork ? this.deps.hostIP : (sandbox?.ip ?? '');
    const byName = containersByName(observed);
    const running: RunningContainer[] = [];
    for (const spec of [...(pod.spec!.initContainers ?? []).filter(isSidecar), ...pod.spec!.containers]) {
      const [cur] = byName.get(spec.name) ?? [];
      if (cur?.state === 'CONTAINER_RUNNING' && !this.pendingKills.has(cur.id)) running.push({ spec, id: cur.id, startedAtMs: cur.startedAt / 1e6 });
    }
    this.probes.sync(running);
  }

  /** Containers whose liveness or startup probe failed are killed here, in the worker's turn; the sync restarts them. */
  private async killUnhealthy(pod: V1Pod): Promise<void> {
    for (const [containerId, kill] of [...this.pendingKills]) {
      this.pendingKills.delete(containerId);
      const spec = [...pod.spec!.containers, ...(pod.spec!.initContainers ?? [])].find((c) => c.name === kill.name);
      if (!spec) continue;
      this.log.info({ container: kill.name, probe: kill.reason }, 'killing unhealthy container');
      this.deps.recordEvent?.(pod, 'Normal', 'Killing', kill.message);
      const probe = kill.reason === 'liveness' ? spec.livenessProbe : spec.startupProbe;
      const grace = probe?.terminationGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
      await this.killContainer(pod, spec, containerId, this.podIP, grace, kill.reason);
    }
  }

  /** preStop (if any) then StopContainer, together within the grace period. */
  private async killContainer(pod: V1Pod, spec: V1Container | undefined, containerId: string, podIP: string, grace: number, why: string): Promise<void> {
    const cri = this.deps.cri;
    this.probes.forget(containerId);
    const started = Date.now();
    const preStop = spec?.lifecycle?.preStop;
    if (preStop && spec) {
      const res = await runLifecycleHook(preStop, { cri, container: spec, containerId, podIP }, grace);
      if (!res.ok) {
        this.log.warn({ container: spec.name, err: res.output }, 'preStop hook failed');
        this.deps.recordEvent?.(pod, 'Warning', 'FailedPreStopHook', `PreStopHook failed: ${res.output.trim()}`);
      }
    }
    const remaining = Math.max(MIN_GRACE_SECONDS, Math.ceil(grace - (Date.now() - started) / 1000));
    this.log.debug({ container: spec?.name, why, grace: remaining }, 'stopping container');
    await cri
      .runtime('StopContainer', { container_id: containerId, timeout: remaining }, { deadlineMs: (remaining + 30) * 1000 })
      .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'StopContainer failed'));
  }

  private async terminate(pod: V1Pod): Promise<void> {
    const cri = this.deps.cri;
    this.probes.stopAll();
    const grace = this.gracePeriod(pod);
    const observed = await this.observe();
    const running = observed.containers.filter((c) => c.state === 'CONTAINER_RUNNING' || c.state === 'CONTAINER_CREATED');
    if (running.length > 0) {
      this.deps.recordEvent?.(pod, 'Normal', 'Killing', `Stopping containers with grace period ${grace}s`);
      this.log.info({ grace, containers: running.length }, 'stopping pod');
    }
    const podIP = pod.spec?.hostNetwork ? this.deps.hostIP : (observed.sandbox?.ip ?? '');
    const specs = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
    // App containers first, then the sidecars, last started first, each with what is left of the grace period.
    const deadline = Date.now() + grace * 1000;
    for (const wave of terminationOrder(pod, running)) {
      const left = Math.max(MIN_GRACE_SECONDS, Math.ceil((deadline - Date.now()) / 1000));
      await Promise.all(
        wave.map((c) =>
          c.state === 'CONTAINER_RUNNING'
            ? this.killContainer(pod, specs.find((s) => s.name === c.name), c.id, podIP, left, 'deletion')
            : cri.runtime('StopContainer', { container_id: c.id, timeout: left }, { deadlineMs: (left + 30) * 1000 }),
        ),
      );
    }
    if (!this.removed && this.deps.finishDeletion && !this.reportedDeleted) await this.reportDeleted(pod);
    for (const s of observed.sandboxes) {
      await cri.runtime('StopPodSandbox', { pod_sandbox_id: s.id });
      await cri.runtime('RemovePodSandbox', { pod_sandbox_id: s.id });
    }
    if (this.deps.volumeRoot) await fsp.rm(path.join(this.deps.volumeRoot, 'pods', this.uid, 'containers'), { recursive: true, force: true }).catch(() => undefined);
    await this.volumes?.tearDown().catch((err) => this.log.warn({ err: errorMessage(err) }, 'volume tear-down failed'));
    if (this.deps.podCgroups) {
      // Every QoS path: an orphan's spec is not known, so neither is its class.
      for (const qos of ['Guaranteed', 'Burstable', 'BestEffort'] as const) {
        await this.deps.podCgroups.remove(this.cgroupParent(pod, qos)).catch((err) => this.log.warn({ err: errorMessage(err) }, 'pod cgroup not removed'));
      }
    }
    if (!this.removed && this.deps.finishDeletion) await this.deps.finishDeletion(pod);
    this.finished = true;
    clearTimeout(this.timer);
    this.log.info('pod terminated');
    this.deps.onTerminated(this.uid);
  }
}

/** The crash-loop delay before restarting a container that exited as attempt `attempt` (≥ 1): the first restart is immediate, then initial·2ⁿ up to max. */
export function derivedBackoffMs(attempt: number, initialMs: number, maxMs: number): number {
  return Math.min(initialMs * 2 ** Math.min(attempt - 1, 30), maxMs);
}

class ContainerWaiting extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}
