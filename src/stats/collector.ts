// The stats cache: a background timer samples every running container and sandbox from cgroup files and
// /proc/<infra pid>/net/dev (reads only, no child process); the RPCs answer from the last samples, and
// read a container or sandbox the timer has not reached yet on demand (one shared read per id). The metrics
// RPCs' fuller per-cgroup figures are read on demand too and reused for one period.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { ContainerRecord, SandboxRecord } from '../runtime/records.js';
import { cgroupsPathFor } from '../oci/container-spec.js';
import { parseProcNetDev, type InterfaceStats } from '../network/netns.js';
import { logger } from '../common/log.js';
import { errorMessage } from '../common/errors.js';
import { cgroupDirFor, expandSlice, type CgroupDetail, type CgroupDetailReader, type CgroupSample, type MemorySample } from './cgroup.js';
import { blockDeviceName, diskUsage, filesystemOf, mountSourceOfDevice } from './disk-usage.js';
import { readProcessFigures } from './proc.js';
import type { MetricsInput } from './metrics.js';

/** What the collector needs from the runtime: its records and where a container's writable layer lives. */
export interface StatsSource {
  containers(): ContainerRecord[];
  sandboxes(): SandboxRecord[];
  upperDirOf(containerId: string): string;
  /**
   * The cgroup directory (relative to the hierarchy root) of a container or sandbox, as its backend
   * places it; absent: where the spec builders' linux.cgroupsPath puts it (cgroupDirOf).
   */
  cgroupOf?(rec: { id: string; runtimeHandler: string }, cgroupParent: string | undefined): string;
}

export interface Clock {
  /** Wall-clock time in ns since the epoch (the CRI timestamps). */
  wallNs(): bigint;
  /** Monotonic time in ns (the windows usage_nano_cores is computed over). */
  monoNs(): bigint;
}

const systemClock: Clock = {
  wallNs: () => BigInt(Date.now()) * 1_000_000n,
  monoNs: () => process.hrtime.bigint(),
};

export interface CpuStats {
  usageNs: number;
  /** Average use over the window between the last two samples; undefined after the first sample. */
  nanoCores?: number;
}

export interface WritableLayerStats {
  timestampNs: bigint;
  bytes: number;
  inodes: number;
}

export interface ContainerSnapshot {
  id: string;
  sandboxId: string;
  timestampNs: bigint;
  cpu?: CpuStats;
  memory?: MemorySample;
  pids?: number;
}

export interface SandboxSnapshot {
  id: string;
  timestampNs: bigint;
  cpu?: CpuStats;
  memory?: MemorySample;
  pids?: number;
  /** Interfaces of the pod's network namespace except lo; undefined for host-network pods. */
  network?: { timestampNs: bigint; interfaces: InterfaceStats[] };
}

export interface StatsCollectorOptions {
  source: StatsSource;
  reader: CgroupDetailReader;
  /** How often cgroups and network counters are sampled. */
  periodMs: number;
  /** How often writable layers are walked (slower: it touches every file of the upper dirs). */
  writableLayerPeriodMs: number;
  procRoot?: string;
  sysRoot?: string;
  clock?: Clock;
}

interface CpuPoint {
  monoNs: bigint;
  usageNs: number;
}

/** ns of CPU per ns of wall time, times 1e9: 1e9 is one core busy for the whole window. */
export function nanoCoresBetween(prev: CpuPoint, cur: CpuPoint): number | undefined {
  const window = Number(cur.monoNs - prev.monoNs);
  if (window <= 0) return undefined;
  const used = cur.usageNs - prev.usageNs;
  if (used < 0) return undefined; // counter reset: the cgroup was recreated
  return Math.round((used / window) * 1e9);
}

/** The cgroup directory (relative to the hierarchy root) the spec's linux.cgroupsPath names for a container or sandbox. */
export function cgroupDirOf(parent: string | undefined, id: string): string {
  return cgroupDirFor(cgroupsPathFor(parent, id));
}

/** The pod-level cgroup when the sandbox names a parent (the kubelet's per-pod cgroup). */
export function podCgroupDir(parent: string | undefined): string | undefined {
  const p = (parent ?? '').trim();
  if (p === '') return undefined;
  if (p.endsWith('.slice')) return expandSlice(path.posix.basename(p));
  return path.posix.normalize(p.startsWith('/') ? p : `/${p}`);
}

