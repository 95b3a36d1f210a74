// The kubelet's resource figures: /stats/summary (stats/v1alpha1 Summary) and /metrics/resource (Prometheus text,
// what metrics-server and so `kubectl top` read). Containers and pods from CRI (ListContainerStats,
// ListPodSandboxStats), the node from /proc. buildSummary and resourceMetricsText are pure.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { CriClient } from '../cri-client.js';
import { CONTAINER_NAME_LABEL, POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL } from '../pod-spec.js';
const CLOCK_TICKS_PER_SECOND = 100;

export interface NodeSample {
  at: number;
  cpuCoreNanoSeconds: number;
  memoryTotal: number;
  memoryAvailable: number;
  memoryUsage: number;
  memoryWorkingSet: number;
}

export interface StatsInput {
  nodeName: string;
  node: NodeSample;
  /** usageNanoCores of the node from the previous sample, when there is one. */
  nodeNanoCores?: number;
  bootTime: number;
  containers: any[];
  sandboxes: any[];
}

/** CPU and memory of the whole machine from /proc/stat and /proc/meminfo. */
export function readNodeSample(now = Date.now()): NodeSample {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '))!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: everything but idle and iowait is use.
  const busyTicks = (cpu[0] ?? 0) + (cpu[1] ?? 0) + (cpu[2] ?? 0) + (cpu[5] ?? 0) + (cpu[6] ?? 0) + (cpu[7] ?? 0);
  const mem = new Map<string, number>();
  for (const line of readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^([^:]+):\s+(\d+)/.exec(line);
    if (m) mem.set(m[1]!, Number(m[2]) * 1024);
  }
  const total = mem.get('MemTotal') ?? os.totalmem();
  const usage = total - (mem.get('MemFree') ?? os.freemem());
  return {
    at: now,
    cpuCoreNanoSeconds: Math.round((busyTicks * 1e9) / CLOCK_TICKS_PER_SECOND),
    memoryTotal: total,
    memoryAvailable: mem.get('MemAvailable') ?? os.freemem(),
    memoryUsage: usage,
    memoryWorkingSet: Math.max(0, usage - (mem.get('Inactive(file)') ?? 0)),
  };
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
const nsToMs = (ns: number | undefined) => (ns ? Math.floor(ns / 1e6) : Date.now());
const value = (v: any): number | undefined => (v && typeof v.value === 'number' ? v.value : undefined);

function cpuOf(c: any) {
  if (!c) return undefined;
  return { time: iso(nsToMs(c.timestamp)), usageNanoCores: value(c.usage_nano_cores), usageCoreNanoSeconds: value(c.usage_core_nano_seconds) };
}

function memoryOf(m: any) {
  if (!m) return undefined;
  return {
    time: iso(nsToMs(m.timestamp)),
    availableBytes: value(m.available_bytes),
    usageBytes: value(m.usage_bytes),
    workingSetBytes: value(m.working_set_bytes),
    rssBytes: value(m.rss_bytes),
    pageFaults: value(m.page_faults),
    majorPageFaults: value(m.major_page_faults),
  };
}

/** The stats/v1alpha1 Summary of the node and its pods. */
export function buildSummary(input: StatsInput): any {
  const pods = new Map<string, any>();
  const podOf = (labels: Record<string, string> | undefined, fallback?: { name?: string; namespace?: string; uid?: string }) => {
    const uid = labels?.[POD_UID_LABEL] ?? fallback?.uid;
    if (!uid) return undefined;
    let pod = pods.get(uid);
    if (!pod) {
      pod = {
        podRef: { name: labels?.[POD_NAME_LABEL] ?? fallback?.name ?? '', namespace: labels?.[POD_NAMESPACE_LABEL] ?? fallback?.namespace ?? '', uid },
        startTime: iso(input.node.at),
        containers: [],
      };
      pods.set(uid, pod);
    }
    return pod;
  };
  for (const s of input.sandboxes) {
    const pod = podOf(s.attributes?.labels, s.attributes?.metadata);
    if (!pod) continue;
    const linux = s.linux ?? {};
    if (linux.cpu) pod.cpu = cpuOf(linux.cpu);
    if (linux.memory) pod.memory = memoryOf(linux.memory);
    if (linux.network) pod.network = { time: iso(nsToMs(linux.network.timestamp)), interfaces: [] };
  }
  for (const c of input.containers) {
    const labels = c.attributes?.labels;
    const pod = podOf(labels);
    if (!pod) continue;
    const name = labels?.[CONTAINER_NAME_LABEL] ?? c.attributes?.metadata?.name ?? '';
    pod.containers.push({ name, startTime: pod.startTime, cpu: cpuOf(c.cpu), memory: memoryOf(c.memory) });
  }
  for (const pod of pods.values()) {
    // Without sandbox figures the pod is the sum of its containers.
    if (!pod.cpu) {
      pod.cpu = { time: iso(input.node.at), usageCoreNanoSeconds: pod.containers.reduce((n: number, c: any) => n + (c.cpu?.usageCoreNanoSeconds ?? 0), 0) };
    }
    if (!pod.memory) {
      pod.memory = { time: iso(input.node.at), workingSetBytes: pod.containers.reduce((n: number, c: any) => n + (c.memory?.workingSetBytes ?? 0), 0) };
    }
  }
  const n = input.node;
  return {
    node: {
      nodeName: input.nodeName,
      startTime: iso(input.bootTime),
      cpu: { time: iso(n.at), usageNanoCores: input.nodeNanoCores, usageCoreNanoSeconds: n.cpuCoreNanoSeconds },
      memory: { time: iso(n.at), availableBytes: n.memoryAvailable, usageBytes: n.memoryUsage, workingSetBytes: n.memoryWorkingSet },
      systemContainers: [],
    },
    pods: [...pods.values()],
  };
}

function labelText(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
}

/** /metrics/resource in the Prometheus text format, as the kubelet names the series. */
export function resourceMetricsText(summary: any): string {
  const lines: string[] = [];
  const family = (name: string, type: 'counter' | 'gauge', help: string, samples: [Record<string, string>, number | undefined, string | undefined][]) => {
    lines.push(`# HELP ${name} [STABLE] ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v, time] of samples) {
      if (v === undefined) continue;
      const ts = time ? ` ${Date.parse(time)}` : '';
      lines.push(`${name}${Object.keys(labels).length ? `{${labelText(labels)}}` : ''} ${v}${ts}`);
    }
  };
  const node = summary.node;
  const containers = (summary.pods as any[]).flatMap((p) => p.containers.map((c: any) => ({ p, c })));
  family('container_cpu_usage_seconds_total', 'counter', 'Cumulative cpu time consumed by the container in core-seconds',
    containers.map(({ p, c }) => [{ container: c.name, namespace: p.podRef.namespace, pod: p.podRef.name }, c.cpu?.usageCoreNanoSeconds !== undefined ? c.cpu.usageCoreNanoSeconds / 1e9 : undefined, c.cpu?.time]));
  family('container_memory_working_set_bytes', 'gauge', 'Current working set of the container in bytes',
    containers.map(({ p, c }) => [{ container: c.name, namespace: p.podRef.namespace, pod: p.podRef.name }, c.memory?.workingSetBytes, c.memory?.time]));
  family('node_cpu_usage_seconds_total', 'counter', 'Cumulative cpu time consumed by the node in core-seconds',
    [[{}, node.cpu.usageCoreNanoSeconds / 1e9, node.cpu.time]]);
  family('node_memory_working_set_bytes', 'gauge', 'Current working set of the node in bytes', [[{}, node.memory.workingSetBytes, node.memory.time]]);
  family('pod_cpu_usage_seconds_total', 'counter', 'Cumulative cpu time consumed by the pod in core-seconds',
    (summary.pods as any[]).map((p) => [{ namespace: p.podRef.namespace, pod: p.podRef.name }, p.cpu?.usageCoreNanoSeconds !== undefined ? p.cpu.usageCoreNanoSeconds / 1e9 : undefined, p.cpu?.time]));
  family('pod_memory_working_set_bytes', 'gauge', 'Current working set of the pod in bytes',
    (summary.pods as any[]).map((p) => [{ namespace: p.podRef.namespace, pod: p.podRef.name }, p.memory?.workingSetBytes, p.memory?.time]));
  lines.push('# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise', '# TYPE scrape_error gauge', 'scrape_error 0');
  return `${lines.join('\n')}\n`;
}

/** Collects the figures; remembers the previous node sample for usageNanoCores. */
export class NodeStatsSource {
  private previous?: NodeSample;
  private readonly bootTime = Date.now() - os.uptime() * 1000;

  constructor(private readonly cri: CriClient, private readonly nodeName: string) {}

  async summary(): Promise<any> {
    const [containers, sandboxes] = await Promise.all([
      this.cri.runtime('ListContainerStats', {}, { deadlineMs: 10_000 }).then((r) => r.stats ?? []),
      this.cri.runtime('ListPodSandboxStats', {}, { deadlineMs: 10_000 }).then((r) => r.stats ?? [], () => []),
    ]);
    const node = readNodeSample();
    const before = this.previous;
    const nodeNanoCores = before && node.at > before.at
      ? Math.max(0, Math.round(((node.cpuCoreNanoSeconds - before.cpuCoreNanoSeconds) / (node.at - before.at)) * 1e6))
      : undefined;
    this.previous = node;
    return buildSummary({ nodeName: this.nodeName, node, nodeNanoCores, bootTime: this.bootTime, containers, sandboxes });
  }
}
