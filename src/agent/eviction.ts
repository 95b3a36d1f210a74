// Node pressure and eviction, as the kubelet's eviction manager with hard thresholds: the signals
// (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, pid.available) are observed,
// compared with --eviction-hard, turned into the MemoryPressure/DiskPressure/PIDPressure conditions, and while
// one is crossed the agent evicts one pod per round: BestEffort first, then Burstable, then Guaranteed,
// lower priority first. Critical pods (static, mirror, system priority) are never evicted.
import { readFileSync, statfsSync } from 'node:fs';
import os from 'node:os';
import type { V1Pod } from '@kubernetes/client-node';
import { invalidArgument } from '../common/errors.js';
import { parseQuantity } from './pod-spec.js';
import { qosClassOf } from './qos.js';

export type Signal = 'memory.available' | 'nodefs.available' | 'nodefs.inodesFree' | 'imagefs.available' | 'pid.available';
const SIGNALS: readonly Signal[] = ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'pid.available'];

/** A hard threshold: a quantity (bytes, inodes, pids), or a percentage of the capacity. */
export interface Threshold {
  signal: Signal;
  quantity?: number;
  percentage?: number;
}

/** The kubelet's default --eviction-hard. */
export const DEFAULT_EVICTION_HARD = 'memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%';

/** Pure: "memory.available<100Mi,nodefs.available<10%" → thresholds (a clear error names a bad entry). */
export function parseEvictionHard(spec: string): Threshold[] {
  const out: Threshold[] = [];
  for (const entry of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-zA-Z.]+)<(.+)$/.exec(entry);
    if (!m || !SIGNALS.includes(m[1] as Signal)) throw invalidArgument(`--eviction-hard: ${JSON.stringify(entry)} is not <signal><<quantity|percentage> with a signal of ${SIGNALS.join(', ')}`);
    const signal = m[1] as Signal;
    const value = m[2]!;
    if (value.endsWith('%')) {
      const percentage = Number(value.slice(0, -1));
      if (!(percentage >= 0 && percentage <= 100)) throw invalidArgument(`--eviction-hard: ${JSON.stringify(entry)}: the percentage must be within 0-100%`);
      out.push({ signal, percentage });
    } else {
      let quantity: number;
      try {
        quantity = parseQuantity(value);
      } catch {
        throw invalidArgument(`--eviction-hard: ${JSON.stringify(entry)}: ${JSON.stringify(value)} is not a quantity`);
      }
      out.push({ signal, quantity });
    }
  }
  return out;
}

export interface Observation {
  available: number;
  capacity: number;
}

export type Observations = Partial<Record<Signal, Observation>>;

/** The value under which the signal is crossed. */
export function thresholdValue(t: Threshold, capacity: number): number {
  return t.quantity ?? (capacity * (t.percentage ?? 0)) / 100;
}

/** Pure: the thresholds the observations cross. */
export function crossedThresholds(thresholds: readonly Threshold[], obs: Observations): Threshold[] {
  return thresholds.filter((t) => {
    const o = obs[t.signal];
    return o !== undefined && o.available < thresholdValue(t, o.capacity);
  });
}

export type PressureCondition = 'MemoryPressure' | 'DiskPressure' | 'PIDPressure';

export function conditionOf(signal: Signal): PressureCondition {
  if (signal === 'memory.available') return 'MemoryPressure';
  if (signal === 'pid.available') return 'PIDPressure';
  return 'DiskPressure';
}

/** The resource a signal is about, as the kubelet names it in the Evicted message. */
function resourceOf(signal: Signal): string {
  return { 'memory.available': 'memory', 'nodefs.available': 'ephemeral-storage', 'imagefs.available': 'ephemeral-storage', 'nodefs.inodesFree': 'inodes', 'pid.available': 'pids' }[signal];
}

const SYSTEM_CRITICAL_PRIORITY = 2_000_000_000;

/** Critical pods are never evicted: static and mirror pods, and those of system priority. */
export function isCriticalPod(pod: V1Pod, isStatic: boolean): boolean {
  if (isStatic || pod.metadata?.annotations?.['kubernetes.io/config.mirror']) return true;
  return (pod.spec?.priority ?? 0) >= SYSTEM_CRITICAL_PRIORITY;
}

const QOS_RANK = { BestEffort: 0, Burstable: 1, Guaranteed: 2 } as const;

/** Pure: the order the pods are evicted in: BestEffort, Burstable, Guaranteed; lower priority first; then the newest first. */
export function evictionOrder(pods: readonly V1Pod[]): V1Pod[] {
  const started = (p: V1Pod) => Date.parse(String(p.status?.startTime ?? '')) || 0;
  return [...pods].sort(
    (a, b) =>
      QOS_RANK[qosClassOf(a)] - QOS_RANK[qosClassOf(b)] ||
      (a.spec?.priority ?? 0) - (b.spec?.priority ?? 0) ||
      started(b) - started(a),
  );
}

function formatQuantity(n: number): string {
  return n >= 1024 * 1024 ? `${Math.round(n / 1024)}Ki` : String(Math.round(n));
}

/** The Evicted status message, the kubelet's wording. */
export function evictionMessage(t: Threshold, o: Observation): string {
  return `The node was low on resource: ${resourceOf(t.signal)}. Threshold quantity: ${t.percentage !== undefined ? `${t.percentage}%` : formatQuantity(t.quantity!)}, available: ${formatQuantity(o.available)}. `;
}

function readNumber(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8').trim());
  } catch {
    return NaN;
  }
}

/** The signals of this machine now: memory (MemAvailable), the agent root's and the image store's filesystems, pids. */
export function observeSignals(nodefsDir: string, imagefs?: { available: number; capacity: number }): Observations {
  const obs: Observations = {};
  try {
    const meminfo = readFileSync('/proc/meminfo', 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? NaN) * 1024;
    obs['memory.available'] = { available: kb('MemAvailable'), capacity: kb('MemTotal') };
  } catch {
    obs['memory.available'] = { available: os.freemem(), capacity: os.totalmem() };
  }
  try {
    const s = statfsSync(nodefsDir);
    obs['nodefs.available'] = { available: s.bavail * s.bsize, capacity: s.blocks * s.bsize };
    if (s.files > 0) obs['nodefs.inodesFree'] = { available: s.ffree, capacity: s.files };
  } catch {
    // no root yet: no disk signal
  }
  obs['imagefs.available'] = imagefs ?? obs['nodefs.available'];
  const pidMax = readNumber('/proc/sys/kernel/pid_max');
  const running = Number(/\/(\d+)/.exec(readFileSyncSafe('/proc/loadavg'))?.[1] ?? NaN);
  if (pidMax > 0 && running >= 0) obs['pid.available'] = { available: pidMax - running, capacity: pidMax };
  return obs;
}

function readFileSyncSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
