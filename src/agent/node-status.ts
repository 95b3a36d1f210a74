// The Node object: registration, status (capacity, addresses, nodeInfo, conditions) and the Lease heartbeat.
import { readFileSync, statfsSync } from 'node:fs';
import os from 'node:os';
import type { CoordinationV1Api, CoreV1Api, V1Lease, V1Node, V1NodeCondition } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { CriClient } from './cri-client.js';
import { apiTime } from './pod-status.js';
import { apiErrorCode } from './kube-client.js';
import { thresholdValue, type PressureCondition, type Threshold } from './eviction.js';

export const AGENT_KUBELET_VERSION = 'v1.36.0-nodelet';
export const LEASE_NAMESPACE = 'kube-node-lease';
const LEASE_DURATION_SECONDS = 40;

export function kubeArch(arch: string = process.arch): string {
  return ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[arch] ?? arch;
}

/** The first non-internal IPv4 address of the machine (the kubelet's default node IP). */
export function detectNodeIp(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

function readTrimmed(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function osImage(): string {
  const text = readTrimmed('/etc/os-release');
  const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(text);
  return m ? m[1] : 'Linux';
}

export interface NodeFacts {
  nodeName: string;
  nodeIp: string;
  maxPods: number;
  root: string;
  runtimeName: string;
  runtimeVersion: string;
  kubeletPort: number;
  /** --kube-reserved plus --system-reserved (cpu in cores, memory and ephemeral-storage in bytes). */
  reserved?: Record<string, number>;
  /** --eviction-hard: its memory.available and nodefs.available thresholds come off the allocatable too. */
  evictionHard?: Threshold[];
}

export function nodeLabels(nodeName: string): Record<string, string> {
  return {
    'kubernetes.io/hostname': nodeName,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': kubeArch(),
    'beta.kubernetes.io/os': 'linux',
    'beta.kubernetes.io/arch': kubeArch(),
  };
}

function ephemeralStorageBytes(dir: string): { capacity: number; available: number } {
  for (const candidate of [dir, '/']) {
    try {
      const s = statfsSync(candidate);
      return { capacity: s.blocks * s.bsize, available: s.bavail * s.bsize };
    } catch {
      // the root may not exist yet
    }
  }
  return { capacity: 0, available: 0 };
}

/** Capacity less the reserved resources and the hard eviction thresholds (the kubelet's node allocatable). Pure. */
export function allocatableOf(machine: { cpu: number; memory: number; storage: number }, facts: Pick<NodeFacts, 'reserved' | 'evictionHard' | 'maxPods'>): Record<string, string> {
  const r = facts.reserved ?? {};
  const hard = (signal: string, capacity: number) => {
    const t = facts.evictionHard?.find((x) => x.signal === signal);
    return t ? thresholdValue(t, capacity) : 0;
  };
  const cpuMilli = Math.max(0, Math.round(machine.cpu * 1000 - (r.cpu ?? 0) * 1000));
  const memory = Math.max(0, machine.memory - (r.memory ?? 0) - hard('memory.available', machine.memory));
  const storage = Math.max(0, machine.storage - (r['ephemeral-storage'] ?? 0) - hard('nodefs.available', machine.storage));
  return {
    cpu: cpuMilli % 1000 === 0 ? String(cpuMilli / 1000) : `${cpuMilli}m`,
    memory: `${Math.floor(memory / 1024)}Ki`,
    pods: String(facts.maxPods),
    'ephemeral-storage': String(Math.floor(storage)),
  };
}

/** The status fields that describe the machine; conditions come separately. */
export function machineStatus(facts: NodeFacts): Record<string, any> {
  const storage = ephemeralStorageBytes(facts.root);
  const capacity = {
    cpu: String(os.cpus().length),
    memory: `${Math.floor(os.totalmem() / 1024)}Ki`,
    pods: String(facts.maxPods),
    'ephemeral-storage': `${Math.floor(storage.capacity / 1024)}Ki`,
  };
  return {
    capacity,
    allocatable: allocatableOf({ cpu: os.cpus().length, memory: os.totalmem(), storage: storage.capacity }, facts),
    addresses: [
      { type: 'InternalIP', address: facts.nodeIp },
      { type: 'Hostname', address: facts.nodeName },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: facts.kubeletPort } },
    nodeInfo: {
      machineID: readTrimmed('/etc/machine-id'),
      systemUUID: readTrimmed('/sys/class/dmi/id/product_uuid'),
      bootID: readTrimmed('/proc/sys/kernel/random/boot_id'),
      kernelVersion: os.release(),
      osImage: osImage(),
      containerRuntimeVersion: `${facts.runtimeName}://${facts.runtimeVersion}`,
      kubeletVersion: AGENT_KUBELET_VERSION,
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: kubeArch(),
    },
  };
}

interface ConditionFact {
  type: string;
  ok: boolean;
  reason: string;
  message: string;
}

export async function conditionFacts(cri: CriClient, root: string, pressure?: ReadonlySet<PressureCondition>): Promise<ConditionFact[]> {
  let runtimeProblem = '';
  try {
    const { status } = await cri.runtime('Status', {}, { deadlineMs: 5000 });
    for (const c of status?.conditions ?? []) if (!c.status) runtimeProblem += `${c.type} is false: ${c.reason} ${c.message}; `;
  } catch (err) {
    runtimeProblem = `container runtime is down: ${errorMessage(err)}`;
  }
  const storage = ephemeralStorageBytes(root);
  let memoryLow = os.freemem() < 100 * 1024 * 1024;
  let diskLow = storage.capacity > 0 && storage.available / storage.capacity < 0.1;
  let pidsHigh = false;
  if (pressure) {
    // The eviction manager's view: the --eviction-hard thresholds it observed crossed.
    memoryLow = pressure.has('MemoryPressure');
    diskLow = pressure.has('DiskPressure');
    pidsHigh = pressure.has('PIDPressure');
  } else try {
    const max = Number(readTrimmed('/proc/sys/kernel/pid_max'));
    const used = Number(readTrimmed('/proc/loadavg').split(' ')[3]?.split('/')[1]);
    pidsHigh = max > 0 && used / max > 0.9;
  } catch {
    // not fatal
  }
  return [
    { type: 'MemoryPressure', ok: !memoryLow, reason: memoryLow ? 'KubeletHasInsufficientMemory' : 'KubeletHasSufficientMemory', message: memoryLow ? 'kubelet has insufficient memory available' : 'kubelet has sufficient memory available' },
    { type: 'DiskPressure', ok: !diskLow, reason: diskLow ? 'KubeletHasDiskPressure' : 'KubeletHasNoDiskPressure', message: diskLow ? 'kubelet has disk pressure' : 'kubelet has no disk pressure' },
    { type: 'PIDPressure', ok: !pidsHigh, reason: pidsHigh ? 'KubeletHasInsufficientPID' : 'KubeletHasSufficientPID', message: pidsHigh ? 'kubelet has insufficient PID available' : 'kubelet has sufficient PID available' },
    { type: 'Ready', ok: !runtimeProblem, reason: runtimeProblem ? 'KubeletNotReady' : 'KubeletReady', message: runtimeProblem || 'kubelet is posting ready status' },
  ];
}

/** Retry delay after `failures` failures in a row: doubling from `initialMs`, capped at `maxMs`. */
export function retryDelayMs(failures: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1));
}

