// cAdvisor-named metrics for ListMetricDescriptors / ListPodSandboxMetrics, built from the stats cache.
import type { ContainerRecord, SandboxRecord } from '../runtime/records.js';
import type { InterfaceStats } from '../network/netns.js';
import type { ContainerSnapshot, SandboxSnapshot } from './collector.js';

type MetricKind = 'COUNTER' | 'GAUGE';

/** The cAdvisor labels, in this order, on every metric; network metrics add "interface". */
export const CONTAINER_LABEL_KEYS = ['container', 'id', 'image', 'name', 'namespace', 'pod'] as const;
export const NETWORK_LABEL_KEYS = [...CONTAINER_LABEL_KEYS, 'interface'] as const;

interface Usage {
  cpu?: { usageNs: number };
  memory?: { usageBytes: number; workingSetBytes: number; rssBytes: number; pageFaults: number; majorPageFaults: number; limitBytes?: number };
  pids?: number;
}

interface UsageMetric {
  name: string;
  help: string;
  type: MetricKind;
  value(u: Usage): number | undefined;
}

interface NetworkMetric {
  name: string;
  help: string;
  type: MetricKind;
  value(i: InterfaceStats): number;
}

const USAGE_METRICS: UsageMetric[] = [
  // The proto carries integers: whole seconds, as the name promises.
  { name: 'container_cpu_usage_seconds_total', help: 'Cumulative cpu time consumed in seconds.', type: 'COUNTER', value: (u) => (u.cpu ? Math.floor(u.cpu.usageNs / 1e9) : undefined) },
  { name: 'container_memory_usage_bytes', help: 'Current memory usage in bytes, including all memory regardless of when it was accessed.', type: 'GAUGE', value: (u) => u.memory?.usageBytes },
  { name: 'container_memory_working_set_bytes', help: 'Current working set in bytes.', type: 'GAUGE', value: (u) => u.memory?.workingSetBytes },
  { name: 'container_memory_rss', help: 'Size of RSS in bytes.', type: 'GAUGE', value: (u) => u.memory?.rssBytes },
  { name: 'container_memory_failures_total', help: 'Cumulative count of page faults (minor and major).', type: 'COUNTER', value: (u) => u.memory?.pageFaults },
  { name: 'container_memory_major_page_faults_total', help: 'Cumulative count of major page faults.', type: 'COUNTER', value: (u) => u.memory?.majorPageFaults },
  { name: 'container_spec_memory_limit_bytes', help: 'Memory limit for the container.', type: 'GAUGE', value: (u) => u.memory?.limitBytes ?? (u.memory ? 0 : undefined) },
  { name: 'container_processes', help: 'Number of processes running inside the container.', type: 'GAUGE', value: (u) => u.pids },
];

const NETWORK_METRICS: NetworkMetric[] = [
  { name: 'container_network_receive_bytes_total', help: 'Cumulative count of bytes received.', type: 'COUNTER', value: (i) => i.rxBytes },
  { name: 'container_network_transmit_bytes_total', help: 'Cumulative count of bytes transmitted.', type: 'COUNTER', value: (i) => i.txBytes },
  { name: 'container_network_receive_packets_total', help: 'Cumulative count of packets received.', type: 'COUNTER', value: (i) => i.rxPackets },
  { name: 'container_network_transmit_packets_total', help: 'Cumulative count of packets transmitted.', type: 'COUNTER', value: (i) => i.txPackets },
  { name: 'container_network_receive_errors_total', help: 'Cumulative count of errors encountered while receiving.', type: 'COUNTER', value: (i) => i.rxErrors },
  { name: 'container_network_transmit_errors_total', help: 'Cumulative count of errors encountered while transmitting.', type: 'COUNTER', value: (i) => i.txErrors },
  { name: 'container_network_receive_packets_dropped_total', help: 'Cumulative count of packets dropped while receiving.', type: 'COUNTER', value: (i) => i.rxDropped },
  { name: 'container_network_transmit_packets_dropped_total', help: 'Cumulative count of packets dropped while transmitting.', type: 'COUNTER', value: (i) => i.txDropped },
];

export interface MetricDescriptorMessage {
  name: string;
  help: string;
  label_keys: string[];
}

export interface MetricMessage {
  name: string;
  timestamp: string;
  metric_type: MetricKind;
  label_values: string[];
  value: { value: number };
}

export interface PodSandboxMetricsMessage {
  pod_sandbox_id: string;
  metrics: MetricMessage[];
  container_metrics: Array<{ container_id: string; metrics: MetricMessage[] }>;
}

export function metricDescriptors(): MetricDescriptorMessage[] {
  return [
    ...USAGE_METRICS.map((m) => ({ name: m.name, help: m.help, label_keys: [...CONTAINER_LABEL_KEYS] })),
    ...NETWORK_METRICS.map((m) => ({ name: m.name, help: m.help, label_keys: [...NETWORK_LABEL_KEYS] })),
  ];
}

function usageMetrics(usage: Usage, labels: string[], timestamp: string): MetricMessage[] {
  const out: MetricMessage[] = [];
  for (const m of USAGE_METRICS) {
    const v = m.value(usage);
    if (v !== undefined) out.push({ name: m.name, timestamp, metric_type: m.type, label_values: labels, value: { value: v } });
  }
  return out;
}

/** One pod's metrics: the pod cgroup and its network under container="" (like cAdvisor's pod entries), then each container. */
export function podSandboxMetrics(
  sandbox: SandboxRecord,
  snapshot: SandboxSnapshot | undefined,
  containers: Array<{ rec: ContainerRecord; snapshot: ContainerSnapshot | undefined }>,
): PodSandboxMetricsMessage {
  const pod = sandbox.config.metadata?.name ?? '';
  const namespace = sandbox.config.metadata?.namespace ?? '';
  const metrics: MetricMessage[] = [];
  if (snapshot) {
    const ts = snapshot.timestampNs.toString();
    const podLabels = ['', sandbox.id, '', sandbox.id, namespace, pod];
    metrics.push(...usageMetrics(snapshot, podLabels, ts));
    if (snapshot.network) {
      const nts = snapshot.network.timestampNs.toString();
      for (const iface of snapshot.network.interfaces) {
        for (const m of NETWORK_METRICS) {
          metrics.push({ name: m.name, timestamp: nts, metric_type: m.type, label_values: [...podLabels, iface.name], value: { value: m.value(iface) } });
        }
      }
    }
  }
  const container_metrics = containers.map(({ rec, snapshot: snap }) => ({
    container_id: rec.id,
    metrics: snap ? usageMetrics(snap, [rec.config.metadata?.name ?? '', rec.id, rec.imageName, rec.id, namespace, pod], snap.timestampNs.toString()) : [],
  }));
  return { pod_sandbox_id: sandbox.id, metrics, container_metrics };
}
