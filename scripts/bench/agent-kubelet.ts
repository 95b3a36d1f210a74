// nodelet-agent against the real kubelet: one real control plane (etcd, kube-apiserver, scheduler,
// controller-manager from the conformance tier), two nodes joined to it — one run by the kubelet, one by
// nodelet-agent — each on a nodelet-cri of its own started with the same flags (runc backend). Pods bound
// to a node (spec.nodeName) are created one at a time, the nodes in turn, each timed from the create call
// to phase Running seen on a watch of the API; then a 10-replica Deployment on each node, timed to all Running.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { POD_UID_LABEL } from '../../src/agent/pod-spec.js';
import { findTools, type Tools } from '../../test/conformance/tools.js';
import { startControlPlane, type ControlPlane } from '../../test/conformance/control-plane.js';
import { Cleanup } from '../../test/conformance/cleanup.js';
import {
  addNodeAddress, prepareCgroupRoot, prepareKubeletHost, startAgent, startKubelet, startNodeRuntime,
  type NodeRuntime, type NodeUnderTest,
} from '../../test/conformance/node-host.js';

export type NodeKind = 'nodelet-agent' | 'kubelet';

export interface AgentKubeletOptions {
  /** Pods timed on each node. */
  pods: number;
  /** Replicas of the Deployment timed on each node (0: skip). */
  replicas: number;
  /** The busybox image in the bench's registry. */
  busybox: string;
  /** The registry's host:port (the runtimes' docker.io mirror, as in conformance). */
  registryHost: string;
  /** nodelet-cri's --log-level on both nodes. */
  runtimeLogLevel: string;
  log?: (line: string) => void;
  /** Registers a clean-up to run on an interrupt too (it is idempotent). */
  defer?: (fn: () => Promise<void>) => void;
  /** Copy the node, runtime and control-plane logs here at the end. */
  keepLogsDir?: string;
}

export type AgentKubeletResult =
  | { missing: string; samples?: undefined }
  | { missing?: undefined; samples: Map<NodeKind, { samples: Map<string, number[]> }> };

export const AGENT_KUBELET_OP = {
  apiRunning: 'pod create → Running in API (watch)',
  startedAt: 'pod create → container started_at (runtime clock)',
  deployment: (n: number) => `Deployment of ${n} replicas → all Running`,
} as const;

const LABEL = 'nodelet-bench';
const NAMESPACE = 'default';
const READY_DEADLINE_MS = 120_000;
const RUNNING_DEADLINE_MS = 60_000;
const DEPLOYMENT_DEADLINE_MS = 180_000;

/** The latest phase of each benchmark pod, from one watch; waiters resolve at the event that satisfies them. */
class PodPhases {
  private readonly phases = new Map<string, { phase: string; deleting: boolean }>();
  private readonly waiters = new Set<{ test: () => boolean; resolve: (at: number) => void }>();

  onEvent(type: string, pod: any): void {
    const name = pod?.metadata?.name as string | undefined;
    if (!name) return;
    if (type === 'DELETED') this.phases.delete(name);
    else if (type === 'ADDED' || type === 'MODIFIED') this.phases.set(name, { phase: pod.status?.phase ?? '', deleting: !!pod.metadata.deletionTimestamp });
    else return;
    const at = performance.now();
    for (const w of this.waiters) {
      if (w.test()) {
        this.waiters.delete(w);
        w.resolve(at);
      }
    }
  }

  running(name: string): boolean {
    const p = this.phases.get(name);
    return p?.phase === 'Running' && !p.deleting;
  }

  runningWithPrefix(prefix: string): number {
    let n = 0;
    for (const name of this.phases.keys()) if (name.startsWith(prefix) && this.running(name)) n++;
    return n;
  }

  /** Resolves performance.now() of the event after which `test` holds (now, if it holds already). */
  until(what: string, timeoutMs: number, test: () => boolean): Promise<number> {
    if (test()) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const waiter = { test, resolve: (at: number) => { clearTimeout(timer); resolve(at); } };
      this.waiters.add(waiter);
    });
  }
}

interface BenchNode {
  kind: NodeKind;
  node: NodeUnderTest;
  runtime: NodeRuntime;
  samples: Map<string, number[]>;
}

function record(n: BenchNode, op: string, ms: number): void {
  const list = n.samples.get(op) ?? [];
  list.push(ms);
  n.samples.set(op, list);
}

