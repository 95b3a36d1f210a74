// Stats RPCs: container and pod stats, their Stream forms, and the cAdvisor-style metrics. Every answer
// comes from the stats cache (StatsCollector), which reads what it has not sampled yet; nothing here forks.
import path from 'node:path';
import type { ServiceHandlers } from './server.js';
import type { RuntimeService } from '../runtime/runtime-service.js';
import type { ContainerRecord, SandboxRecord } from '../runtime/records.js';
import type { StatsCollector, CpuStats } from '../stats/collector.js';
import type { MemorySample } from '../stats/cgroup.js';
import { containerSelected, sandboxSelected, type ContainerStatsSelector, type SandboxStatsSelector } from '../stats/filters.js';
import { metricDescriptors, podSandboxMetrics } from '../stats/metrics.js';
import { invalidArgument, notFound } from '../common/errors.js';
import type { ContainerStats } from './generated/runtime/v1/ContainerStats.js';
import type { PodSandboxStats } from './generated/runtime/v1/PodSandboxStats.js';
import type { CpuUsage } from './generated/runtime/v1/CpuUsage.js';
import type { MemoryUsage } from './generated/runtime/v1/MemoryUsage.js';
import type { NetworkInterfaceUsage } from './generated/runtime/v1/NetworkInterfaceUsage.js';

/** Results per message of the Stream* RPCs. */
export const STREAM_PAGE_SIZE = 100;

const u64 = (n: number | undefined) => (n === undefined ? null : { value: n });

function cpuMessage(timestampNs: bigint, cpu: CpuStats | undefined): CpuUsage | null {
  if (!cpu) return null;
  return { timestamp: timestampNs.toString(), usage_core_nano_seconds: u64(cpu.usageNs), usage_nano_cores: u64(cpu.nanoCores) };
}

function memoryMessage(timestampNs: bigint, m: MemorySample | undefined): MemoryUsage | null {
  if (!m) return null;
  return {
    timestamp: timestampNs.toString(),
    working_set_bytes: u64(m.workingSetBytes),
    available_bytes: u64(m.limitBytes === undefined ? undefined : Math.max(0, m.limitBytes - m.workingSetBytes)),
    usage_bytes: u64(m.usageBytes),
    rss_bytes: u64(m.rssBytes),
    page_faults: u64(m.pageFaults),
    major_page_faults: u64(m.majorPageFaults),
  };
}

