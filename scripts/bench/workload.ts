// The CRI workload every runtime gets, interleaved step by step (A then B, B then A on the next
// step) so that load from anything else on the machine falls on both alike: warm-up, idle memory,
// the pod and container life cycle with ExecSync, image pulls cold and warm, lists with 100
// containers (memory read at 50), then bursts of pods started in parallel.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CriClient } from '../../test/helpers/cri-client.js';
import { containerConfig, sandboxConfig } from '../../test/helpers/pods.js';
import { describeMemoryParts, memoryOf, memoryParts, median, type MemoryFigures, type ProcessInfo } from './procs.js';

export interface BenchTarget {
  name: string;
  client: CriClient;
  daemonPid: number;
  /** The per-container (conmon) or per-pod (shim) monitor processes of this runtime. */
  monitors(): Promise<ProcessInfo[]>;
  /** Images the runtime must have before the first pod (containerd's sandbox image). */
  prePull: string[];
}

export interface WorkloadOptions {
  iterations: number;
  execsPerContainer: number;
  listPods: number;
  listContainersPerPod: number;
  /** Containers running when the memory is read (a multiple of listContainersPerPod). */
  memoryContainers: number;
  parallelPods: number;
  parallelRounds: number;
  /**
   * Containers for the large list phase (0: none), in pods of 50 added to the list pods: running `sleep` up to
   * `largeRunningContainers`, CREATED after that; memory read again at `largeMemoryContainers`.
   */
  largeListContainers: number;
  largeRunningContainers: number;
  largeMemoryContainers: number;
  /** The phases to run after the warm-up (all when absent). */
  phases?: ReadonlySet<WorkloadPhase>;
  images: { busybox: string; big: string };
  log?: (line: string) => void;
}

export const WORKLOAD_PHASES = ['lifecycle', 'pulls', 'lists', 'parallel'] as const;
export type WorkloadPhase = (typeof WORKLOAD_PHASES)[number];

export interface MonitorFigures {
  count: number;
  /** Median of one monitor. */
  one: MemoryFigures;
  /** Sum over all monitors. */
  total: MemoryFigures;
}

export interface WorkloadResult {
  /** Milliseconds per operation name, in the order first measured. */
  samples: Map<string, number[]>;
  /** A figure is missing when its phase was not run or failed. */
  memory: {
    idle?: MemoryFigures;
    withContainers?: MemoryFigures;
    withAllListContainers?: MemoryFigures;
    /** At largeMemoryContainers running containers (when the large list phase ran). */
    withLargeContainers?: MemoryFigures;
    idleAfter?: MemoryFigures;
    monitors?: MonitorFigures;
  };
  /** Phases that failed (their rows are missing). */
  failed: string[];
}

// Exits on TERM at once (a PID 1 without a handler ignores TERM, and the stop would wait for its timeout).
const STOPPABLE = ['sh', '-c', "trap 'exit 0' TERM; touch /tmp/ready; sleep 3600 & wait"];
const STOP_TIMEOUT_S = 10;
const PULL_DEADLINE_MS = 300_000;

export const OP = {
  run: 'RunPodSandbox',
  stopPod: 'StopPodSandbox',
  removePod: 'RemovePodSandbox',
  create: 'CreateContainer',
  start: 'StartContainer',
  stop: 'StopContainer',
  remove: 'RemoveContainer',
  exec: 'ExecSync (true)',
  createStart: 'CreateContainer + StartContainer (sum)',
  cycle: 'life cycle without ExecSync (sum of the 7 calls)',
  pullColdSmall: 'PullImage cold, busybox',
  pullColdBig: 'PullImage cold, big',
  pullWarm: 'PullImage warm, big',
} as const;

const LIFE_CYCLE = [OP.run, OP.create, OP.start, OP.stop, OP.remove, OP.stopPod, OP.removePod];

/** One runtime's side of the run: its client, samples and pod names. */
class Session {
  readonly samples = new Map<string, number[]>();
  readonly cri: CriClient;
  private podSeq = 0;
  private readonly tag = randomBytes(3).toString('hex');

  constructor(
    readonly target: BenchTarget,
    private readonly logDir: string,
  ) {
    this.cri = target.client;
  }

  sandboxConfig(prefix: string): any {
    const name = `${prefix}-${this.tag}-${this.podSeq++}`;
    return sandboxConfig(name, path.join(this.logDir, name));
  }

  record(op: string, ms: number): void {
    const list = this.samples.get(op) ?? [];
    list.push(ms);
    this.samples.set(op, list);
  }

