// /metrics/cadvisor: the container_* series the kubelet serves, from the runtime as the kubelet does with
// PodAndContainerStatsFromCRI (ListMetricDescriptors + ListPodSandboxMetrics); a runtime without those RPCs
// (containerd 1.6) gets the CPU and memory series from ListContainerStats. The builders are pure.
import type { CriClient } from '../cri-client.js';
import { CONTAINER_NAME_LABEL, POD_NAME_LABEL, POD_NAMESPACE_LABEL } from '../pod-spec.js';

export interface CriMetricDescriptor {
  name: string;
  help: string;
  label_keys: string[];
}

export interface CriMetric {
  name: string;
  timestamp?: string | number;
  metric_type?: string | number;
  label_values: string[];
  value?: { value?: string | number } | null;
}

export interface CriPodSandboxMetrics {
  pod_sandbox_id: string;
  metrics: CriMetric[];
  container_metrics: { container_id: string; metrics: CriMetric[] }[];
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function sampleLine(name: string, keys: readonly string[], values: readonly string[], value: number, timestampMs?: number): string {
  const labels = keys.map((k, i) => `${k}="${escapeLabel(values[i] ?? '')}"`).join(',');
  return `${name}{${labels}} ${value}${timestampMs ? ` ${timestampMs}` : ''}`;
}

/** The Prometheus text of the runtime's metrics: one family per descriptor, in the descriptors' order. */
export function cadvisorTextFromCri(descriptors: CriMetricDescriptor[], pods: CriPodSandboxMetrics[]): string {
  const byName = new Map<string, CriMetric[]>();
  for (const pod of pods) {
    for (const m of [...(pod.metrics ?? []), ...(pod.container_metrics ?? []).flatMap((c) => c.metrics ?? [])]) {
      let list = byName.get(m.name);
      if (!list) byName.set(m.name, (list = []));
      list.push(m);
    }
  }
  const lines: string[] = [];
  for (const d of descriptors) {
    const samples = byName.get(d.name) ?? [];
    const counter = samples.some((s) => s.metric_type === 'COUNTER' || s.metric_type === 0) || d.name.endsWith('_total');
    lines.push(`# HELP ${d.name} ${escapeHelp(d.help)}`, `# TYPE ${d.name} ${counter ? 'counter' : 'gauge'}`);
    for (const s of samples) {
      const ts = Math.floor(Number(s.timestamp ?? 0) / 1e6);
      lines.push(sampleLine(d.name, d.label_keys, s.label_values ?? [], Number(s.value?.value ?? 0), ts > 0 ? ts : undefined));
    }
  }
  return `${lines.join('\n')}\n`;
}

const KEYS = ['container', 'id', 'image', 'name', 'namespace', 'pod'] as const;

/** The CPU and memory series from ListContainerStats (plus the containers' images from ListContainers). */
export function cadvisorTextFromStats(stats: any[], images: Map<string, string>): string {
  const families: [string, string, 'counter' | 'gauge', string[], (s: any) => number | undefined][] = [
    ['container_cpu_usage_seconds_total', 'Cumulative cpu time consumed in seconds.', 'counter', ['cpu'], (s) => (s.cpu?.usage_core_nano_seconds ? Number(s.cpu.usage_core_nano_seconds.value) / 1e9 : undefined)],
    ['container_memory_usage_bytes', 'Current memory usage in bytes, including all memory regardless of when it was accessed', 'gauge', [], (s) => (s.memory?.usage_bytes ? Number(s.memory.usage_bytes.value) : undefined)],
    ['container_memory_working_set_bytes', 'Current working set in bytes.', 'gauge', [], (s) => (s.memory?.working_set_bytes ? Number(s.memory.working_set_bytes.value) : undefined)],
    ['container_memory_rss', 'Size of RSS in bytes.', 'gauge', [], (s) => (s.memory?.rss_bytes ? Number(s.memory.rss_bytes.value) : undefined)],
    ['container_fs_usage_bytes', 'Number of bytes that are consumed by the container on this filesystem.', 'gauge', ['device'], (s) => (s.writable_layer?.used_bytes ? Number(s.writable_layer.used_bytes.value) : undefined)],
  ];
  const lines: string[] = [];
  for (const [name, help, type, extra, pick] of families) {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const s of stats) {
      const v = pick(s);
      if (v === undefined) continue;
      const a = s.attributes ?? {};
      const labels = a.labels ?? {};
      const id = a.id ?? '';
      const values = [labels[CONTAINER_NAME_LABEL] ?? a.metadata?.name ?? '', id, images.get(id) ?? '', id, labels[POD_NAMESPACE_LABEL] ?? '', labels[POD_NAME_LABEL] ?? ''];
      const extraValues = extra.map((k) => (k === 'cpu' ? 'total' : (s.writable_layer?.fs_id?.mountpoint ?? '')));
      const ts = Math.floor(Number(s.cpu?.timestamp ?? s.memory?.timestamp ?? 0) / 1e6);
      lines.push(sampleLine(name, [...KEYS, ...extra], [...values, ...extraValues], v, ts > 0 ? ts : undefined));
    }
  }
  return `${lines.join('\n')}\n`;
}

function unimplemented(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 12;
}

export async function cadvisorMetrics(cri: CriClient): Promise<string> {
  try {
    const [{ descriptors }, { pod_metrics }] = await Promise.all([
      cri.runtime('ListMetricDescriptors', {}, { deadlineMs: 15_000 }),
      cri.runtime('ListPodSandboxMetrics', {}, { deadlineMs: 15_000 }),
    ]);
    return cadvisorTextFromCri(descriptors ?? [], pod_metrics ?? []);
  } catch (err) {
    if (!unimplemented(err)) throw err;
  }
  const [{ stats }, { containers }] = await Promise.all([
    cri.runtime('ListContainerStats', {}, { deadlineMs: 15_000 }),
    cri.runtime('ListContainers', {}, { deadlineMs: 15_000 }),
  ]);
  const images = new Map<string, string>((containers as any[]).map((c) => [c.id, c.image?.image || c.image_ref || '']));
  return cadvisorTextFromStats(stats ?? [], images);
}