export function statsHandlers(runtime: RuntimeService, collector: StatsCollector): ServiceHandlers {
  const ctx = runtime.ctx;
  const layersMountpoint = path.join(ctx.config.root, 'containers');

  const containerStats = async (rec: ContainerRecord): Promise<ContainerStats> => {
    const [snap, layer] = await Promise.all([collector.containerNow(rec), collector.writableLayerNow(rec.id)]);
    return {
      attributes: { id: rec.id, metadata: rec.config.metadata, labels: rec.config.labels, annotations: rec.config.annotations },
      cpu: snap ? cpuMessage(snap.timestampNs, snap.cpu) : null,
      memory: snap ? memoryMessage(snap.timestampNs, snap.memory) : null,
      writable_layer: layer
        ? { timestamp: layer.timestampNs.toString(), fs_id: { mountpoint: layersMountpoint }, used_bytes: u64(layer.bytes), inodes_used: u64(layer.inodes) }
        : null,
    };
  };

  const sandboxStats = async (rec: SandboxRecord): Promise<PodSandboxStats> => {
    const snap = await collector.sandboxNow(rec);
    const containers = await Promise.all(ctx.containersOf(rec.id).filter((c) => c.phase === 'ready').map(containerStats));
    const ifaces = snap?.network?.interfaces ?? [];
    const ifaceMessage = (i: (typeof ifaces)[number]): NetworkInterfaceUsage => ({
      name: i.name,
      rx_bytes: u64(i.rxBytes),
      rx_errors: u64(i.rxErrors),
      tx_bytes: u64(i.txBytes),
      tx_errors: u64(i.txErrors),
    });
    const defaultIface = ifaces.find((i) => i.name === 'eth0') ?? ifaces[0];
    return {
      attributes: { id: rec.id, metadata: rec.config.metadata, labels: rec.config.labels, annotations: rec.config.annotations },
      linux: {
        cpu: snap ? cpuMessage(snap.timestampNs, snap.cpu) : null,
        memory: snap ? memoryMessage(snap.timestampNs, snap.memory) : null,
        network: snap?.network
          ? { timestamp: snap.network.timestampNs.toString(), default_interface: defaultIface ? ifaceMessage(defaultIface) : null, interfaces: ifaces.map(ifaceMessage) }
          : null,
        process: snap && snap.pids !== undefined ? { timestamp: snap.timestampNs.toString(), process_count: u64(snap.pids) } : null,
        containers,
      },
    };
  };

  const listContainers = (filter: ContainerStatsSelector | null | undefined) =>
    Promise.all(ctx.containers.list().filter((c) => containerSelected(c, filter)).map(containerStats));
  const listSandboxes = (filter: SandboxStatsSelector | null | undefined) =>
    Promise.all(ctx.sandboxes.list().filter((s) => sandboxSelected(s, filter)).map(sandboxStats));

  const pages = <T>(items: T[]): T[][] => {
    const out: T[][] = [];
    for (let i = 0; i < items.length; i += STREAM_PAGE_SIZE) out.push(items.slice(i, i + STREAM_PAGE_SIZE));
    return out;
  };

  const podMetrics = () =>
    Promise.all(
      ctx.sandboxes
        .list()
        .filter((s) => s.phase === 'ready' && s.state === 'SANDBOX_READY')
        .map(async (s) => {
          const recs = ctx.containersOf(s.id).filter((c) => c.phase === 'ready');
          const [pod, containers] = await Promise.all([
            collector.sandboxMetrics(s),
            Promise.all(recs.map(async (rec) => ({ rec, input: await collector.containerMetrics(rec) }))),
          ]);
          return podSandboxMetrics(s, pod, containers);
        }),
    );

  return {
    unary: {
      ContainerStats: async (req: { container_id: string }) => {
        if (!req.container_id) throw invalidArgument('container_id is required');
        const rec = ctx.containers.get(req.container_id);
        if (!rec || rec.phase !== 'ready') throw notFound(`container ${req.container_id} not found`);
        return { stats: await containerStats(rec) };
      },
      ListContainerStats: async (req: { filter?: ContainerStatsSelector | null }) => ({ stats: await listContainers(req.filter) }),
      PodSandboxStats: async (req: { pod_sandbox_id: string }) => {
        if (!req.pod_sandbox_id) throw invalidArgument('pod_sandbox_id is required');
        const rec = ctx.sandboxes.get(req.pod_sandbox_id);
        if (!rec || rec.phase !== 'ready') throw notFound(`pod sandbox ${req.pod_sandbox_id} not found`);
        return { stats: await sandboxStats(rec) };
      },
      ListPodSandboxStats: async (req: { filter?: SandboxStatsSelector | null }) => ({ stats: await listSandboxes(req.filter) }),
      ListMetricDescriptors: async () => ({ descriptors: metricDescriptors() }),
      ListPodSandboxMetrics: async () => ({ pod_metrics: await podMetrics() }),
    },
    stream: {
      StreamContainerStats: async (req: { filter?: ContainerStatsSelector | null }, write) => {
        for (const page of pages(await listContainers(req.filter))) write({ container_stats: page });
      },
      StreamPodSandboxStats: async (req: { filter?: SandboxStatsSelector | null }, write) => {
        for (const page of pages(await listSandboxes(req.filter))) write({ pod_sandbox_stats: page });
      },
      StreamPodSandboxMetrics: async (_req, write) => {
        for (const page of pages(await podMetrics())) write({ pod_sandbox_metrics: page });
      },
    },
  };
}