export class StatsCollector {
  private readonly containerSnapshots = new Map<string, ContainerSnapshot>();
  private readonly sandboxSnapshots = new Map<string, SandboxSnapshot>();
  private readonly writableLayers = new Map<string, WritableLayerStats>();
  /** Per c/<id> or s/<id>: the point the next rate is measured from, and the last rate. */
  private readonly lastCpu = new Map<string, { point: CpuPoint; nanoCores?: number }>();
  /** Reads in flight by key (c/, s/, w/, m/c/, m/s/ + id): concurrent callers share one. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** Metrics inputs by c/<id> or s/<id>, reused for one period (scrapes come in bursts). */
  private readonly metricInputs = new Map<string, { monoNs: bigint; input: MetricsInput | undefined }>();
  /** Block device names by major:minor, mount sources by mount/major:minor: both fixed while the node runs. */
  private readonly deviceNames = new Map<string, string>();
  private readonly clock: Clock;
  private readonly procRoot: string;
  private sampleTimer?: NodeJS.Timeout;
  private layerTimer?: NodeJS.Timeout;
  private sampling?: Promise<void>;
  private walking?: Promise<void>;
  private started = false;
  private stopped = false;
  private readonly log = logger({ part: 'stats' });

  constructor(private readonly opts: StatsCollectorOptions) {
    this.clock = opts.clock ?? systemClock;
    this.procRoot = opts.procRoot ?? '/proc';
  }

  private cgroupOf(rec: { id: string; runtimeHandler: string }, parent: string | undefined): string {
    return this.opts.source.cgroupOf ? this.opts.source.cgroupOf(rec, parent) : cgroupDirOf(parent, rec.id);
  }

