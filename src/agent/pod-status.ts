// What CRI shows of a pod → the Pod's status as the kubelet writes it. Pure.
import { isSidecar, qosClassOf } from './qos.js';
export { qosClassOf };
import type { V1Container, V1ContainerStatus, V1Pod, V1PodCondition, V1PodStatus, V1ResourceRequirements } from '@kubernetes/client-node';
import { actualResources, comparable, type LinuxResources } from './resize.js';
import { containerLinuxResources, type QosClass } from './qos.js';

export interface ObservedSandbox {
  id: string;
  attempt: number;
  ready: boolean;
  createdAt: number;
  ip: string;
  ips: string[];
}

export interface ObservedContainer {
  id: string;
  sandboxId: string;
  name: string;
  attempt: number;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  createdAt: number;
  startedAt: number;
  finishedAt: number;
  exitCode: number;
  reason: string;
  message: string;
  imageRef: string;
  /** The resources the runtime reports for the container (ContainerStatus.resources.linux). */
  resources?: LinuxResources | null;
}

export interface ObservedPod {
  /** The newest ready sandbox, or the newest of any when none is ready. */
  sandbox?: ObservedSandbox;
  sandboxes: ObservedSandbox[];
  containers: ObservedContainer[];
}

export interface WaitingReason {
  reason: string;
  message?: string;
}

export interface StatusContext {
  runtimeName: string;
  hostIP: string;
  now: Date;
  /** Why a container is not running though it should (CrashLoopBackOff, ErrImagePull, ...), by container name. */
  waiting: Map<string, WaitingReason>;
  /** The pod's containers were stopped for its deletion: the phase is terminal (Succeeded if every app container exited 0). */
  deleted?: boolean;
  /** ready and started of a running container from its probes; without it a running container is both. */
  probes?(spec: V1Container, containerId: string): { ready: boolean; started: boolean };
  /** The resources the agent admitted for a container (the desired ones until a resize is refused). */
  allocated?(spec: V1Container): V1ResourceRequirements | undefined;
  /** A resize the node refused (PodResizePending, Infeasible) or failed to apply (PodResizeInProgress, Error). */
  resize?: { infeasible?: string; error?: string };
}

/** The latest and previous container of each name in the current sandbox, newest first. */
export function containersByName(observed: ObservedPod): Map<string, ObservedContainer[]> {
  const byName = new Map<string, ObservedContainer[]>();
  const sandboxId = observed.sandbox?.id;
  for (const c of observed.containers) {
    if (c.sandboxId !== sandboxId) continue;
    const list = byName.get(c.name) ?? [];
    list.push(c);
    byName.set(c.name, list);
  }
  for (const list of byName.values()) list.sort((a, b) => b.attempt - a.attempt || b.createdAt - a.createdAt);
  return byName;
}

