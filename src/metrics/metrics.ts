// Prometheus metrics of nodelet-cri (prom-client, a registry of our own per daemon).
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from 'prom-client';
import { GrpcStatus, grpcStatusName } from '../common/grpc-status.js';
import type { CallObserver } from '../cri/server.js';

export interface RuntimeCounts {
  sandboxes(): Record<string, number>;
  containers(): Record<string, number>;
  monitors(): Promise<number>;
}

export class RuntimeMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'code'>;
  private readonly errors: Counter<'method' | 'code'>;
  private readonly latency: Histogram<'method'>;
  private readonly pulls: Counter<string>;
  private readonly pullBytes: Counter<string>;

  constructor(counts: RuntimeCounts) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'nodelet_cri_' });
    this.requests = new Counter({ name: 'nodelet_cri_requests_total', help: 'CRI RPCs by method and status code', labelNames: ['method', 'code'], registers });
    this.errors = new Counter({ name: 'nodelet_cri_request_errors_total', help: 'CRI RPCs that failed, by method and status code', labelNames: ['method', 'code'], registers });
    this.latency = new Histogram({
      name: 'nodelet_cri_request_duration_seconds',
      help: 'CRI RPC latency',
      labelNames: ['method'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.pulls = new Counter({ name: 'nodelet_image_pulls_total', help: 'Image pulls completed', registers });
    this.pullBytes = new Counter({ name: 'nodelet_image_pull_bytes_total', help: 'Bytes downloaded by image pulls', registers });
    new Gauge({
      name: 'nodelet_sandboxes',
      help: 'Pod sandboxes by state',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(counts.sandboxes())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'nodelet_containers',
      help: 'Containers by state',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(counts.containers())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'nodelet_monitor_processes',
      help: 'Live per-container monitor processes (the parent each backend keeps for a container) of this daemon',
      registers,
      async collect() {
        this.set(await counts.monitors());
      },
    });
  }

  onCall(method: string, code: number, seconds: number): void {
    const name = method.split('/').pop() ?? method;
    const codeName = grpcStatusName(code);
    this.requests.inc({ method: name, code: codeName });
    if (code !== GrpcStatus.OK) this.errors.inc({ method: name, code: codeName });
    this.latency.observe({ method: name }, seconds);
  }

  onPulled(outcome: { downloadedBytes: number }): void {
    this.pulls.inc();
    this.pullBytes.inc(outcome.downloadedBytes);
  }
}