  /** Takes the first samples now, then keeps refreshing in the background (timers do not hold the process). */
  start(): void {
    if (this.started) return;
    this.started = true;
    const sampleLoop = () => {
      void this.sample().finally(() => {
        if (this.stopped) return;
        this.sampleTimer = setTimeout(sampleLoop, this.opts.periodMs);
        this.sampleTimer.unref();
      });
    };
    const layerLoop = () => {
      void this.walkWritableLayers().finally(() => {
        if (this.stopped) return;
        this.layerTimer = setTimeout(layerLoop, this.opts.writableLayerPeriodMs);
        this.layerTimer.unref();
      });
    };
    sampleLoop();
    layerLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.sampleTimer);
    clearTimeout(this.layerTimer);
    await Promise.allSettled([this.sampling, this.walking]);
  }

  container(id: string): ContainerSnapshot | undefined {
    return this.containerSnapshots.get(id);
  }

  sandbox(id: string): SandboxSnapshot | undefined {
    return this.sandboxSnapshots.get(id);
  }

  writableLayer(id: string): WritableLayerStats | undefined {
    return this.writableLayers.get(id);
  }

  /** The container's last sample; when the timer has not sampled it yet (just started), one read of its cgroup now. */
  async containerNow(rec: ContainerRecord): Promise<ContainerSnapshot | undefined> {
    const cached = this.containerSnapshots.get(rec.id);
    if (cached || rec.state !== 'CONTAINER_RUNNING') return cached;
    return this.shared(`c/${rec.id}`, () => this.sampleContainer(rec, this.sandboxRecord(rec.sandboxId)?.config.linux?.cgroup_parent));
  }

  /**
   * The sandbox's last sample, or one taken now (after its running containers, which a pod without its own
   * cgroup sums) when there is none or a member has a newer sample: a pod never reports less than a container.
   */
  async sandboxNow(rec: SandboxRecord): Promise<SandboxSnapshot | undefined> {
    const cached = this.sandboxSnapshots.get(rec.id);
    if (rec.state !== 'SANDBOX_READY' || (cached && !this.hasNewerMember(rec.id, cached.timestampNs))) return cached;
    return this.shared(`s/${rec.id}`, async () => {
      const containers = this.opts.source.containers().filter((c) => c.sandboxId === rec.id);
      await Promise.all(containers.map((c) => this.containerNow(c)));
      const snapshot = await this.sampleSandbox(rec, containers);
      this.sandboxSnapshots.set(rec.id, snapshot);
      return snapshot;
    });
  }

  /** The container's writable layer usage, walked now when no pass has reached it yet. */
  async writableLayerNow(id: string): Promise<WritableLayerStats | undefined> {
    return this.writableLayers.get(id) ?? this.walkLayer(id);
  }

  /** What the metrics of a running container are built from: its cgroup, its processes, its writable layer. */
  containerMetrics(rec: ContainerRecord): Promise<MetricsInput | undefined> {
    if (rec.state !== 'CONTAINER_RUNNING') return Promise.resolve(undefined);
    return this.cachedMetrics(`c/${rec.id}`, async () => {
      const parent = this.sandboxRecord(rec.sandboxId)?.config.linux?.cgroup_parent;
      const detail = await this.readDetail(this.cgroupOf(rec, parent));
      if (!detail) return undefined;
      const upper = this.opts.source.upperDirOf(rec.id);
      const [processes, layer, fs, blockDevices] = await Promise.all([
        readProcessFigures(detail.procs, { rootPid: rec.pid, procRoot: this.procRoot }),
        this.writableLayerNow(rec.id),
        filesystemOf(upper, (majMin) => this.mountSource(majMin)).catch(() => undefined),
        this.blockDevicesOf(detail),
      ]);
      return {
        timestampNs: this.clock.wallNs(),
        cgroup: detail,
        processes,
        rootfs: fs ? { fs, usageBytes: layer?.bytes } : undefined,
        blockDevices,
        startTimeSeconds: rec.startedAt ? Number(BigInt(rec.startedAt) / 1_000_000_000n) : undefined,
      };
    });
  }

  /** What a ready pod's own metrics are built from: its pod cgroup (else the infra container's) and its network. */
  sandboxMetrics(rec: SandboxRecord): Promise<MetricsInput | undefined> {
    if (rec.state !== 'SANDBOX_READY') return Promise.resolve(undefined);
    return this.cachedMetrics(`s/${rec.id}`, async () => {
      const parent = rec.config.linux?.cgroup_parent;
      const podDir = podCgroupDir(parent);
      const detail = (podDir ? await this.readDetail(podDir) : undefined) ?? (await this.readDetail(this.cgroupOf(rec, parent)));
      const [snapshot, processes, blockDevices] = await Promise.all([
        this.sandboxNow(rec),
        detail ? readProcessFigures(detail.procs, { rootPid: rec.infraPid, procRoot: this.procRoot }) : undefined,
        detail ? this.blockDevicesOf(detail) : undefined,
      ]);
      return {
        timestampNs: this.clock.wallNs(),
        cgroup: detail,
        processes,
        network: snapshot?.network?.interfaces,
        blockDevices,
        startTimeSeconds: Number(BigInt(rec.createdAt) / 1_000_000_000n),
      };
    });
  }

  private cachedMetrics(key: string, read: () => Promise<MetricsInput | undefined>): Promise<MetricsInput | undefined> {
    const hit = this.metricInputs.get(key);
    if (hit && this.clock.monoNs() - hit.monoNs < BigInt(this.opts.periodMs) * 1_000_000n) return Promise.resolve(hit.input);
    return this.shared(`m/${key}`, async () => {
      const input = await read();
      this.metricInputs.set(key, { monoNs: this.clock.monoNs(), input });
      return input;
    });
  }

  private async readDetail(dir: string): Promise<CgroupDetail | undefined> {
    try {
      return await this.opts.reader.readDetail(dir);
    } catch (err) {
      this.log.debug({ cgroup: dir, err: errorMessage(err) }, 'cgroup read failed');
      return undefined;
    }
  }

  /** The mount source naming a filesystem's device, looked up once per device. */
  private async mountSource(majMin: string): Promise<string | undefined> {
    const key = `mount/${majMin}`;
    if (!this.deviceNames.has(key)) this.deviceNames.set(key, (await mountSourceOfDevice(majMin)) ?? majMin);
    return this.deviceNames.get(key);
  }

  private async blockDevicesOf(detail: CgroupDetail): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const d of detail.blockIo) {
      const key = `${d.major}:${d.minor}`;
      let name = this.deviceNames.get(key);
      if (name === undefined) this.deviceNames.set(key, (name = await blockDeviceName(d.major, d.minor, this.opts.sysRoot)));
      out.set(key, name);
    }
    return out;
  }

  /** Runs read once for every concurrent caller asking under the same key. */
  private shared<T>(key: string, read: () => Promise<T>): Promise<T> {
    const pending = this.inFlight.get(key) as Promise<T> | undefined;
    if (pending) return pending;
    const p = read().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private hasNewerMember(sandboxId: string, timestampNs: bigint): boolean {
    for (const c of this.containerSnapshots.values()) if (c.sandboxId === sandboxId && c.timestampNs > timestampNs) return true;
    return false;
  }

  private sandboxRecord(id: string): SandboxRecord | undefined {
    return this.opts.source.sandboxes().find((s) => s.id === id);
  }

  /** Reads one running container's cgroup and stores the snapshot; undefined when its cgroup is gone. */
  private async sampleContainer(c: ContainerRecord, parent: string | undefined): Promise<ContainerSnapshot | undefined> {
    const sample = await this.readCgroup(this.cgroupOf(c, parent));
    if (!sample) return undefined;
    const snapshot: ContainerSnapshot = {
      id: c.id,
      sandboxId: c.sandboxId,
      timestampNs: this.clock.wallNs(),
      cpu: this.cpuOf(`c/${c.id}`, sample),
      memory: sample.memory,
      pids: sample.pids,
    };
    this.containerSnapshots.set(c.id, snapshot);
    return snapshot;
  }

  private walkLayer(id: string): Promise<WritableLayerStats | undefined> {
    return this.shared(`w/${id}`, async () => {
      const usage = await diskUsage(this.opts.source.upperDirOf(id)).catch(() => undefined);
      if (!usage) return undefined;
      const layer = { timestampNs: this.clock.wallNs(), ...usage };
      this.writableLayers.set(id, layer);
      return layer;
    });
  }

  /** One sampling pass over every running container and ready sandbox; concurrent callers share it. */
  sample(): Promise<void> {
    this.sampling ??= this.samplePass()
      .catch((err) => this.log.warn({ err: errorMessage(err) }, 'stats sampling failed'))
      .finally(() => {
        this.sampling = undefined;
      });
    return this.sampling;
  }

  /** One pass over the writable layers of all containers. */
  walkWritableLayers(): Promise<void> {
    this.walking ??= this.walkPass()
      .catch((err) => this.log.warn({ err: errorMessage(err) }, 'writable layer usage failed'))
      .finally(() => {
        this.walking = undefined;
      });
    return this.walking;
  }

  private async samplePass(): Promise<void> {
    const containers = this.opts.source.containers();
    const sandboxes = new Map(this.opts.source.sandboxes().map((s) => [s.id, s]));
    const live = new Set<string>();
    await Promise.all(
      containers
        .filter((c) => c.state === 'CONTAINER_RUNNING')
        .map(async (c) => {
          const sampled = await this.sampleContainer(c, sandboxes.get(c.sandboxId)?.config.linux?.cgroup_parent);
          if (sampled) live.add(c.id);
        }),
    );
    for (const id of this.containerSnapshots.keys()) {
      if (!live.has(id)) {
        this.containerSnapshots.delete(id);
        this.lastCpu.delete(`c/${id}`);
      }
    }
    const liveSandboxes = new Set<string>();
    await Promise.all(
      [...sandboxes.values()]
        .filter((s) => s.state === 'SANDBOX_READY')
        .map(async (s) => {
          liveSandboxes.add(s.id);
          this.sandboxSnapshots.set(s.id, await this.sampleSandbox(s, containers));
        }),
    );
    for (const id of this.sandboxSnapshots.keys()) {
      if (!liveSandboxes.has(id)) {
        this.sandboxSnapshots.delete(id);
        this.lastCpu.delete(`s/${id}`);
      }
    }
    const stale = this.clock.monoNs() - 2n * BigInt(this.opts.periodMs) * 1_000_000n;
    for (const [key, entry] of this.metricInputs) if (entry.monoNs < stale) this.metricInputs.delete(key);
  }

  private async sampleSandbox(s: SandboxRecord, containers: ContainerRecord[]): Promise<SandboxSnapshot> {
    const parent = s.config.linux?.cgroup_parent;
    const podDir = podCgroupDir(parent);
    const snapshot: SandboxSnapshot = { id: s.id, timestampNs: this.clock.wallNs() };
    const podSample = podDir ? await this.readCgroup(podDir) : undefined;
    if (podSample) {
      snapshot.cpu = this.cpuOf(`s/${s.id}`, podSample);
      snapshot.memory = podSample.memory;
      snapshot.pids = podSample.pids;
    } else {
      // No pod cgroup of its own: the pod is the infra container plus its containers.
      const infra = await this.readCgroup(this.cgroupOf(s, parent));
      const infraCpu = infra ? this.cpuOf(`s/${s.id}`, infra) : undefined;
      const parts: Array<{ cpu?: CpuStats; memory?: MemorySample; pids?: number }> = [];
      if (infra) parts.push({ cpu: infraCpu, memory: infra.memory, pids: infra.pids });
      for (const c of containers) {
        if (c.sandboxId !== s.id) continue;
        const snap = this.containerSnapshots.get(c.id);
        if (snap) parts.push(snap);
      }
      Object.assign(snapshot, sumParts(parts));
    }
    if (!s.hostNetwork && s.infraPid) {
      const text = await fsp.readFile(path.join(this.procRoot, String(s.infraPid), 'net', 'dev'), 'utf8').catch(() => undefined);
      if (text !== undefined) {
        snapshot.network = { timestampNs: this.clock.wallNs(), interfaces: parseProcNetDev(text).filter((i) => i.name !== 'lo') };
      }
    }
    return snapshot;
  }

  private async readCgroup(dir: string): Promise<CgroupSample | undefined> {
    try {
      return await this.opts.reader.read(dir);
    } catch (err) {
      this.log.debug({ cgroup: dir, err: errorMessage(err) }, 'cgroup read failed');
      return undefined;
    }
  }

  private cpuOf(key: string, sample: CgroupSample): CpuStats | undefined {
    if (sample.cpuUsageNs === undefined) return undefined;
    const point: CpuPoint = { monoNs: this.clock.monoNs(), usageNs: sample.cpuUsageNs };
    const last = this.lastCpu.get(key);
    // An on-demand read just before a timed one would make a window of a few ms: a noisy rate. Keep
    // measuring from the older point until half a period has passed, and report the last rate meanwhile.
    if (last && point.monoNs - last.point.monoNs < BigInt(this.opts.periodMs) * 500_000n) {
      return { usageNs: point.usageNs, nanoCores: last.nanoCores };
    }
    const nanoCores = last ? nanoCoresBetween(last.point, point) : undefined;
    this.lastCpu.set(key, { point, nanoCores });
    return { usageNs: point.usageNs, nanoCores };
  }

  private async walkPass(): Promise<void> {
    const containers = this.opts.source.containers();
    const present = new Set(containers.map((c) => c.id));
    for (const c of containers) {
      if (this.stopped) return;
      await this.walkLayer(c.id);
    }
    for (const id of this.writableLayers.keys()) if (!present.has(id)) this.writableLayers.delete(id);
  }
}

