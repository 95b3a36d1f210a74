// In-place resize (the pod's resize subresource): whether the desired resources are admitted, and which running
// containers need UpdateContainerResources or a restart. Pure.
import type { V1Container, V1Pod, V1ResourceRequirements } from '@kubernetes/client-node';
import { containerLinuxResources, podResourceTotals, type QosClass } from './qos.js';

/** The CRI resources that a resize changes, as the runtime reports them (ContainerStatus.resources.linux). */
export interface LinuxResources {
  cpu_period?: number | string;
  cpu_quota?: number | string;
  cpu_shares?: number | string;
  memory_limit_in_bytes?: number | string;
  [key: string]: unknown;
}

export interface RunningForResize {
  spec: V1Container;
  id: string;
  /** What the runtime says the container has now; absent when the runtime does not report it. */
  actual?: LinuxResources | null;
}

export interface NodeCapacity {
  /** cores */
  cpu: number;
  /** bytes */
  memory: number;
}

export interface ResizeDecision {
  /** The desired resources do not fit the node: they are not allocated (PodResizePending, Infeasible). */
  infeasible?: string;
  /** Running containers whose resources differ from the allocated ones: update in place. */
  update: { spec: V1Container; id: string; resources: Record<string, number> }[];
  /** Running containers whose changed resource has resizePolicy RestartContainer. */
  restart: { spec: V1Container; id: string }[];
}

const num = (v: unknown): number => Number(v ?? 0) || 0;

/** cpu (shares, quota) and memory (limit) of CRI resources, 0 meaning none set. */
export function comparable(r: LinuxResources | Record<string, number> | null | undefined): { cpuShares: number; cpuQuota: number; memory: number } {
  const quota = num(r?.cpu_quota);
  return { cpuShares: num(r?.cpu_shares), cpuQuota: quota > 0 ? quota : 0, memory: num(r?.memory_limit_in_bytes) > 0 ? num(r?.memory_limit_in_bytes) : 0 };
}

/** Whether the desired resources fit the node (the kubelet also subtracts the other pods' allocations; this node checks the pod alone). */
export function resizeFits(pod: V1Pod, capacity: NodeCapacity): string | undefined {
  const t = podResourceTotals(pod);
  const short: string[] = [];
  if (t.cpuRequest > capacity.cpu) short.push(`cpu, requested: ${Math.round(t.cpuRequest * 1000)}, capacity: ${Math.round(capacity.cpu * 1000)}`);
  if (t.memoryRequest > capacity.memory) short.push(`memory, requested: ${Math.round(t.memoryRequest)}, capacity: ${capacity.memory}`);
  return short.length ? `Node didn't have enough capacity: ${short.join('; ')}` : undefined;
}

export function decideResize(
  pod: V1Pod,
  running: RunningForResize[],
  qos: QosClass,
  capacity: NodeCapacity,
  memoryCapacity?: number,
): ResizeDecision {
  const decision: ResizeDecision = { update: [], restart: [] };
  const infeasible = resizeFits(pod, capacity);
  if (infeasible) {
    decision.infeasible = infeasible;
    return decision;
  }
  for (const c of running) {
    if (!c.actual) continue; // a runtime that reports nothing is not resized (and was never told otherwise)
    const want = containerLinuxResources(c.spec, qos, memoryCapacity);
    const a = comparable(c.actual);
    const w = comparable(want);
    const cpuChanged = a.cpuShares !== w.cpuShares || a.cpuQuota !== w.cpuQuota;
    const memoryChanged = a.memory !== w.memory;
    if (!cpuChanged && !memoryChanged) continue;
    const policy = (name: string) => c.spec.resizePolicy?.find((p) => p.resourceName === name)?.restartPolicy ?? 'NotRequired';
    if ((cpuChanged && policy('cpu') === 'RestartContainer') || (memoryChanged && policy('memory') === 'RestartContainer')) {
      decision.restart.push({ spec: c.spec, id: c.id });
    } else {
      decision.update.push({ spec: c.spec, id: c.id, resources: want });
    }
  }
  return decision;
}

/** The requests and limits a running container really has, as the kubelet reports them: the allocated ones where the runtime agrees. */
export function actualResources(allocated: V1ResourceRequirements | undefined, actual: LinuxResources | null | undefined, spec: V1Container, qos: QosClass): V1ResourceRequirements {
  const alloc: V1ResourceRequirements = JSON.parse(JSON.stringify(allocated ?? {}));
  if (!actual) return alloc;
  const a = comparable(actual);
  const w = comparable(containerLinuxResources({ ...spec, resources: allocated }, qos));
  const requests = { ...(alloc.requests ?? {}) };
  const limits = { ...(alloc.limits ?? {}) };
  if (a.cpuShares !== w.cpuShares && a.cpuShares > 2) requests.cpu = `${Math.round((a.cpuShares * 1000) / 1024)}m`;
  if (a.cpuQuota !== w.cpuQuota) {
    if (a.cpuQuota > 0) limits.cpu = `${Math.round((a.cpuQuota * 1000) / (num(actual.cpu_period) || 100_000))}m`;
    else delete limits.cpu;
  }
  if (a.memory !== w.memory) {
    if (a.memory > 0) limits.memory = String(a.memory);
    else delete limits.memory;
  }
  const out: V1ResourceRequirements = {};
  if (Object.keys(requests).length) out.requests = requests;
  if (Object.keys(limits).length) out.limits = limits;
  return out;
}
