// The agent's side of the benchmark: for each runtime, our test kube-apiserver and one nodelet-agent
// on that runtime's CRI socket; pods are created in the API one after another (the runtimes in turn,
// the order flipped on every other pod) and each is timed from the create to its phase Running in the
// API and to its container running in CRI.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '../../src/common/exec.js';
import { configureLogger } from '../../src/common/log.js';
import { Agent } from '../../src/agent/agent.js';
import { defaultAgentConfig } from '../../src/agent/config.js';
import { POD_UID_LABEL } from '../../src/agent/pod-spec.js';
import type { CriClient } from '../../test/helpers/cri-client.js';
import { startTestApiServer, type TestApiServer } from '../../test/agent/apiserver.js';

export interface AgentBenchTarget {
  name: string;
  /** The runtime's CRI socket (a path). */
  socket: string;
  /** A client on the same socket, for pulls and for watching the containers. */
  client: CriClient;
  /** Images the runtime must have before the first pod (containerd's sandbox image). */
  prePull: string[];
}

export interface AgentBenchOptions {
  pods: number;
  busybox: string;
  log?: (line: string) => void;
  /** Registers a clean-up to run on an interrupt too (it is idempotent). */
  defer?: (fn: () => Promise<void>) => void;
}

export interface AgentBenchResult {
  samples: Map<string, number[]>;
}

export const AGENT_OP = {
  apiRunning: 'agent: create → Running in API',
  criRunning: 'agent: create → container running',
  startedAt: 'agent: create → container started_at (runtime clock)',
} as const;

const NAMESPACE = 'bench';
const API_POLL_MS = 5;
const CRI_POLL_MS = 20;
const RUNNING_DEADLINE_MS = 60_000;
const GONE_DEADLINE_MS = 60_000;