/**
 * Registers the Node and keeps its status and Lease fresh. Like the kubelet, no API failure here is fatal:
 * registration is retried until it succeeds, a failed status or Lease write is logged and retried with back-off.
 */
export class NodeStatusReporter {
  private previousConditions: V1NodeCondition[] = [];
  private lastFingerprint = '';
  private lastPatchAt = 0;
  private nodeUid = '';
  /** The Lease as last written; updates start from it (no read per renewal); dropped after a failure. */
  private lease?: V1Lease;
  private timers = new Set<NodeJS.Timeout>();
  private wakers = new Set<() => void>();
  private stopped = false;
  private registered?: Promise<void>;

  constructor(
    private readonly core: CoreV1Api,
    private readonly coordination: CoordinationV1Api,
    private readonly cri: CriClient,
    private readonly facts: NodeFacts,
    private readonly opts: {
      leaseRenewSeconds: number;
      statusReportSeconds: number;
      log: Logger;
      volumesInUse?: () => string[];
      /** The pressure conditions the eviction manager sees now. */
      pressure?: () => ReadonlySet<PressureCondition>;
      /** node.status.images (the 50 largest). */
      images?: () => Array<{ names: string[]; sizeBytes: number }>;
    },
  ) {}

  /**
   * Registers the Node (retrying with back-off: 100 ms doubling to 7 s), writes its status and Lease once, then
   * keeps both fresh in the background. Resolves once registered (or stopped); never rejects.
   */
  start(): Promise<void> {
    this.registered ??= (async () => {
      for (let failures = 0; !this.stopped; ) {
        try {
          await this.register();
          break;
        } catch (err) {
          failures++;
          this.opts.log.warn({ err: errorMessage(err), failures }, 'node registration failed; retrying');
          await this.wait(retryDelayMs(failures, 100, 7000));
        }
      }
      if (this.stopped) return;
      await this.updateStatus(true).catch((err) => this.opts.log.warn({ err: errorMessage(err) }, 'node status update failed'));
      await this.renewLease().catch((err) => this.opts.log.warn({ err: errorMessage(err) }, 'node lease renewal failed'));
      this.loop('node lease renewal', this.opts.leaseRenewSeconds * 1000, () => this.renewLease());
      this.loop('node status update', Math.min(10, this.opts.statusReportSeconds) * 1000, () => this.updateStatus(false));
    })();
    return this.registered;
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const wake of this.wakers) wake();
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.timers.delete(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.timers.add(timer);
      this.wakers.add(done);
    });
  }

  /** Runs `fn` every `periodMs`; after a failure sooner, with back-off from 200 ms up to 7 s (never beyond the period). */
  private loop(what: string, periodMs: number, fn: () => Promise<void>): void {
    void (async () => {
      let failures = 0;
      while (!this.stopped) {
        await this.wait(failures === 0 ? periodMs : Math.min(periodMs, retryDelayMs(failures, 200, 7000)));
        if (this.stopped) return;
        try {
          await fn();
          if (failures > 0) this.opts.log.info({ failures }, `${what} succeeded again`);
          failures = 0;
        } catch (err) {
          failures++;
          this.opts.log.warn({ err: errorMessage(err), code: apiErrorCode(err), failures }, `${what} failed; retrying`);
        }
      }
    })();
  }

  /** Creates the Node, or adopts the one of this name. */
  async register(): Promise<void> {
    const name = this.facts.nodeName;
    const node: V1Node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: nodeLabels(name), annotations: { 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' } },
      spec: {},
    };
    try {
      const created = await this.core.createNode({ body: node });
      this.nodeUid = created.metadata?.uid ?? '';
      this.opts.log.info({ node: name }, 'node registered');
    } catch (err) {
      if (apiErrorCode(err) !== 409) throw err;
      const existing = await this.core.readNode({ name });
      this.nodeUid = existing.metadata?.uid ?? '';
      this.opts.log.info({ node: name }, 'node already registered');
    }
  }

  /** Patches the node status when it changed, or when the report period passed; re-registers a deleted Node. */
  async updateStatus(force: boolean): Promise<void> {
    const facts = await conditionFacts(this.cri, this.facts.root, this.opts.pressure?.());
    const now = apiTime(Date.now());
    const conditions: V1NodeCondition[] = facts.map((f) => {
      const status = f.ok === (f.type === 'Ready') ? 'True' : 'False';
      const before = this.previousConditions.find((c) => c.type === f.type);
      const since = before && before.status === status ? before.lastTransitionTime! : now;
      return { type: f.type, status, reason: f.reason, message: f.message, lastHeartbeatTime: now, lastTransitionTime: since };
    });
    // volumesInUse (volumes/sources.ts): the mounted volumes the attach/detach controller must not detach.
    const machine: Record<string, any> = { ...machineStatus(this.facts), volumesInUse: this.opts.volumesInUse?.() ?? [] };
    const images = this.opts.images?.();
    if (images?.length) machine.images = images;
    const fingerprint = JSON.stringify({ machine: { ...machine, nodeInfo: machine.nodeInfo }, c: conditions.map((c) => [c.type, c.status, c.reason]) });
    const due = Date.now() - this.lastPatchAt >= this.opts.statusReportSeconds * 1000;
    if (!force && !due && fingerprint === this.lastFingerprint) return;
    try {
      await this.core.patchNodeStatus(
        { name: this.facts.nodeName, body: { status: { ...machine, conditions } } },
        setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
      );
    } catch (err) {
      if (apiErrorCode(err) === 404) {
        this.opts.log.warn({ node: this.facts.nodeName }, 'the Node is gone; registering it again');
        await this.register();
        this.lease = undefined;
      }
      throw err;
    }
    this.previousConditions = conditions;
    this.lastFingerprint = fingerprint;
    this.lastPatchAt = Date.now();
  }

  async renewLease(): Promise<void> {
    const name = this.facts.nodeName;
    const spec = { holderIdentity: name, leaseDurationSeconds: LEASE_DURATION_SECONDS, renewTime: new Date() };
    let lease = this.lease;
    this.lease = undefined;
    if (!lease) {
      try {
        lease = await this.coordination.readNamespacedLease({ name, namespace: LEASE_NAMESPACE });
      } catch (err) {
        if (apiErrorCode(err) !== 404) throw err;
        this.lease = await this.coordination.createNamespacedLease({
          namespace: LEASE_NAMESPACE,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: {
              name,
              namespace: LEASE_NAMESPACE,
              ownerReferences: this.nodeUid ? [{ apiVersion: 'v1', kind: 'Node', name, uid: this.nodeUid }] : undefined,
            },
            spec,
          },
        });
        return;
      }
    }
    this.lease = await this.coordination.replaceNamespacedLease({ name, namespace: LEASE_NAMESPACE, body: { ...lease, spec: { ...lease.spec, ...spec } } });
  }
}
