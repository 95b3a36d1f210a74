// Liveness, readiness and startup probes of one pod: a timer per (container, probe), results kept for the status.
import type { V1Container, V1Probe } from '@kubernetes/client-node';
import { errorMessage } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { CriClient } from '../cri-client.js';
import { execAction, grpcAction, httpGetAction, tcpSocketAction, type ActionResult } from './actions.js';

export type ProbeKind = 'liveness' | 'readiness' | 'startup';

export interface RunningContainer {
  spec: V1Container;
  id: string;
  /** When the container started, in ms since the epoch. */
  startedAtMs: number;
}

export interface PodProbesDeps {
  cri: CriClient;
  log: Logger;
  /** The address probes connect to (the pod IP, or the host's for hostNetwork). */
  podIP(): string;
  /** A readiness or startup result changed: the status must be written again. */
  onResultChange(): void;
  /** A liveness or startup probe reached its failureThreshold: the container must be killed and restarted. */
  onFailure(kind: ProbeKind, container: V1Container, containerId: string, message: string): void;
  recordEvent?(type: 'Normal' | 'Warning', reason: string, message: string): void;
  /** Every probe result (prober_probe_total). */
  observeResult?(kind: ProbeKind, container: string, result: 'successful' | 'failed' | 'unknown'): void;
}

export interface ProbeState {
  ready: boolean;
  started: boolean;
}

const PROBE_NAMES: Record<ProbeKind, string> = { liveness: 'Liveness', readiness: 'Readiness', startup: 'Startup' };

export function runProbe(cri: CriClient, probe: V1Probe, container: V1Container, containerId: string, host: string): Promise<ActionResult> {
  const timeout = probe.timeoutSeconds ?? 1;
  if (probe.exec) return execAction(cri, containerId, probe.exec, timeout);
  if (probe.httpGet) return httpGetAction(probe.httpGet, host, container, timeout);
  if (probe.tcpSocket) return tcpSocketAction(probe.tcpSocket, host, container, timeout);
  if (probe.grpc) return grpcAction(probe.grpc, host, timeout);
  return Promise.resolve({ ok: false, output: 'probe has no handler' });
}

class ProbeWorker {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private successes = 0;
  private failures = 0;

  constructor(
    readonly kind: ProbeKind,
    private readonly probe: V1Probe,
    private readonly container: RunningContainer,
    private readonly owner: PodProbes,
  ) {
    const firstAt = container.startedAtMs + (probe.initialDelaySeconds ?? 0) * 1000;
    this.schedule(Math.max(0, firstAt - Date.now()));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const { kind, probe, container, owner } = this;
    const periodMs = Math.max(1, probe.periodSeconds ?? 10) * 1000;
    // Liveness and readiness wait for the startup probe to succeed.
    if (kind !== 'startup' && container.spec.startupProbe && !owner.stateOf(container.id).started) return this.schedule(periodMs);
    let result: ActionResult;
    try {
      result = await runProbe(owner.deps.cri, probe, container.spec, container.id, owner.deps.podIP());
    } catch (err) {
      result = { ok: false, output: errorMessage(err) };
    }
    if (this.stopped) return;
    owner.deps.observeResult?.(kind, container.spec.name, result.ok ? 'successful' : 'failed');
    if (result.ok) {
      this.failures = 0;
      this.successes++;
    } else {
      this.successes = 0;
      this.failures++;
      owner.deps.recordEvent?.('Warning', 'Unhealthy', `${PROBE_NAMES[kind]} probe failed: ${result.output.trim()}`);
      owner.deps.log.debug({ container: container.spec.name, probe: kind, output: result.output }, 'probe failed');
    }
    const successThreshold = kind === 'readiness' ? (probe.successThreshold ?? 1) : 1;
    const failureThreshold = probe.failureThreshold ?? 3;
    if (kind === 'readiness') {
      if (result.ok && this.successes >= successThreshold) owner.setState(container.id, { ready: true });
      else if (!result.ok && this.failures >= failureThreshold) owner.setState(container.id, { ready: false });
    } else if (kind === 'startup' && result.ok) {
      owner.setState(container.id, { started: true });
      return; // a startup probe is done once it succeeded
    } else if (!result.ok && this.failures >= failureThreshold) {
      this.stop();
      const message = `Container ${container.spec.name} failed ${kind} probe, will be restarted`;
      owner.deps.onFailure(kind, container.spec, container.id, message);
      return;
    }
    this.schedule(periodMs);
  }
}

export class PodProbes {
  private readonly workers = new Map<string, ProbeWorker>();
  private readonly states = new Map<string, ProbeState>();
  private stopped = false;

  constructor(readonly deps: PodProbesDeps) {}

  /** Starts probes for containers that newly run, stops those of containers that are gone or exited. */
  sync(running: RunningContainer[]): void {
    if (this.stopped) return;
    const live = new Set(running.map((c) => c.id));
    for (const [key, worker] of this.workers) {
      if (!live.has(key.split('/')[0])) {
        worker.stop();
        this.workers.delete(key);
      }
    }
    for (const id of this.states.keys()) if (!live.has(id)) this.states.delete(id);
    for (const c of running) {
      const probes: [ProbeKind, V1Probe | undefined][] = [
        ['startup', c.spec.startupProbe],
        ['readiness', c.spec.readinessProbe],
        ['liveness', c.spec.livenessProbe],
      ];
      for (const [kind, probe] of probes) {
        const key = `${c.id}/${kind}`;
        if (!probe || this.workers.has(key)) continue;
        this.workers.set(key, new ProbeWorker(kind, probe, c, this));
      }
    }
  }

  stateOf(containerId: string): ProbeState {
    return this.states.get(containerId) ?? { ready: false, started: false };
  }

  /** ready and started as the status shows them for a running container. */
  statusOf(spec: V1Container, containerId: string): ProbeState {
    const state = this.stateOf(containerId);
    const started = spec.startupProbe ? state.started : true;
    const ready = started && (spec.readinessProbe ? state.ready : true);
    return { ready, started };
  }

  setState(containerId: string, change: Partial<ProbeState>): void {
    if (this.stopped) return;
    const before = this.stateOf(containerId);
    const after = { ...before, ...change };
    if (before.ready === after.ready && before.started === after.started && this.states.has(containerId)) return;
    this.states.set(containerId, after);
    this.deps.onResultChange();
  }

  /** Stops every probe of one container (it is being killed). */
  forget(containerId: string): void {
    for (const [key, worker] of this.workers) {
      if (key.startsWith(`${containerId}/`)) {
        worker.stop();
        this.workers.delete(key);
      }
    }
    this.states.delete(containerId);
  }

  stopAll(): void {
    this.stopped = true;
    for (const w of this.workers.values()) w.stop();
    this.workers.clear();
  }
}
