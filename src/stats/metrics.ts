// cAdvisor-named metrics for ListMetricDescriptors / ListPodSandboxMetrics: one table says each metric's
// name, help, type, extra labels and where its samples come from; both RPCs are built from it, so every
// descriptor's label keys match its samples' label values.
import type { ContainerRecord, SandboxRecord } from '../runtime/records.js';
import type { InterfaceStats } from '../network/netns.js';
import type { CgroupDetail, PressureTotals } from './cgroup.js';
import type { ProcessFigures } from './proc.js';
import type { FilesystemFigures } from './disk-usage.js';

type MetricKind = 'COUNTER' | 'GAUGE';

/** The labels the kubelet's cAdvisor puts on every container metric, in this order. */
export const CONTAINER_LABEL_KEYS = ['container', 'id', 'image', 'name', 'namespace', 'pod'] as const;

/** What one container (or the pod itself) is measured from. */
export interface MetricsInput {
  timestampNs: bigint;
  cgroup?: CgroupDetail;
  processes?: ProcessFigures;
  /** Pod level only: the interfaces of the pod's network namespace. */
  network?: InterfaceStats[];
  /** Container level only: the filesystem of its writable layer and the layer's usage. */
  rootfs?: { fs: FilesystemFigures; usageBytes?: number };
  /** major:minor → device name, for the block I/O labels. */
  blockDevices?: Map<string, string>;
  startTimeSeconds?: number;
}

type Sample = [extraLabels: string[], value: number];

interface MetricDef {
  name: string;
  help: string;
  type: MetricKind;
  extraLabels: string[];
  samples(i: MetricsInput): Sample[];
}

const one = (v: number | undefined): Sample[] => (v === undefined || !Number.isFinite(v) ? [] : [[[], v]]);
// The proto carries unsigned integers: whole seconds, as the names promise.
const seconds = (ns: number | undefined) => (ns === undefined ? undefined : Math.floor(ns / 1e9));
const cg = (i: MetricsInput) => i.cgroup;

function deviceName(i: MetricsInput, major: number, minor: number): string {
  return i.blockDevices?.get(`${major}:${minor}`) ?? `${major}:${minor}`;
}

function perDevice(field: 'readBytes' | 'writeBytes' | 'reads' | 'writes') {
  return (i: MetricsInput): Sample[] => (i.cgroup?.blockIo ?? []).map((d) => [[deviceName(i, d.major, d.minor)], d[field]]);
}

function network(field: keyof Omit<InterfaceStats, 'name'>) {
  return (i: MetricsInput): Sample[] => (i.network ?? []).map((n) => [[n.name], n[field]]);
}

function pressure(resource: 'cpu' | 'memory' | 'io', kind: 'someUs' | 'fullUs') {
  return (i: MetricsInput): Sample[] => {
    const p: PressureTotals | undefined = i.cgroup?.pressure[resource];
    return one(p?.[kind] === undefined ? undefined : Math.floor(p[kind]! / 1e6));
  };
}

function rootfs(pick: (fs: FilesystemFigures, usageBytes: number | undefined) => number | undefined) {
  return (i: MetricsInput): Sample[] => {
    if (!i.rootfs) return [];
    const v = pick(i.rootfs.fs, i.rootfs.usageBytes);
    return v === undefined ? [] : [[[i.rootfs.fs.device], v]];
  };
}

