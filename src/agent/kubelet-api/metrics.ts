// The agent's own Prometheus metrics under the kubelet's names: /metrics (running pods and containers, pod start
// duration, CRI operations, certificate TTL, process figures) and /metrics/probes (prober_probe_total).
// One registry per agent (prom-client), so two agents in one process never share counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { V1Pod } from '@kubernetes/client-node';
import type { CriClient } from '../cri-client.js';
import type { VolumeStats } from './volume-stats.js';

export type ProbeResult = 'successful' | 'failed' | 'unknown';
const PROBE_TYPES = { liveness: 'Liveness', readiness: 'Readiness', startup: 'Startup' } as const;

/** The kubelet's operation_type of a CRI method: ListPodSandbox → list_podsandbox, ContainerStatus → container_status. */
export function criOperationType(method: string): string {
  return method
    .replace(/PodSandbox/g, 'Podsandbox')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

// The kubelet's buckets for kubelet_pod_start_duration_seconds (metrics.go).
const POD_START_BUCKETS = [0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600];

export class AgentMetrics {
  readonly registry = new Registry();
  readonly probeRegistry = new Registry();
  /** /metrics/slis: the health checks' results. */
  readonly slisRegistry = new Registry();
  private readonly healthGauge: Gauge<'name' | 'type'>;
  private readonly healthTotal: Counter<'name' | 'status' | 'type'>;
  private readonly operations: Counter<'operation_type'>;
  private readonly operationErrors: Counter<'operation_type'>;
  private readonly operationSeconds: Histogram<'operation_type'>;
  private readonly podStart: Histogram<string>;
  private readonly probes: Counter<'probe_type' | 'result' | 'container' | 'pod' | 'namespace' | 'pod_uid'>;
  private readonly firstSeen = new Map<string, number>();
  private readonly started = new Set<string>();
  private clientCertExpiry?: number;
  /** The mounted claims' figures (kubelet_volume_stats_*), set by the agent once it has volumes. */
  volumeStats?: () => Promise<VolumeStats[]>;

  constructor(cri: CriClient, nodeName: string) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 'kubelet_node_name', help: "[ALPHA] The node's name. The count is always 1.", labelNames: ['node'], registers }).set({ node: nodeName }, 1);
    new Gauge({
      name: 'kubelet_running_pods',
      help: '[ALPHA] Number of pods that have a running pod sandbox',
      registers,
      async collect() {
        // A runtime that does not answer leaves the last figure (a scrape still succeeds, as the kubelet's does).
        const r = await cri.runtime('ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } }, { deadlineMs: 10_000 }).catch(() => undefined);
        if (r) this.set(r.items.length);
      },
    });
    new Gauge({
      name: 'kubelet_running_containers',
      help: '[ALPHA] Number of containers currently running',
      labelNames: ['container_state'],
      registers,
      async collect() {
        const r = await cri.runtime('ListContainers', {}, { deadlineMs: 10_000 }).catch(() => undefined);
        if (!r) return;
        const containers = r.containers;
        this.reset();
        const counts: Record<string, number> = { created: 0, running: 0, exited: 0, unknown: 0 };
        for (const c of containers as any[]) {
          const state = String(c.state ?? 'CONTAINER_UNKNOWN').replace(/^CONTAINER_/, '').toLowerCase();
          counts[state] = (counts[state] ?? 0) + 1;
        }
        for (const [state, n] of Object.entries(counts)) this.set({ container_state: state }, n);
      },
    });
    this.podStart = new Histogram({
      name: 'kubelet_pod_start_duration_seconds',
      help: '[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run',
      buckets: POD_START_BUCKETS,
      registers,
    });
    this.operations = new Counter({ name: 'kubelet_runtime_operations_total', help: '[ALPHA] Cumulative number of runtime operations by operation type.', labelNames: ['operation_type'], registers });
    this.operationErrors = new Counter({ name: 'kubelet_runtime_operations_errors_total', help: '[ALPHA] Cumulative number of runtime operation errors by operation type.', labelNames: ['operation_type'], registers });
    this.operationSeconds = new Histogram({
      name: 'kubelet_runtime_operations_duration_seconds',
      help: '[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.',
      labelNames: ['operation_type'],
      buckets: [0.005, 0.0125, 0.03125, 0.078125, 0.1953125, 0.48828125, 1.220703125, 3.0517578125, 7.62939453125, 19.073486328125, 47.6837158203125, 119.20928955078125, 298.0232238769531, 745.0580596923828],
      registers,
    });
    const self = this;
    new Gauge({
      name: 'kubelet_certificate_manager_client_ttl_seconds',
      help: '[ALPHA] Gauge of the TTL (time-to-live) of the Kubelet\'s client certificate. The value is in seconds until certificate expiry (negative if already expired).',
      registers,
      collect() {
        if (self.clientCertExpiry !== undefined) this.set((self.clientCertExpiry - Date.now()) / 1000);
      },
    });
    const volumeGauges: [string, string, (v: VolumeStats) => number][] = [
      ['kubelet_volume_stats_capacity_bytes', 'Capacity in bytes of the volume', (v) => v.capacityBytes],
      ['kubelet_volume_stats_available_bytes', 'Number of available bytes in the volume', (v) => v.availableBytes],
      ['kubelet_volume_stats_used_bytes', 'Number of used bytes in the volume', (v) => v.usedBytes],
      ['kubelet_volume_stats_inodes', 'Maximum number of inodes in the volume', (v) => v.inodes],
      ['kubelet_volume_stats_inodes_free', 'Number of free inodes in the volume', (v) => v.inodesFree],
      ['kubelet_volume_stats_inodes_used', 'Number of used inodes in the volume', (v) => v.inodesUsed],
    ];
    for (const [name, help, pick] of volumeGauges) {
      new Gauge({
        name,
        help: `[ALPHA] ${help}`,
        labelNames: ['namespace', 'persistentvolumeclaim'],
        registers,
        async collect() {
          this.reset();
          for (const v of (await self.volumeStats?.().catch(() => [])) ?? []) this.set({ namespace: v.pvcRef.namespace, persistentvolumeclaim: v.pvcRef.name }, pick(v));
        },
      });
    }
    this.healthGauge = new Gauge({ name: 'kubernetes_healthcheck', help: '[STABLE] This metric records the result of a single healthcheck.', labelNames: ['name', 'type'], registers: [this.slisRegistry] });
    this.healthTotal = new Counter({ name: 'kubernetes_healthchecks_total', help: '[STABLE] This metric records the results of all healthcheck.', labelNames: ['name', 'status', 'type'], registers: [this.slisRegistry] });
    this.probes = new Counter({
      name: 'prober_probe_total',
      help: '[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.',
      labelNames: ['probe_type', 'result', 'container', 'pod', 'namespace', 'pod_uid'],
      registers: [this.probeRegistry],
    });
  }

  /** One CRI call done (the CriClient's observer). */
  runtimeOperation(method: string, seconds: number, failed: boolean): void {
    const operation_type = criOperationType(method);
    this.operations.inc({ operation_type });
    this.operationSeconds.observe({ operation_type }, seconds);
    if (failed) this.operationErrors.inc({ operation_type });
  }

  /** A pod source handed the agent this pod; the first time starts its start-duration clock. */
  podSeen(uid: string, now = Date.now()): void {
    if (!this.firstSeen.has(uid) && !this.started.has(uid)) this.firstSeen.set(uid, now);
  }

  /** A status was written: the first Running one ends the pod's start duration. */
  podStatus(uid: string, phase: string | undefined, now = Date.now()): void {
    const seen = this.firstSeen.get(uid);
    if (seen === undefined || phase !== 'Running') return;
    this.firstSeen.delete(uid);
    this.started.add(uid);
    this.podStart.observe((now - seen) / 1000);
  }

  podForgotten(uid: string): void {
    this.firstSeen.delete(uid);
    this.started.delete(uid);
  }

  probe(pod: V1Pod, kind: keyof typeof PROBE_TYPES, container: string, result: ProbeResult): void {
    this.probes.inc({
      probe_type: PROBE_TYPES[kind],
      result,
      container,
      pod: pod.metadata?.name ?? '',
      namespace: pod.metadata?.namespace ?? '',
      pod_uid: pod.metadata?.uid ?? '',
    });
  }

  /** One /healthz check's result. */
  healthcheck(name: string, ok: boolean): void {
    this.healthGauge.set({ name, type: 'healthz' }, ok ? 1 : 0);
    this.healthTotal.inc({ name, status: ok ? 'success' : 'error', type: 'healthz' });
  }

  async slisText(): Promise<string> {
    return this.slisRegistry.metrics();
  }

  clientCertificateExpires(at: number): void {
    this.clientCertExpiry = at;
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  async probesText(): Promise<string> {
    return this.probeRegistry.metrics();
  }
}