async function post(cp: ControlPlane, apiPath: string, obj: unknown): Promise<any> {
  const res = await cp.request('POST', apiPath, obj);
  if (res.status !== 201 && res.status !== 200) throw new Error(`POST ${apiPath}: HTTP ${res.status} ${res.body?.message ?? JSON.stringify(res.body).slice(0, 300)}`);
  return res.body;
}

function containerSpec(busybox: string): any {
  return {
    // busybox sleep as PID 1 ignores TERM: a short grace keeps deletions quick.
    terminationGracePeriodSeconds: 1,
    containers: [{ name: 'sleep', image: busybox, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'] }],
  };
}

/** The node's runtime, host pieces and the node itself, every step undone by `cleanup`. */
async function startBenchNode(kind: NodeKind, tools: Tools, cp: ControlPlane, opts: AgentKubeletOptions, nodeName: string, cleanup: Cleanup): Promise<BenchNode> {
  const address = await addNodeAddress(cleanup);
  const host = kind === 'kubelet' ? await prepareKubeletHost(cleanup) : await prepareCgroupRoot(cleanup);
  const runtime = await startNodeRuntime(tools, opts.registryHost, cleanup, ['--log-level', opts.runtimeLogLevel]);
  await runtime.daemon.client.image('PullImage', { image: { image: opts.busybox } }, { deadlineMs: 300_000 });
  const node = kind === 'kubelet'
    ? await startKubelet(tools, cp, runtime, address, nodeName, host.cgroupRoot, cleanup)
    : await startAgent(cp, runtime, address, nodeName, host.cgroupRoot, cleanup, { logLevel: 'info' });
  if (opts.keepLogsDir) {
    const dir = opts.keepLogsDir;
    // Runs first at clean-up (last in), while the files still exist.
    cleanup.add(`keep the ${kind} logs`, async () => {
      await fsp.mkdir(dir, { recursive: true });
      await fsp.copyFile(node.logPath, path.join(dir, `${kind}.log`)).catch(() => undefined);
      await fsp.copyFile(runtime.daemon.logFile, path.join(dir, `nodelet-cri-${kind}.log`)).catch(() => undefined);
    });
  }
  return { kind, node, runtime, samples: new Map() };
}

async function waitReady(cp: ControlPlane, n: BenchNode): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    const exited = n.node.exited();
    if (exited) throw new Error(`${n.kind} ${exited} before its node was Ready:\n${await n.node.logTail(15)}`);
    const res = await cp.request('GET', `/api/v1/nodes/${n.node.name}`);
    const ready = res.status === 200 && (res.body.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
    if (ready) return;
    if (Date.now() > deadline) throw new Error(`${n.kind}: node ${n.node.name} not Ready after ${READY_DEADLINE_MS} ms:\n${await n.node.logTail(15)}`);
    await sleep(250);
  }
}

/** The started_at of the pod's running container, as the runtime reports it (ms since the epoch), or undefined. */
async function containerStartedAt(n: BenchNode, uid: string): Promise<number | undefined> {
  const { containers } = await n.runtime.daemon.client.runtime('ListContainers', {
    filter: { state: { state: 'CONTAINER_RUNNING' }, label_selector: { [POD_UID_LABEL]: uid } },
  });
  if (!containers[0]) return undefined;
  const { status } = await n.runtime.daemon.client.runtime('ContainerStatus', { container_id: containers[0].id });
  const ms = Number(status.started_at) / 1e6;
  return ms > 0 ? ms : undefined;
}

/** Creates one pod bound to the node and waits for Running on the watch; records the times unless it is the warm-up. */
async function timePod(cp: ControlPlane, watch: PodPhases, n: BenchNode, name: string, busybox: string, keep: boolean): Promise<void> {
  const manifest = {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, labels: { [LABEL]: 'pod' } },
    spec: { nodeName: n.node.name, ...containerSpec(busybox) },
  };
  const createdWallMs = Date.now();
  const t0 = performance.now();
  const created = await post(cp, `/api/v1/namespaces/${NAMESPACE}/pods`, manifest);
  const runningAt = await watch.until(`${n.kind} ${name}: phase Running`, RUNNING_DEADLINE_MS, () => watch.running(name)).catch(async (err: Error) => {
    throw new Error(`${err.message}\n${n.kind}${n.node.exited() ? ` ${n.node.exited()}` : ''} log tail:\n${await n.node.logTail(15)}`);
  });
  if (!keep) return;
  record(n, AGENT_KUBELET_OP.apiRunning, runningAt - t0);
  const startedAt = await containerStartedAt(n, created.metadata.uid);
  if (startedAt !== undefined) record(n, AGENT_KUBELET_OP.startedAt, startedAt - createdWallMs);
}