const METRICS: MetricDef[] = [
  { name: 'container_last_seen', help: 'Last time a container was seen by the exporter', type: 'GAUGE', extraLabels: [], samples: (i) => one(i.cgroup ? seconds(Number(i.timestampNs)) : undefined) },
  { name: 'container_start_time_seconds', help: 'Start time of the container since unix epoch in seconds.', type: 'GAUGE', extraLabels: [], samples: (i) => one(i.startTimeSeconds) },

  { name: 'container_cpu_usage_seconds_total', help: 'Cumulative cpu time consumed in seconds.', type: 'COUNTER', extraLabels: ['cpu'], samples: (i) => { const v = seconds(cg(i)?.cpu?.usageNs); return v === undefined ? [] : [[['total'], v]]; } },
  { name: 'container_cpu_user_seconds_total', help: 'Cumulative user cpu time consumed in seconds.', type: 'COUNTER', extraLabels: [], samples: (i) => one(seconds(cg(i)?.cpu?.userNs)) },
  { name: 'container_cpu_system_seconds_total', help: 'Cumulative system cpu time consumed in seconds.', type: 'COUNTER', extraLabels: [], samples: (i) => one(seconds(cg(i)?.cpu?.systemNs)) },
  { name: 'container_cpu_cfs_periods_total', help: 'Number of elapsed enforcement period intervals.', type: 'COUNTER', extraLabels: [], samples: (i) => one(cg(i)?.cpu?.periods) },
  { name: 'container_cpu_cfs_throttled_periods_total', help: 'Number of throttled period intervals.', type: 'COUNTER', extraLabels: [], samples: (i) => one(cg(i)?.cpu?.throttledPeriods) },
  { name: 'container_cpu_cfs_throttled_seconds_total', help: 'Total time duration the container has been throttled.', type: 'COUNTER', extraLabels: [], samples: (i) => one(seconds(cg(i)?.cpu?.throttledNs)) },

  { name: 'container_memory_usage_bytes', help: 'Current memory usage in bytes, including all memory regardless of when it was accessed', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.usageBytes) },
  { name: 'container_memory_working_set_bytes', help: 'Current working set in bytes.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.workingSetBytes) },
  { name: 'container_memory_rss', help: 'Size of RSS in bytes.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.rssBytes) },
  { name: 'container_memory_cache', help: 'Number of bytes of page cache memory.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.cacheBytes) },
  { name: 'container_memory_mapped_file', help: 'Size of memory mapped files in bytes.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.mappedFileBytes) },
  { name: 'container_memory_swap', help: 'Container swap usage in bytes.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.swapBytes) },
  { name: 'container_memory_kernel_usage', help: 'Size of kernel memory allocated in bytes.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.kernelBytes) },
  { name: 'container_memory_max_usage_bytes', help: 'Maximum memory usage recorded in bytes', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.memory?.maxUsageBytes) },
  { name: 'container_memory_failcnt', help: 'Number of memory usage hits limits', type: 'COUNTER', extraLabels: [], samples: (i) => one(cg(i)?.memory?.failcnt) },
  {
    name: 'container_memory_failures_total', help: 'Cumulative count of memory allocation failures.', type: 'COUNTER', extraLabels: ['failure_type', 'scope'],
    samples: (i) => {
      const f = cg(i)?.memory?.faults;
      if (!f) return [];
      return [[['pgfault', 'container'], f.container.minor], [['pgmajfault', 'container'], f.container.major], [['pgfault', 'hierarchy'], f.hierarchy.minor], [['pgmajfault', 'hierarchy'], f.hierarchy.major]];
    },
  },
  { name: 'container_oom_events_total', help: 'Count of out of memory events observed for the container', type: 'COUNTER', extraLabels: [], samples: (i) => one(cg(i)?.memory ? (cg(i)!.memory!.oomKills ?? 0) : undefined) },

  { name: 'container_spec_cpu_period', help: 'CPU period of the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.spec.cpuPeriodUs) },
  { name: 'container_spec_cpu_quota', help: 'CPU quota of the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.spec.cpuQuotaUs) },
  { name: 'container_spec_cpu_shares', help: 'CPU share of the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.spec.cpuShares) },
  { name: 'container_spec_memory_limit_bytes', help: 'Memory limit for the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.spec.memoryLimitBytes) },
  { name: 'container_spec_memory_reservation_limit_bytes', help: 'Memory reservation limit for the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.spec.memoryReservationBytes) },
  { name: 'container_spec_memory_swap_limit_bytes', help: 'Memory swap limit for the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.spec.memorySwapLimitBytes) },

  { name: 'container_processes', help: 'Number of processes running inside the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.procs.length) },
  { name: 'container_threads', help: 'Number of threads running inside the container', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.threads) },
  { name: 'container_threads_max', help: 'Maximum number of threads allowed inside the container, infinity if value is zero', type: 'GAUGE', extraLabels: [], samples: (i) => one(cg(i)?.threadsMax) },
  { name: 'container_file_descriptors', help: 'Number of open file descriptors for the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(i.processes?.fileDescriptors) },
  { name: 'container_sockets', help: 'Number of open sockets for the container.', type: 'GAUGE', extraLabels: [], samples: (i) => one(i.processes?.sockets) },
  { name: 'container_ulimits_soft', help: 'Soft ulimit values for the container root process. Unlimited if -1, except priority and nice', type: 'GAUGE', extraLabels: ['ulimit'], samples: (i) => (i.processes?.maxOpenFilesSoft === undefined ? [] : [[['max_open_files'], i.processes.maxOpenFilesSoft]]) },

  { name: 'container_fs_usage_bytes', help: 'Number of bytes that are consumed by the container on this filesystem.', type: 'GAUGE', extraLabels: ['device'], samples: rootfs((_fs, used) => used) },
  { name: 'container_fs_limit_bytes', help: 'Number of bytes that can be consumed by the container on this filesystem.', type: 'GAUGE', extraLabels: ['device'], samples: rootfs((fs) => fs.capacityBytes) },
  { name: 'container_fs_inodes_total', help: 'Number of Inodes', type: 'GAUGE', extraLabels: ['device'], samples: rootfs((fs) => fs.inodesTotal) },
  { name: 'container_fs_inodes_free', help: 'Number of available Inodes', type: 'GAUGE', extraLabels: ['device'], samples: rootfs((fs) => fs.inodesFree) },
  { name: 'container_fs_reads_bytes_total', help: 'Cumulative count of bytes read', type: 'COUNTER', extraLabels: ['device'], samples: perDevice('readBytes') },
  { name: 'container_fs_reads_total', help: 'Cumulative count of reads completed', type: 'COUNTER', extraLabels: ['device'], samples: perDevice('reads') },
  { name: 'container_fs_writes_bytes_total', help: 'Cumulative count of bytes written', type: 'COUNTER', extraLabels: ['device'], samples: perDevice('writeBytes') },
  { name: 'container_fs_writes_total', help: 'Cumulative count of writes completed', type: 'COUNTER', extraLabels: ['device'], samples: perDevice('writes') },
  {
    name: 'container_blkio_device_usage_total', help: 'Blkio Device bytes usage', type: 'COUNTER', extraLabels: ['device', 'major', 'minor', 'operation'],
    samples: (i) => (cg(i)?.blockIo ?? []).flatMap((d): Sample[] => {
      const labels = [deviceName(i, d.major, d.minor), String(d.major), String(d.minor)];
      return [[[...labels, 'Read'], d.readBytes], [[...labels, 'Write'], d.writeBytes]];
    }),
  },

  { name: 'container_hugetlb_usage_bytes', help: 'Current hugepage usage', type: 'GAUGE', extraLabels: ['pagesize'], samples: (i) => (cg(i)?.hugetlb ?? []).map((h) => [[h.pagesize], h.usageBytes]) },
  { name: 'container_hugetlb_max_usage_bytes', help: 'Maximum hugepage usages recorded', type: 'GAUGE', extraLabels: ['pagesize'], samples: (i) => (cg(i)?.hugetlb ?? []).flatMap((h): Sample[] => (h.maxUsageBytes === undefined ? [] : [[[h.pagesize], h.maxUsageBytes]])) },

  { name: 'container_pressure_cpu_waiting_seconds_total', help: 'Total time duration tasks in the container have waited due to CPU congestion.', type: 'COUNTER', extraLabels: [], samples: pressure('cpu', 'someUs') },
  { name: 'container_pressure_cpu_stalled_seconds_total', help: 'Total time duration no tasks in the container could make progress due to CPU congestion.', type: 'COUNTER', extraLabels: [], samples: pressure('cpu', 'fullUs') },
  { name: 'container_pressure_memory_waiting_seconds_total', help: 'Total time duration tasks in the container have waited due to memory congestion.', type: 'COUNTER', extraLabels: [], samples: pressure('memory', 'someUs') },
  { name: 'container_pressure_memory_stalled_seconds_total', help: 'Total time duration no tasks in the container could make progress due to memory congestion.', type: 'COUNTER', extraLabels: [], samples: pressure('memory', 'fullUs') },
  { name: 'container_pressure_io_waiting_seconds_total', help: 'Total time duration tasks in the container have waited due to IO congestion.', type: 'COUNTER', extraLabels: [], samples: pressure('io', 'someUs') },
  { name: 'container_pressure_io_stalled_seconds_total', help: 'Total time duration no tasks in the container could make progress due to IO congestion.', type: 'COUNTER', extraLabels: [], samples: pressure('io', 'fullUs') },

  { name: 'container_network_receive_bytes_total', help: 'Cumulative count of bytes received', type: 'COUNTER', extraLabels: ['interface'], samples: network('rxBytes') },
  { name: 'container_network_receive_packets_total', help: 'Cumulative count of packets received', type: 'COUNTER', extraLabels: ['interface'], samples: network('rxPackets') },
  { name: 'container_network_receive_packets_dropped_total', help: 'Cumulative count of packets dropped while receiving', type: 'COUNTER', extraLabels: ['interface'], samples: network('rxDropped') },
  { name: 'container_network_receive_errors_total', help: 'Cumulative count of errors encountered while receiving', type: 'COUNTER', extraLabels: ['interface'], samples: network('rxErrors') },
  { name: 'container_network_transmit_bytes_total', help: 'Cumulative count of bytes transmitted', type: 'COUNTER', extraLabels: ['interface'], samples: network('txBytes') },
  { name: 'container_network_transmit_packets_total', help: 'Cumulative count of packets transmitted', type: 'COUNTER', extraLabels: ['interface'], samples: network('txPackets') },
  { name: 'container_network_transmit_packets_dropped_total', help: 'Cumulative count of packets dropped while transmitting', type: 'COUNTER', extraLabels: ['interface'], samples: network('txDropped') },
  { name: 'container_network_transmit_errors_total', help: 'Cumulative count of errors encountered while transmitting', type: 'COUNTER', extraLabels: ['interface'], samples: network('txErrors') },
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
  return METRICS.map((m) => ({ name: m.name, help: m.help, label_keys: [...CONTAINER_LABEL_KEYS, ...m.extraLabels] }));
}

/** Every metric the input has figures for, under the given container labels. */
export function metricSamples(input: MetricsInput, labels: string[]): MetricMessage[] {
  const timestamp = input.timestampNs.toString();
  const out: MetricMessage[] = [];
  for (const m of METRICS) {
    for (const [extra, value] of m.samples(input)) {
      out.push({ name: m.name, timestamp, metric_type: m.type, label_values: [...labels, ...extra], value: { value: Math.max(0, Math.floor(value)) } });
    }
  }
  return out;
}

/** One pod's metrics: the pod (its cgroup and network) under container="", then each container under its name. */
export function podSandboxMetrics(
  sandbox: SandboxRecord,
  pod: MetricsInput | undefined,
  containers: Array<{ rec: ContainerRecord; input: MetricsInput | undefined }>,
): PodSandboxMetricsMessage {
  const podName = sandbox.config.metadata?.name ?? '';
  const namespace = sandbox.config.metadata?.namespace ?? '';
  return {
    pod_sandbox_id: sandbox.id,
    metrics: pod ? metricSamples(pod, ['', sandbox.id, '', sandbox.id, namespace, podName]) : [],
    container_metrics: containers.map(({ rec, input }) => ({
      container_id: rec.id,
      metrics: input ? metricSamples(input, [rec.config.metadata?.name ?? '', rec.id, rec.imageName, rec.id, namespace, podName]) : [],
    })),
  };
}