async function waitUntil<T>(what: string, deadlineMs: number, intervalMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

async function unmountUnder(dir: string): Promise<void> {
  const mounts = (await fsp.readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')))
    .reverse();
  for (const m of mounts) await run('umount', ['-l', m], { reject: false, timeoutMs: 10_000 });
}

/** One runtime's API server, agent and samples. */
class AgentSession {
  readonly samples = new Map<string, number[]>();
  readonly podNames: string[] = [];
  private readonly nodeName: string;
  private api?: TestApiServer;
  private agent?: Agent;
  private base?: string;
  private closed = false;

  constructor(
    readonly target: AgentBenchTarget,
    private readonly busybox: string,
    tag: string,
  ) {
    this.nodeName = `bench-${target.name}-${tag}`;
  }

  async start(): Promise<void> {
    for (const image of [...this.target.prePull, this.busybox]) {
      await this.target.client.image('PullImage', { image: { image } }, { deadlineMs: 300_000 });
    }
    this.base = await fsp.mkdtemp(path.join(os.tmpdir(), `nodelet-bench-agent-${this.target.name}-`));
    this.api = await startTestApiServer();
    this.agent = new Agent({
      ...defaultAgentConfig(),
      kubeconfig: this.api.kubeconfigPath,
      nodeName: this.nodeName,
      criEndpoint: `unix://${this.target.socket}`,
      root: path.join(this.base, 'root'),
      podLogsDir: path.join(this.base, 'pods'),
      kubeletApiAddress: '127.0.0.1:0',
    });
    await this.agent.start();
  }

  private manifest(name: string): any {
    return {
      metadata: { name, namespace: NAMESPACE, labels: { app: 'bench' } },
      spec: {
        nodeName: this.nodeName,
        // busybox sleep as PID 1 ignores TERM: a short grace keeps the deletion quick.
        terminationGracePeriodSeconds: 1,
        containers: [{ name: 'sleep', image: this.busybox, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'] }],
      },
    };
  }

  private async runningContainer(uid: string): Promise<any | undefined> {
    const { containers } = await this.target.client.runtime('ListContainers', {
      filter: { state: { state: 'CONTAINER_RUNNING' }, label_selector: { [POD_UID_LABEL]: uid } },
    });
    return containers[0];
  }

  /** Creates one pod and waits for both signs of it running; records the times unless it is the warm-up. */
  async timePod(name: string, record: boolean): Promise<void> {
    const api = this.api!;
    this.podNames.push(name);
    const createdWallMs = Date.now();
    const t0 = performance.now();
    const { uid } = api.create('pods', this.manifest(name)).metadata;
    const inApi = waitUntil(`${this.target.name} ${name}: phase Running in the API`, RUNNING_DEADLINE_MS, API_POLL_MS, () =>
      api.get('pods', NAMESPACE, name)?.status?.phase === 'Running' ? performance.now() - t0 : undefined,
    );
    const inCri = waitUntil(`${this.target.name} ${name}: container running in CRI`, RUNNING_DEADLINE_MS, CRI_POLL_MS, async () => {
      const container = await this.runningContainer(uid);
      return container ? { ms: performance.now() - t0, id: container.id as string } : undefined;
    });
    const [apiMs, cri] = await Promise.all([inApi, inCri]);
    if (!record) return;
    this.record(AGENT_OP.apiRunning, apiMs);
    this.record(AGENT_OP.criRunning, cri.ms);
    const { status } = await this.target.client.runtime('ContainerStatus', { container_id: cri.id });
    const startedAtMs = Number(status.started_at) / 1e6;
    if (startedAtMs > 0) this.record(AGENT_OP.startedAt, startedAtMs - createdWallMs);
  }

  private record(op: string, ms: number): void {
    const list = this.samples.get(op) ?? [];
    list.push(ms);
    this.samples.set(op, list);
  }

  /** Deletes the pods through the API; waits until they are gone there and their sandboxes are gone in CRI. */
  async deletePods(): Promise<void> {
    const api = this.api;
    if (!api) return;
    const uids = this.podNames.map((n) => api.get('pods', NAMESPACE, n)?.metadata.uid).filter((u): u is string => !!u);
    for (const name of this.podNames) {
      if (api.get('pods', NAMESPACE, name)) api.remove('pods', NAMESPACE, name);
    }
    await waitUntil(`${this.target.name}: pods gone from the API`, GONE_DEADLINE_MS, 100, () =>
      this.podNames.every((n) => !api.get('pods', NAMESPACE, n)) ? true : undefined,
    );
    await waitUntil(`${this.target.name}: sandboxes gone from CRI`, GONE_DEADLINE_MS, 100, async () => {
      for (const uid of uids) {
        const { items } = await this.target.client.runtime('ListPodSandbox', { filter: { label_selector: { [POD_UID_LABEL]: uid } } });
        if (items.length > 0) return undefined;
      }
      return true;
    });
    this.podNames.length = 0;
  }

  /** Deletes what is left (best effort), stops the agent and the API server, removes the temp dirs. Idempotent. */
  async close(log: (line: string) => void): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.agent && this.podNames.length > 0) {
      await this.deletePods().catch((err) => log(`${this.target.name}: deleting the agent's pods: ${String(err)}`));
    }
    await this.agent?.stop().catch((err) => log(`${this.target.name}: stopping the agent: ${String(err)}`));
    await this.api?.close().catch((err) => log(`${this.target.name}: closing the API server: ${String(err)}`));
    if (this.base) {
      await unmountUnder(this.base);
      await fsp.rm(this.base, { recursive: true, force: true });
    }
  }
}

/** Runs the agent benchmark against each target; returns the samples per target name. */
export async function runAgentBench(targets: AgentBenchTarget[], opts: AgentBenchOptions): Promise<Map<string, AgentBenchResult>> {
  const say = opts.log ?? (() => undefined);
  // The agent runs in this process: its logs would fill the report's stdout.
  configureLogger(process.env.NODELET_BENCH_AGENT_LOG ?? 'silent');
  const tag = randomBytes(3).toString('hex');
  const sessions = targets.map((t) => new AgentSession(t, opts.busybox, tag));
  const closeAll = async () => {
    for (const s of sessions) await s.close(say);
  };
  opts.defer?.(closeAll);
  try {
    for (const s of sessions) {
      say(`${s.target.name}: starting a test API server and an agent`);
      await s.start();
    }
    say('agent: one warm-up pod on each runtime');
    for (const s of sessions) await s.timePod('warm-up', false);
    say(`agent: ${opts.pods} pods one after another on each runtime`);
    for (let i = 0; i < opts.pods; i++) {
      const order = i % 2 === 0 ? sessions : [...sessions].reverse();
      for (const s of order) await s.timePod(`sleep-${i}`, true);
    }
    say('agent: deleting the pods through the API');
    await Promise.all(sessions.map((s) => s.deletePods()));
    return new Map(sessions.map((s) => [s.target.name, { samples: s.samples }]));
  } finally {
    await closeAll();
  }
}