/** A Deployment whose pods go to this node only; timed from its create to all replicas Running. */
async function timeDeployment(cp: ControlPlane, watch: PodPhases, n: BenchNode, replicas: number, busybox: string): Promise<void> {
  const app = `sleepers-${n.kind}`;
  const t0 = performance.now();
  await post(cp, `/apis/apps/v1/namespaces/${NAMESPACE}/deployments`, {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: app },
    spec: {
      replicas,
      selector: { matchLabels: { app } },
      template: {
        metadata: { labels: { app, [LABEL]: 'deployment' } },
        spec: { nodeSelector: { 'kubernetes.io/hostname': n.node.name }, ...containerSpec(busybox) },
      },
    },
  });
  const doneAt = await watch.until(`${n.kind}: ${replicas} replicas Running`, DEPLOYMENT_DEADLINE_MS, () => watch.runningWithPrefix(`${app}-`) >= replicas);
  record(n, AGENT_KUBELET_OP.deployment(replicas), doneAt - t0);
}

/** Runs the benchmark; `missing` (with the reason) when the Kubernetes tools are not there. */
export async function runAgentKubeletBench(opts: AgentKubeletOptions): Promise<AgentKubeletResult> {
  const say = opts.log ?? (() => undefined);
  let tools: Tools;
  try {
    tools = findTools();
  } catch (err) {
    return { missing: (err as Error).message };
  }
  const cleanup = new Cleanup(say);
  opts.defer?.(() => cleanup.run());
  try {
    say('agent vs kubelet: starting etcd, kube-apiserver, kube-scheduler, kube-controller-manager');
    const cp = await startControlPlane({ tools, log: say });
    cleanup.add('stop the control plane', () => cp.stop());
    if (opts.keepLogsDir) {
      const dir = opts.keepLogsDir;
      cleanup.add('keep the control-plane logs', async () => {
        await fsp.mkdir(dir, { recursive: true });
        for (const c of ['kube-apiserver', 'kube-scheduler', 'kube-controller-manager'] as const) {
          await fsp.writeFile(path.join(dir, `${c}.log`), await cp.logTail(c, 2000));
        }
      });
    }
    const tag = randomBytes(3).toString('hex');
    const nodes: BenchNode[] = [];
    for (const kind of ['kubelet', 'nodelet-agent'] as const) {
      const nodeName = `bench-${kind === 'kubelet' ? 'kubelet' : 'agent'}-${tag}`;
      say(`agent vs kubelet: nodelet-cri and ${kind} as node ${nodeName}`);
      nodes.push(await startBenchNode(kind, tools, cp, opts, nodeName, cleanup));
    }
    await Promise.all(nodes.map((n) => waitReady(cp, n)));
    const watch = new PodPhases();
    const stream = await cp.watch(`/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=${LABEL}`, (type, obj) => watch.onEvent(type, obj));
    cleanup.add('close the pod watch', () => stream.stop());

    say('agent vs kubelet: one warm-up pod on each node');
    for (const n of nodes) await timePod(cp, watch, n, `warm-up-${n.kind}`, opts.busybox, false);
    say(`agent vs kubelet: ${opts.pods} pods one after another on each node`);
    for (let i = 0; i < opts.pods; i++) {
      const order = i % 2 === 0 ? nodes : [...nodes].reverse();
      for (const n of order) await timePod(cp, watch, n, `start-${n.kind}-${i}`, opts.busybox, true);
    }
    if (opts.replicas > 0) {
      say(`agent vs kubelet: a Deployment of ${opts.replicas} replicas on each node`);
      for (const n of nodes) await timeDeployment(cp, watch, n, opts.replicas, opts.busybox);
    }
    return { samples: new Map(nodes.map((n) => [n.kind, { samples: n.samples }])) };
  } finally {
    // Nodes stop first, then their runtimes remove every pod, then cgroups, addresses and the control plane go.
    say('agent vs kubelet: cleaning up');
    await cleanup.run();
  }
}