/** Timestamps in the API have second precision. */
export function apiTime(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

function nsToDate(ns: number): Date {
  return apiTime(ns / 1e6);
}

function terminatedState(c: ObservedContainer, runtimeName: string) {
  return {
    exitCode: c.exitCode,
    reason: c.reason || (c.exitCode === 0 ? 'Completed' : 'Error'),
    ...(c.message ? { message: c.message } : {}),
    startedAt: c.startedAt ? nsToDate(c.startedAt) : undefined,
    finishedAt: nsToDate(c.finishedAt),
    containerID: `${runtimeName}://${c.id}`,
  };
}

function hasResources(r: V1ResourceRequirements | undefined): r is V1ResourceRequirements {
  return Boolean(r && (Object.keys(r.requests ?? {}).length || Object.keys(r.limits ?? {}).length));
}

/** A running container whose runtime resources are not (yet) the allocated ones: a resize being applied. */
function resizing(spec: V1Container, current: ObservedContainer | undefined, ctx: StatusContext, qos: QosClass): boolean {
  if (current?.state !== 'CONTAINER_RUNNING' || !current.resources) return false;
  const alloc = ctx.allocated?.(spec) ?? spec.resources;
  const a = comparable(current.resources);
  const w = comparable(containerLinuxResources({ ...spec, resources: alloc }, qos));
  return a.cpuShares !== w.cpuShares || a.cpuQuota !== w.cpuQuota || a.memory !== w.memory;
}

function containerStatus(spec: V1Container, history: ObservedContainer[] | undefined, ctx: StatusContext, defaultWaiting: string, qos: QosClass = 'BestEffort'): V1ContainerStatus {
  const [current, previous] = history ?? [];
  const waiting = ctx.waiting.get(spec.name);
  const status: V1ContainerStatus = {
    name: spec.name,
    image: spec.image ?? '',
    imageID: current?.imageRef ?? '',
    ready: false,
    restartCount: current?.attempt ?? 0,
    started: false,
    state: {},
    lastState: {},
  };
  if (current) status.containerID = `${ctx.runtimeName}://${current.id}`;
  if (previous && previous.state === 'CONTAINER_EXITED') status.lastState = { terminated: terminatedState(previous, ctx.runtimeName) as any };
  if (!current) {
    status.state = { waiting: { reason: waiting?.reason ?? defaultWaiting, ...(waiting?.message ? { message: waiting.message } : {}) } };
  } else if (current.state === 'CONTAINER_RUNNING') {
    status.state = { running: { startedAt: nsToDate(current.startedAt) } };
    const probed = ctx.probes?.(spec, current.id) ?? { ready: true, started: true };
    status.ready = probed.ready;
    status.started = probed.started;
  } else if (current.state === 'CONTAINER_EXITED') {
    if (waiting) {
      // Waiting to be restarted: the kubelet shows the exit as lastState.
      status.state = { waiting: { reason: waiting.reason, ...(waiting.message ? { message: waiting.message } : {}) } };
      status.lastState = { terminated: terminatedState(current, ctx.runtimeName) as any };
    } else {
      status.state = { terminated: terminatedState(current, ctx.runtimeName) as any };
    }
  } else {
    status.state = { waiting: { reason: waiting?.reason ?? 'ContainerCreating', ...(waiting?.message ? { message: waiting.message } : {}) } };
  }
  // Allocated requests, and what the container really has (the runtime's view while it runs): in-place resize.
  const alloc = ctx.allocated?.(spec) ?? spec.resources;
  if (hasResources(alloc)) {
    if (Object.keys(alloc.requests ?? {}).length) status.allocatedResources = { ...alloc.requests };
    status.resources = current?.state === 'CONTAINER_RUNNING' ? actualResources(alloc, current.resources, spec, qos) : JSON.parse(JSON.stringify(alloc));
  }
  return status;
}

/** Initialized: every regular init container succeeded and every sidecar runs and started — or the app containers were already created. */
export function initializedFrom(pod: V1Pod, init: V1ContainerStatus[], app: V1ContainerStatus[]): boolean {
  if (app.some((s) => s.containerID || s.lastState?.terminated)) return true;
  const specs = pod.spec?.initContainers ?? [];
  return init.every((s, i) => (specs[i] && isSidecar(specs[i]) ? Boolean(s.state?.running && s.started) : s.state?.terminated?.exitCode === 0));
}

export function podPhase(pod: V1Pod, init: V1ContainerStatus[], app: V1ContainerStatus[], initDone = initializedFrom(pod, init, app)): string {
  const restartPolicy = pod.spec?.restartPolicy ?? 'Always';
  if (!initDone) {
    const specs = pod.spec?.initContainers ?? [];
    const failedInit = init.some((s, i) => !(specs[i] && isSidecar(specs[i])) && s.state?.terminated && s.state.terminated.exitCode !== 0);
    return failedInit && restartPolicy === 'Never' ? 'Failed' : 'Pending';
  }
  let running = 0;
  let waiting = 0;
  let succeeded = 0;
  let failed = 0;
  for (const s of app) {
    if (s.state?.running) running++;
    else if (s.state?.terminated) (s.state.terminated.exitCode === 0 ? succeeded++ : failed++);
    else if (s.state?.waiting) {
      if (s.lastState?.terminated) (s.lastState.terminated.exitCode === 0 ? succeeded++ : failed++);
      else waiting++;
    }
  }
  if (waiting > 0) return 'Pending';
  if (running > 0) return 'Running';
  // Sidecars still running are being stopped after the app containers: the pod is not done until they are.
  const specs = pod.spec?.initContainers ?? [];
  if (init.some((s, i) => specs[i] && isSidecar(specs[i]) && s.state?.running)) return 'Running';
  if (restartPolicy === 'Always') return 'Running';
  if (restartPolicy === 'OnFailure') return failed > 0 ? 'Running' : 'Succeeded';
  return failed > 0 ? 'Failed' : 'Succeeded';
}

function condition(type: string, ok: boolean, previous: V1PodCondition[] | undefined, now: Date, reason?: string): V1PodCondition {
  const status = ok ? 'True' : 'False';
  const before = previous?.find((c) => c.type === type);
  const since = before && before.status === status && before.lastTransitionTime ? new Date(before.lastTransitionTime) : now;
  return { type, status, lastProbeTime: null as any, lastTransitionTime: since, ...(ok || !reason ? {} : { reason }) };
}

export function computePodStatus(pod: V1Pod, observed: ObservedPod, ctx: StatusContext): V1PodStatus {
  const byName = containersByName(observed);
  const spec = pod.spec!;
  const initSpecs = spec.initContainers ?? [];
  const qos = qosClassOf(pod);
  const initStatuses = initSpecs.map((c) => containerStatus(c, byName.get(c.name), ctx, 'PodInitializing', qos));
  // A sidecar is ready while it runs and its probes say so; a regular init container once it succeeded.
  initSpecs.forEach((c, i) => {
    if (!isSidecar(c)) initStatuses[i].ready = initStatuses[i].state?.terminated?.exitCode === 0;
  });
  const created = spec.containers.some((c) => byName.has(c.name));
  const initDone = created || initializedFrom(pod, initStatuses, []);
  const appStatuses = spec.containers.map((c) => containerStatus(c, byName.get(c.name), ctx, initDone ? 'ContainerCreating' : 'PodInitializing', qos));
  let phase = podPhase(pod, initStatuses, appStatuses, initDone);
  if (ctx.deleted && phase !== 'Succeeded' && phase !== 'Failed') {
    // As the kubelet reports a pod it stopped for deletion, so controllers see it finished.
    phase = appStatuses.every((s) => s.state?.terminated?.exitCode === 0) ? 'Succeeded' : 'Failed';
  }
  const previous = pod.status?.conditions;
  const now = ctx.now;
  const sandboxReady = Boolean(observed.sandbox?.ready);
  const containersReady = appStatuses.every((s) => s.ready);
  const terminal = phase === 'Succeeded' || phase === 'Failed';
  const conditions: V1PodCondition[] = [
    condition('PodReadyToStartContainers', sandboxReady, previous, now),
    condition('Initialized', initDone, previous, now, 'ContainersNotInitialized'),
    condition('Ready', containersReady && !terminal, previous, now, terminal ? 'PodCompleted' : 'ContainersNotReady'),
    condition('ContainersReady', containersReady && !terminal, previous, now, terminal ? 'PodCompleted' : 'ContainersNotReady'),
    condition('PodScheduled', true, previous, now),
  ];
  // Resize conditions are there only while a resize is refused or being applied (as v1.33+ kubelets report them).
  const since = (type: string) => {
    const before = previous?.find((c) => c.type === type && c.status === 'True');
    return before?.lastTransitionTime ? new Date(before.lastTransitionTime) : now;
  };
  if (ctx.resize?.infeasible) {
    conditions.push({ type: 'PodResizePending', status: 'True', reason: 'Infeasible', message: ctx.resize.infeasible, lastProbeTime: null as any, lastTransitionTime: since('PodResizePending') });
  }
  const resizable = [...initSpecs.filter(isSidecar), ...spec.containers];
  if (ctx.resize?.error || resizable.some((c) => resizing(c, byName.get(c.name)?.[0], ctx, qos))) {
    conditions.push({
      type: 'PodResizeInProgress', status: 'True', lastProbeTime: null as any, lastTransitionTime: since('PodResizeInProgress'),
      ...(ctx.resize?.error ? { reason: 'Error', message: ctx.resize.error } : {}),
    });
  }
  const podIP = spec.hostNetwork ? ctx.hostIP : (observed.sandbox?.ready ? observed.sandbox.ip : '');
  const podIPs = spec.hostNetwork ? [ctx.hostIP] : observed.sandbox?.ready ? [observed.sandbox.ip, ...observed.sandbox.ips].filter(Boolean) : [];
  const status: V1PodStatus = {
    phase,
    conditions,
    hostIP: ctx.hostIP,
    hostIPs: [{ ip: ctx.hostIP }],
    startTime: pod.status?.startTime ? new Date(pod.status.startTime) : apiTime(now.getTime()),
    containerStatuses: appStatuses,
    qosClass: qos,
  };
  if (initSpecs.length > 0) status.initContainerStatuses = initStatuses;
  const ephemeral = spec.ephemeralContainers ?? [];
  if (ephemeral.length > 0) {
    // As the kubelet: never ready (no probes), never restarted.
    status.ephemeralContainerStatuses = ephemeral.map((e) => ({ ...containerStatus(e as V1Container, byName.get(e.name), ctx, 'ContainerCreating'), ready: false }));
  }
  if (podIP) {
    status.podIP = podIP;
    status.podIPs = [...new Set(podIPs)].map((ip) => ({ ip }));
  }
  return status;
}

/** Stable text of a status for change detection (Dates and strings compare alike). */
export function statusFingerprint(status: V1PodStatus): string {
  return JSON.stringify(status, (_key, value) => {
    // The API keeps status times to the second: a time we computed and the same time read back are one.
    if (typeof value === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(value)) return new Date(Math.floor(Date.parse(value) / 1000) * 1000).toISOString();
    return value;
  });
}
