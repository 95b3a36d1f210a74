// QoS classes and the kubelet's pod cgroups (cgroupfs driver): class, cgroup path, and the limits of the pod's cgroup. Pure.
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parseQuantity } from './pod-spec.js';

export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

const MIN_SHARES = 2;
const MAX_SHARES = 262_144;
const SHARES_PER_CPU = 1024;
export const CPU_PERIOD_US = 100_000;
const MIN_QUOTA_US = 1000;

type ResourceMap = Record<string, string | number> | undefined;

function nonZero(map: ResourceMap, name: string): number | undefined {
  const raw = map?.[name];
  if (raw === undefined) return undefined;
  const n = parseQuantity(raw);
  return n > 0 ? n : undefined;
}

/** An init container with restartPolicy Always: a sidecar, running beside the app containers. */
export function isSidecar(c: V1Container): boolean {
  return (c as { restartPolicy?: string }).restartPolicy === 'Always';
}

/** The kubelet's rule (qos.go): only cpu and memory count; zero quantities are ignored; requests missing from a Guaranteed container default to its limits. */
export function qosClassOf(pod: V1Pod): QosClass {
  if (pod.status?.qosClass) return pod.status.qosClass as QosClass; // set once at admission; a resize never changes it
  return computeQosClass(pod);
}