  async timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const result = await fn();
    this.record(op, performance.now() - t0);
    return result;
  }

  lastSample(op: string): number {
    return this.samples.get(op)!.at(-1)!;
  }

  async removePods(ids: string[], concurrency = 4): Promise<void> {
    const queue = [...ids];
    const worker = async () => {
      for (let id = queue.shift(); id; id = queue.shift()) {
        await this.cri.runtime('StopPodSandbox', { pod_sandbox_id: id });
        await this.cri.runtime('RemovePodSandbox', { pod_sandbox_id: id });
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }

  /** Every pod the runtime has (its daemon serves this benchmark alone): what a failed phase left behind. */
  async removeAllPods(): Promise<void> {
    const { items } = await this.cri.runtime('ListPodSandbox', {});
    await this.removePods(items.map((p: any) => p.id));
  }

  daemonMemory(): Promise<MemoryFigures> {
    return memoryOf(this.target.daemonPid);
  }

  /** The daemon's RSS by kind of mapping, for the log: which part moved between runs. */
  async daemonMemoryParts(): Promise<string> {
    return describeMemoryParts(await memoryParts(this.target.daemonPid));
  }

  async pull(image: string): Promise<void> {
    await this.cri.image('PullImage', { image: { image } }, { deadlineMs: PULL_DEADLINE_MS });
  }

  async warmUp(images: string[], busybox: string): Promise<void> {
    for (const image of [...this.target.prePull, ...images]) await this.pull(image);
    const config = this.sandboxConfig('warm');
    const { pod_sandbox_id } = await this.cri.runtime('RunPodSandbox', { config });
    const { container_id } = await this.cri.runtime('CreateContainer', {
      pod_sandbox_id,
      config: containerConfig('warm', busybox, STOPPABLE),
      sandbox_config: config,
    });
    await this.cri.runtime('StartContainer', { container_id });
    await this.cri.runtime('ExecSync', { container_id, cmd: ['true'], timeout: 10 });
    await this.removePods([pod_sandbox_id]);
  }

  async lifeCycle(busybox: string, execs: number): Promise<void> {
    const cri = this.cri;
    const name = this.target.name;
    const config = this.sandboxConfig('cycle');
    const { pod_sandbox_id } = await this.timed(OP.run, () => cri.runtime('RunPodSandbox', { config }));
    const { container_id } = await this.timed(OP.create, () =>
      cri.runtime('CreateContainer', { pod_sandbox_id, config: containerConfig('app', busybox, STOPPABLE), sandbox_config: config }),
    );
    await this.timed(OP.start, () => cri.runtime('StartContainer', { container_id }));
    for (let k = 0; k < execs; k++) {
      const res = await this.timed(OP.exec, () => cri.runtime('ExecSync', { container_id, cmd: ['true'], timeout: 10 }));
      if (res.exit_code !== 0) throw new Error(`${name}: ExecSync true exited ${res.exit_code}: ${res.stderr}`);
    }
    // The TERM trap must be in place before the stop, or the stop waits for its timeout.
    for (let tries = 0; ; tries++) {
      const res = await cri.runtime('ExecSync', { container_id, cmd: ['test', '-e', '/tmp/ready'], timeout: 10 });
      if (res.exit_code === 0) break;
      if (tries > 50) throw new Error(`${name}: container never became ready`);
      await sleep(20);
    }
    await this.timed(OP.stop, () => cri.runtime('StopContainer', { container_id, timeout: STOP_TIMEOUT_S }));
    await this.timed(OP.remove, () => cri.runtime('RemoveContainer', { container_id }));
    await this.timed(OP.stopPod, () => cri.runtime('StopPodSandbox', { pod_sandbox_id }));
    await this.timed(OP.removePod, () => cri.runtime('RemovePodSandbox', { pod_sandbox_id }));
    // containerd runs `runc create` in StartContainer, nodelet in CreateContainer: compare the sum too.
    this.record(OP.createStart, this.lastSample(OP.create) + this.lastSample(OP.start));
    this.record(OP.cycle, LIFE_CYCLE.reduce((sum, op) => sum + this.lastSample(op), 0));
  }

  /** Removes every image of `all` (busybox's layer is big's base layer), then times the pull of `image`. */
  async coldPull(op: string, image: string, all: string[]): Promise<void> {
    for (const present of all) {
      await this.cri.image('RemoveImage', { image: { image: present } });
      const status = await this.cri.image('ImageStatus', { image: { image: present } });
      if (status.image) throw new Error(`${this.target.name}: ${present} still present after RemoveImage`);
    }
    await this.timed(op, () => this.pull(image));
  }

  /** Starts a pod with `count` containers running `sleep` (only created, not started, with `start` false); returns the pod id. */
  async sleepersPod(busybox: string, count: number, concurrency = count, start = true): Promise<string> {
    const config = this.sandboxConfig('list');
    const { pod_sandbox_id } = await this.cri.runtime('RunPodSandbox', { config });
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(count, concurrency) }, async () => {
        for (let c = next++; c < count; c = next++) {
        const { container_id } = await this.cri.runtime('CreateContainer', {
          pod_sandbox_id,
          config: containerConfig(`sleeper-${c}`, busybox, ['sleep', '3600']),
          sandbox_config: config,
        });
        if (start) await this.cri.runtime('StartContainer', { container_id });
        }
      }),
    );
    return pod_sandbox_id;
  }

  async parallelPods(op: string, count: number): Promise<void> {
    const ids: string[] = [];
    try {
      await this.timed(op, () =>
        Promise.all(
          Array.from({ length: count }, async () => {
            const { pod_sandbox_id } = await this.cri.runtime('RunPodSandbox', { config: this.sandboxConfig('burst') });
            ids.push(pod_sandbox_id);
          }),
        ),
      );
    } finally {
      await this.removePods(ids);
    }
  }

  async monitorFigures(): Promise<MonitorFigures> {
    // Only monitors of what exists now: a shim or conmon of a removed pod may still be on its way out.
    const { items } = await this.cri.runtime('ListPodSandbox', {});
    const { containers } = await this.cri.runtime('ListContainers', {});
    const ids = new Set<string>([...items.map((p: any) => p.id), ...containers.map((c: any) => c.id)]);
    const procs = (await this.target.monitors()).filter((p) => p.args.some((a) => ids.has(a)));
    const figures = await Promise.all(procs.map((p) => memoryOf(p.pid)));
    const sum = (k: keyof MemoryFigures) => figures.reduce((a, f) => a + f[k], 0);
    return {
      count: procs.length,
      one: { rss: median(figures.map((f) => f.rss)), pss: median(figures.map((f) => f.pss)) },
      total: { rss: sum('rss'), pss: sum('pss') },
    };
  }
}