/** Adds up the pod's members; a figure missing from every member stays undefined. */
export function sumParts(parts: Array<{ cpu?: CpuStats; memory?: MemorySample; pids?: number }>): { cpu?: CpuStats; memory?: MemorySample; pids?: number } {
  const out: { cpu?: CpuStats; memory?: MemorySample; pids?: number } = {};
  for (const p of parts) {
    if (p.cpu) {
      const cpu = (out.cpu ??= { usageNs: 0, nanoCores: 0 });
      cpu.usageNs += p.cpu.usageNs;
      // The pod rate is only known once every member has one.
      cpu.nanoCores = cpu.nanoCores === undefined || p.cpu.nanoCores === undefined ? undefined : cpu.nanoCores + p.cpu.nanoCores;
    }
    if (p.memory) {
      const m = (out.memory ??= { usageBytes: 0, workingSetBytes: 0, rssBytes: 0, pageFaults: 0, majorPageFaults: 0 });
      m.usageBytes += p.memory.usageBytes;
      m.workingSetBytes += p.memory.workingSetBytes;
      m.rssBytes += p.memory.rssBytes;
      m.pageFaults += p.memory.pageFaults;
      m.majorPageFaults += p.memory.majorPageFaults;
    }
    if (p.pids !== undefined) out.pids = (out.pids ?? 0) + p.pids;
  }
  return out;
}