export function computeQosClass(pod: V1Pod): QosClass {
  const containers = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  const requests = new Map<string, number>();
  const limits = new Map<string, number>();
  let guaranteed = true;
  for (const c of containers) {
    for (const r of ['cpu', 'memory']) {
      const req = nonZero(c.resources?.requests, r);
      if (req !== undefined) requests.set(r, (requests.get(r) ?? 0) + req);
      const lim = nonZero(c.resources?.limits, r);
      if (lim !== undefined) limits.set(r, (limits.get(r) ?? 0) + lim);
      else guaranteed = false;
    }
  }
  if (requests.size === 0 && limits.size === 0) return 'BestEffort';
  if (guaranteed) {
    // A request the container left out is its limit (the apiserver defaults it; static pods are not defaulted).
    for (const r of ['cpu', 'memory']) {
      let req = 0;
      for (const c of containers) req += nonZero(c.resources?.requests, r) ?? nonZero(c.resources?.limits, r) ?? 0;
      if (req !== limits.get(r)) guaranteed = false;
    }
  }
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

/** `/kubepods[/burstable|/besteffort]/pod<uid>` under the cgroup root (the kubelet's cgroupfs names). */
export function podCgroupParent(cgroupRoot: string, qos: QosClass, uid: string): string {
  const parts = [cgroupRoot, 'kubepods'];
  if (qos === 'Burstable') parts.push('burstable');
  if (qos === 'BestEffort') parts.push('besteffort');
  parts.push(`pod${uid}`);
  return ('/' + parts.join('/')).replace(/\/+/g, '/');
}

export function qosCgroupPath(cgroupRoot: string, qos: QosClass | 'all'): string {
  const parts = [cgroupRoot, 'kubepods'];
  if (qos === 'Burstable') parts.push('burstable');
  if (qos === 'BestEffort') parts.push('besteffort');
  return ('/' + parts.join('/')).replace(/\/+/g, '/');
}

export function sharesForCpu(cpu: number | undefined): number {
  if (cpu === undefined || cpu <= 0) return MIN_SHARES;
  return Math.min(MAX_SHARES, Math.max(MIN_SHARES, Math.floor((Math.round(cpu * 1000) * SHARES_PER_CPU) / 1000)));
}

export function quotaForCpu(cpu: number): number {
  return Math.max(MIN_QUOTA_US, Math.floor((Math.round(cpu * 1000) * CPU_PERIOD_US) / 1000));
}

export interface PodResourceTotals {
  cpuRequest: number;
  /** undefined: some container has no cpu limit (the pod's cgroup gets no quota). */
  cpuLimit?: number;
  memoryRequest: number;
  memoryLimit?: number;
}

interface Amounts {
  cpuReq: number;
  memReq: number;
  cpuLim?: number;
  memLim?: number;
}

function amountsOf(c: V1Container, resources = c.resources): Amounts {
  const cpuLim = nonZero(resources?.limits, 'cpu');
  const memLim = nonZero(resources?.limits, 'memory');
  return {
    cpuReq: nonZero(resources?.requests, 'cpu') ?? cpuLim ?? 0,
    memReq: nonZero(resources?.requests, 'memory') ?? memLim ?? 0,
    cpuLim,
    memLim,
  };
}

const add = (a?: number, b?: number) => (a === undefined || b === undefined ? undefined : a + b);
const max = (a?: number, b?: number) => (a === undefined || b === undefined ? undefined : Math.max(a, b));

/**
 * The pod's effective requests and limits (resourcehelper.PodRequests/PodLimits): the app containers and sidecars
 * together, or an init container (plus the sidecars started before it) when that is larger; then the pod overhead.
 * `resourcesOf` gives a container's resources (the allocated ones after a resize).
 */
export function podResourceTotals(pod: V1Pod, resourcesOf: (c: V1Container) => V1Container['resources'] = (c) => c.resources): PodResourceTotals {
  const spec = pod.spec!;
  let sidecars: Amounts = { cpuReq: 0, memReq: 0, cpuLim: 0, memLim: 0 };
  let initPeak: Amounts = { cpuReq: 0, memReq: 0, cpuLim: 0, memLim: 0 };
  for (const c of spec.initContainers ?? []) {
    const a = amountsOf(c, resourcesOf(c));
    if (isSidecar(c)) {
      sidecars = { cpuReq: sidecars.cpuReq + a.cpuReq, memReq: sidecars.memReq + a.memReq, cpuLim: add(sidecars.cpuLim, a.cpuLim), memLim: add(sidecars.memLim, a.memLim) };
      initPeak = { cpuReq: Math.max(initPeak.cpuReq, sidecars.cpuReq), memReq: Math.max(initPeak.memReq, sidecars.memReq), cpuLim: max(initPeak.cpuLim, sidecars.cpuLim), memLim: max(initPeak.memLim, sidecars.memLim) };
    } else {
      initPeak = {
        cpuReq: Math.max(initPeak.cpuReq, a.cpuReq + sidecars.cpuReq),
        memReq: Math.max(initPeak.memReq, a.memReq + sidecars.memReq),
        cpuLim: max(initPeak.cpuLim, add(a.cpuLim, sidecars.cpuLim)),
        memLim: max(initPeak.memLim, add(a.memLim, sidecars.memLim)),
      };
    }
  }
  let app: Amounts = { ...sidecars };
  for (const c of spec.containers ?? []) {
    const a = amountsOf(c, resourcesOf(c));
    app = { cpuReq: app.cpuReq + a.cpuReq, memReq: app.memReq + a.memReq, cpuLim: add(app.cpuLim, a.cpuLim), memLim: add(app.memLim, a.memLim) };
  }
  const overhead = spec.overhead ?? {};
  const ovCpu = overhead.cpu !== undefined ? parseQuantity(overhead.cpu) : 0;
  const ovMem = overhead.memory !== undefined ? parseQuantity(overhead.memory) : 0;
  return {
    cpuRequest: Math.max(app.cpuReq, initPeak.cpuReq) + ovCpu,
    memoryRequest: Math.max(app.memReq, initPeak.memReq) + ovMem,
    cpuLimit: add(max(app.cpuLim, initPeak.cpuLim), ovCpu),
    memoryLimit: add(max(app.memLim, initPeak.memLim), ovMem),
  };
}

/** The limits of a pod's cgroup (ResourceConfigForPod): shares from requests; quota and memory only when every container has that limit. */
export interface CgroupLimits {
  cpuShares: number;
  cpuQuotaUs?: number;
  cpuPeriodUs: number;
  memoryLimitBytes?: number;
}

export function podCgroupLimits(pod: V1Pod, qos: QosClass, resourcesOf?: (c: V1Container) => V1Container['resources']): CgroupLimits {
  if (qos === 'BestEffort') return { cpuShares: MIN_SHARES, cpuPeriodUs: CPU_PERIOD_US };
  const t = podResourceTotals(pod, resourcesOf);
  const limits: CgroupLimits = { cpuShares: sharesForCpu(t.cpuRequest), cpuPeriodUs: CPU_PERIOD_US };
  if (t.cpuLimit !== undefined) limits.cpuQuotaUs = quotaForCpu(t.cpuLimit);
  if (t.memoryLimit !== undefined) limits.memoryLimitBytes = Math.floor(t.memoryLimit);
  return limits;
}

/** A container's CRI LinuxContainerResources: shares from its request (else its limit), quota and memory from its limits. */
export function containerLinuxResources(c: V1Container, qos: QosClass, memoryCapacity?: number, resources = c.resources): Record<string, number> {
  const a = amountsOf(c, resources);
  const res: Record<string, number> = { cpu_period: CPU_PERIOD_US, cpu_shares: sharesForCpu(a.cpuReq) };
  if (a.cpuLim !== undefined) res.cpu_quota = quotaForCpu(a.cpuLim);
  if (a.memLim !== undefined) res.memory_limit_in_bytes = Math.floor(a.memLim);
  const adj = oomScoreAdj(qos, a.memReq, memoryCapacity);
  if (adj !== undefined) res.oom_score_adj = adj;
  return res;
}

/** The kubelet's oom_score_adj by QoS (policy.go); Burstable scales with the memory request against the node's memory. */
export function oomScoreAdj(qos: QosClass, memoryRequest: number, memoryCapacity?: number): number | undefined {
  if (qos === 'Guaranteed') return -997;
  if (qos === 'BestEffort') return 1000;
  if (!memoryCapacity) return undefined;
  const adj = 1000 - Math.floor((1000 * memoryRequest) / memoryCapacity);
  return Math.min(999, Math.max(2, adj));
}

/** cgroup v2's cpu.weight for v1 shares (the conversion runc and the kubelet use). */
export function sharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  return 1 + Math.floor(((shares - 2) * 9999) / 262_142);
}