/** The sessions in turn, the order flipped on every other step. */
async function eachInTurn(sessions: Session[], step: number, fn: (s: Session) => Promise<void>): Promise<void> {
  const order = step % 2 === 0 ? sessions : [...sessions].reverse();
  for (const s of order) await fn(s);
}

export async function runWorkload(targets: BenchTarget[], opts: WorkloadOptions): Promise<Map<string, WorkloadResult>> {
  const say = opts.log ?? (() => undefined);
  const logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-bench-logs-'));
  const sessions = targets.map((t) => new Session(t, logDir));
  const { busybox, big } = opts.images;
  const fixtureImages = [big, busybox];
  const memory = new Map<Session, WorkloadResult['memory']>(sessions.map((s) => [s, {}]));
  const failed: string[] = [];
  const total = opts.listPods * opts.listContainersPerPod;
  const wanted = (p: WorkloadPhase) => !opts.phases || opts.phases.has(p);

  /** A phase that fails loses its rows, not the run; whatever pods it left are removed either way. */
  const phase = async (name: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      failed.push(name);
      say(`${name} failed, its rows are missing: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      for (const s of sessions) {
        await s.removeAllPods().catch((err: unknown) => say(`${s.target.name}: removing the pods left by ${name}: ${String(err)}`));
      }
    }
  };

  const expectListed = async (count: number) => {
    for (const s of sessions) {
      const { containers } = await s.cri.runtime('ListContainers', {});
      if (containers.length !== count) throw new Error(`${s.target.name}: ListContainers gave ${containers.length}, want ${count}`);
    }
  };

  const timeLists = async (count: number, pods: Map<Session, string[]>) => {
    const podCount = pods.get(sessions[0]!)!.length;
    for (let i = 0; i < opts.iterations; i++) {
      await eachInTurn(sessions, i, (s) => s.timed(`ListContainers (${count} containers)`, () => s.cri.runtime('ListContainers', {})));
    }
    for (let i = 0; i < opts.iterations; i++) {
      await eachInTurn(sessions, i, (s) => s.timed(`ListPodSandbox (${podCount} pods, ${count} containers)`, () => s.cri.runtime('ListPodSandbox', {})));
    }
  };

  /** Pods of 50 added to the list pods: running sleepers up to largeRunningContainers, CREATED ones after. */
  const largeLists = async (pods: Map<Session, string[]>) => {
    const perPod = 50;
    say(`adding pods of ${perPod} up to ${opts.largeListContainers} containers on each runtime (running up to ${opts.largeRunningContainers}, created after)`);
    let count = total;
    let step = 0;
    while (count < opts.largeListContainers) {
      const running = count < opts.largeRunningContainers;
      const n = Math.min(perPod, opts.largeListContainers - count, running ? opts.largeRunningContainers - count : Infinity);
      await eachInTurn(sessions, step++, async (s) => {
        pods.get(s)!.push(await s.sleepersPod(busybox, n, 8, running));
      });
      const before = count;
      count += n;
      if (before < opts.largeMemoryContainers && count >= opts.largeMemoryContainers) {
        await sleep(2000);
        for (const s of sessions) memory.get(s)!.withLargeContainers = await s.daemonMemory();
        say(`memory read with ${count} containers`);
      }
    }
    await expectListed(count);
    await timeLists(count, pods);
    for (let i = 0; i < opts.iterations; i++) {
      await eachInTurn(sessions, i, async (s) => {
        await s.timed(`ListContainers, filtered by pod (${count} containers)`, () => s.cri.runtime('ListContainers', { filter: { pod_sandbox_id: pods.get(s)![0]! } }));
      });
    }
  };

  try {
    say('warm-up');
    await eachInTurn(sessions, 0, (s) => s.warmUp(fixtureImages, busybox));
    await sleep(2000);
    for (const s of sessions) memory.get(s)!.idle = await s.daemonMemory();

    if (wanted('lifecycle')) {
      await phase('life cycle', async () => {
        say(`pod and container life cycle ×${opts.iterations}`);
        for (let i = 0; i < opts.iterations; i++) await eachInTurn(sessions, i, (s) => s.lifeCycle(busybox, opts.execsPerContainer));
      });
    }

    if (wanted('pulls')) {
      await phase('image pulls', async () => {
        say(`image pulls ×${opts.iterations}`);
        for (const [op, image] of [
          [OP.pullColdBig, big],
          [OP.pullColdSmall, busybox],
        ] as const) {
          for (let i = 0; i < opts.iterations; i++) await eachInTurn(sessions, i, (s) => s.coldPull(op, image, fixtureImages));
        }
        await eachInTurn(sessions, 0, async (s) => {
          for (const image of fixtureImages) await s.pull(image);
        });
        for (let i = 0; i < opts.iterations; i++) await eachInTurn(sessions, i, (s) => s.timed(OP.pullWarm, () => s.pull(big)));
      });
      // A failed pull phase may have left an image out; later phases need both.
      await eachInTurn(sessions, 0, async (s) => {
        for (const image of fixtureImages) await s.pull(image).catch(() => undefined);
      });
    }

    if (wanted('lists')) {
      await phase('lists', async () => {
        const pods = new Map<Session, string[]>(sessions.map((s) => [s, []]));
        say(`${opts.listPods} pods × ${opts.listContainersPerPod} containers on each runtime`);
        for (let p = 0; p < opts.listPods; p++) {
          await eachInTurn(sessions, p, async (s) => {
            pods.get(s)!.push(await s.sleepersPod(busybox, opts.listContainersPerPod));
          });
          if ((p + 1) * opts.listContainersPerPod === opts.memoryContainers) {
            await sleep(2000);
            for (const s of sessions) {
              memory.get(s)!.withContainers = await s.daemonMemory();
              memory.get(s)!.monitors = await s.monitorFigures();
              say(`${s.target.name}: memory read with ${opts.memoryContainers} containers (${memory.get(s)!.monitors!.count} monitors); ${await s.daemonMemoryParts()}`);
            }
          }
        }
        await expectListed(total);
        await timeLists(total, pods);
        await sleep(1000);
        for (const s of sessions) memory.get(s)!.withAllListContainers = await s.daemonMemory();
        if (opts.largeListContainers > total) {
          // Not fatal: the 100-container figures are still worth having (containerd 1.6 once failed a create here under load 18).
          await largeLists(pods).catch((err: unknown) => {
            failed.push('large lists');
            say(`large list phase failed, its rows are missing: ${err instanceof Error ? err.message : String(err)}`);
          });
        }
        say('removing the list pods');
      });
    }

    if (wanted('parallel')) {
      await phase('parallel pods', async () => {
        say(`${opts.parallelPods} pods in parallel ×${opts.parallelRounds}`);
        const parallelOp = `RunPodSandbox ×${opts.parallelPods} in parallel (wall)`;
        for (let r = 0; r < opts.parallelRounds; r++) await eachInTurn(sessions, r, (s) => s.parallelPods(parallelOp, opts.parallelPods));
      });
    }

    await sleep(2000);
    const results = new Map<string, WorkloadResult>();
    for (const s of sessions) {
      const m = memory.get(s)!;
      m.idleAfter = await s.daemonMemory();
      results.set(s.target.name, { samples: s.samples, memory: m, failed });
    }
    return results;
  } finally {
    await fsp.rm(logDir, { recursive: true, force: true });
  }
}
