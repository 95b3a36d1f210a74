// `npm run bench`: the same CRI workload against nodelet-cri and containerd's CRI plugin in one
// run, on this machine, with the same local registry and the same CNI config shape. Prints p50
// and p95 per operation, the ratio, and memory of the daemons and their per-container monitors,
// then times nodelet-agent starting pods on each runtime, and writes the tables to docs/benchmark.md.
//
//   npm run bench -- [--iterations 20] [--parallel-rounds 3] [--runtimes nodelet,containerd]
//                    [--agent-pods 10] [--agent-replicas 10] [--only workload|lists|pulls|agent|critest] [--list-large 1000] [--large-running-containers 200]
//                    [--large-memory-containers 200]
//                    [--critest-rounds 3] [--critest-samples 20]
//                    [--nodelet-log-level info] [--nodelet-sandbox-image] [--out docs/benchmark.md | --no-write] [--keep-logs DIR]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startTestDaemon, type TestDaemon } from '../test/helpers/daemon.js';
import { useRegistries, type Registries } from '../test/helpers/registries.js';
import { loadFixtures } from '../test/helpers/fixtures.js';
import { startContainerd, type BenchContainerd } from './bench/containerd.js';
import { pushPauseImage } from './bench/pause-image.js';
import { findProcesses } from './bench/procs.js';
import { agentKubeletTable, agentTable, latencyTable, machineInfo, memoryTable, renderMarkdown, renderText, type MachineInfo } from './bench/report.js';
import { runWorkload, type BenchTarget, type WorkloadOptions, type WorkloadResult } from './bench/workload.js';
import { runAgentBench, type AgentBenchResult, type AgentBenchTarget } from './bench/agent.js';
import { runAgentKubeletBench, type AgentKubeletResult } from './bench/agent-kubelet.js';
import { critestTable, runCritestBench, CRITEST_RUNTIMES, type CritestSamples } from './bench/critest.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const FLAGS = {
  iterations: { type: 'string', default: '20' },
  'execs-per-container': { type: 'string', default: '3' },
  'list-pods': { type: 'string', default: '10' },
  'list-containers-per-pod': { type: 'string', default: '10' },
  'memory-containers': { type: 'string', default: '50' },
  'parallel-pods': { type: 'string', default: '20' },
  'parallel-rounds': { type: 'string', default: '3' },
  /** Containers for the large ListContainers/ListPodSandbox timings (0: skip). */
  'list-large': { type: 'string', default: '1000' },
  /** Of those, how many run `sleep` (the rest are only created: 1000 running on each runtime is too much for 2 cores). */
  'large-running-containers': { type: 'string', default: '200' },
  'large-memory-containers': { type: 'string', default: '200' },
  /**
   * critest -benchmark runs per runtime (interleaved) and samples per op in each run. 2 × 10 put the sub-ms
   * status calls anywhere within ±0.3× of their ratio from one run to the next; 3 × 20 within about ±0.1×.
   */
  'critest-rounds': { type: 'string', default: '3' },
  'critest-samples': { type: 'string', default: '20' },
  /** Pods the agent starts one after another on each runtime (and nodelet-agent and the kubelet each on their node). */
  'agent-pods': { type: 'string', default: '10' },
  /** Replicas of the Deployment nodelet-agent and the kubelet each start (0: skip). */
  'agent-replicas': { type: 'string', default: '10' },
  /** Run one part alone (nothing is written then): the CRI workload, its list and memory phases only, critest's benchmark or the agent's pod starts. */
  only: { type: 'string' },
  runtimes: { type: 'string', default: 'nodelet,containerd' },
  'nodelet-log-level': { type: 'string', default: 'info' },
  /** Run nodelet's sandboxes from the same pause image as containerd instead of its built-in pause rootfs. */
  'nodelet-sandbox-image': { type: 'boolean', default: false },
  out: { type: 'string', default: path.join(REPO, 'docs', 'benchmark.md') },
  'no-write': { type: 'boolean', default: false },
  'keep-logs': { type: 'string' },
  help: { type: 'boolean', default: false },
} as const;

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}

function say(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: FLAGS, allowPositionals: false });
  if (values.help) {
    process.stdout.write(
      'npm run bench -- [--iterations N] [--execs-per-container N] [--list-pods N] [--list-containers-per-pod N]\n' +
        '  [--memory-containers N] [--parallel-pods N] [--parallel-rounds N] [--runtimes nodelet,containerd]\n' +
        '  [--agent-pods N] [--agent-replicas N] [--only workload|lists|pulls|agent|critest] [--list-large N] [--large-running-containers N] [--large-memory-containers N]\n' +
        '  [--critest-rounds N] [--critest-samples N]\n' +
        '  [--nodelet-log-level LEVEL] [--nodelet-sandbox-image] [--out FILE | --no-write] [--keep-logs DIR]\n',
    );
    return;
  }
  const runtimes = new Set(values.runtimes.split(',').map((s) => s.trim()));
  for (const r of runtimes) if (r !== 'nodelet' && r !== 'containerd') throw new Error(`unknown runtime ${r}`);
  const only = values.only;
  if (only !== undefined && only !== 'workload' && only !== 'lists' && only !== 'pulls' && only !== 'agent' && only !== 'critest') throw new Error(`--only must be workload, lists, pulls, agent or critest, got ${only}`);
  const workloadRuns = only === undefined || only === 'workload' || only === 'lists' || only === 'pulls';
  const listLarge = Number(values['list-large']);
  const largeRunning = Number(values['large-running-containers']);
  const largeMemory = Number(values['large-memory-containers']);
  if (listLarge > 0 && largeMemory > largeRunning) throw new Error('--large-memory-containers must be at most --large-running-containers (memory is read with running containers)');
  const agentPods = positiveInt('agent-pods', values['agent-pods']);
  const agentReplicas = Number(values['agent-replicas']);
  if (!Number.isInteger(agentReplicas) || agentReplicas < 0) throw new Error(`--agent-replicas must be a whole number, got ${values['agent-replicas']}`);
  const listPods = positiveInt('list-pods', values['list-pods']);
  const perPod = positiveInt('list-containers-per-pod', values['list-containers-per-pod']);
  const memoryContainers = positiveInt('memory-containers', values['memory-containers']);
  if (memoryContainers % perPod !== 0 || memoryContainers > listPods * perPod) {
    throw new Error(`--memory-containers must be a multiple of --list-containers-per-pod and at most list-pods × per-pod`);
  }

  const cleanups: (() => Promise<void>)[] = [];
  let interrupted = false;
  const cleanupAll = async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        say(`cleanup: ${String(err)}`);
      }
    }
  };
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    say('interrupted: cleaning up');
    void cleanupAll().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const keepLogs = async (file: string, name: string) => {
    if (!values['keep-logs']) return;
    await fsp.mkdir(values['keep-logs'], { recursive: true });
    await fsp.copyFile(file, path.join(values['keep-logs'], name)).catch(() => undefined);
  };

  try {
    const began = Date.now();
    const loadAtStart = os.loadavg()[0]!;
    say('starting the registry');
    const registries: Registries = await useRegistries();
    cleanups.push(() => registries.stop());
    const fixtures = await loadFixtures();
    const images = {
      busybox: `${registries.plain}/${fixtures.busybox.repository}:latest`,
      big: `${registries.plain}/${fixtures.big.repository}:latest`,
    };
    const opts: WorkloadOptions = {
      iterations: positiveInt('iterations', values.iterations),
      execsPerContainer: positiveInt('execs-per-container', values['execs-per-container']),
      listPods,
      listContainersPerPod: perPod,
      memoryContainers,
      parallelPods: positiveInt('parallel-pods', values['parallel-pods']),
      parallelRounds: positiveInt('parallel-rounds', values['parallel-rounds']),
      largeListContainers: listLarge,
      largeRunningContainers: largeRunning,
      largeMemoryContainers: listLarge > 0 ? largeMemory : 0,
      phases: only === 'lists' || only === 'pulls' ? new Set([only]) : undefined,
      images,
      log: say,
    };

    let sandboxImage = '';
    let nodeletDaemon: TestDaemon | undefined;
    let containerd: BenchContainerd | undefined;
    if (runtimes.has('containerd') || values['nodelet-sandbox-image']) {
      say('building the pause image');
      sandboxImage = await pushPauseImage(registries.plain);
    }
    if (runtimes.has('nodelet')) {
      say('starting nodelet-cri');
      const args = ['--log-level', values['nodelet-log-level']];
      if (values['nodelet-sandbox-image']) args.push('--sandbox-image', sandboxImage);
      nodeletDaemon = await startTestDaemon({ network: true, args });
      const d = nodeletDaemon;
      cleanups.push(async () => {
        await keepLogs(d.logFile, 'nodelet-cri.log');
        await d.cleanup();
      });
    }
    if (runtimes.has('containerd')) {
      say('starting containerd');
      containerd = await startContainerd({ registry: registries.plain, sandboxImage });
      const c = containerd;
      cleanups.push(async () => {
        await keepLogs(c.logFile, 'containerd.log');
        await c.cleanup();
      });
    }

    const targets: BenchTarget[] = [];
    const agentTargets: AgentBenchTarget[] = [];
    if (nodeletDaemon) {
      const d = nodeletDaemon;
      targets.push({
        name: 'nodelet',
        client: d.client,
        daemonPid: d.proc.pid!,
        monitors: () => findProcesses((args) => path.basename(args[0] ?? '') === 'conmon' && args.some((a) => a.includes(d.runRoot) || a.includes(d.root))),
        prePull: values['nodelet-sandbox-image'] ? [sandboxImage] : [],
      });
      agentTargets.push({ name: 'nodelet', socket: d.socket, client: d.client, prePull: targets.at(-1)!.prePull });
    }
    if (containerd) {
      const c = containerd;
      agentTargets.push({ name: 'containerd', socket: c.socket, client: c.client, prePull: [sandboxImage] });
      targets.push({
        name: 'containerd',
        client: c.client,
        daemonPid: c.pid,
        monitors: () => findProcesses((args) => path.basename(args[0] ?? '') === 'containerd-shim-runc-v2' && args.includes(c.socket)),
        prePull: [sandboxImage],
      });
    }
    let results = new Map<string, WorkloadResult>();
    // Each part is non-fatal: one that fails loses its rows, the others are still measured and reported.
    const failedParts: string[] = [];
    const part = async <T>(name: string, fn: () => Promise<T>, none: T): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        failedParts.push(name);
        say(`${name} failed, its rows are missing: ${err instanceof Error ? err.message : String(err)}`);
        return none;
      }
    };
    if (workloadRuns) results = await part('workload', () => runWorkload(targets, opts), results);
    let critest: CritestSamples = new Map();
    if (only === undefined || only === 'critest') {
      critest = await part('critest', () => runCritestBench({
        rounds: positiveInt('critest-rounds', values['critest-rounds']),
        samples: positiveInt('critest-samples', values['critest-samples']),
        // nodelet-cri on its containerd backend too, beside the runc backend, when nodelet is measured.
        runtimes: CRITEST_RUNTIMES.filter((r) => runtimes.has(r === 'nodelet-containerd' ? 'nodelet' : r)),
        nodeletLogLevel: values['nodelet-log-level'],
        keep: values['keep-logs'] ? path.join(values['keep-logs'], 'critest') : undefined,
        log: say,
      }), critest);
    }
    let agentResults = new Map<string, AgentBenchResult>();
    let agentKubelet: AgentKubeletResult = { missing: 'not run' };
    if (only === undefined || only === 'agent') {
      agentResults = await part('agent', () => runAgentBench(agentTargets, { pods: agentPods, busybox: images.busybox, log: say, defer: (fn) => cleanups.push(fn) }), agentResults);
      agentKubelet = await runAgentKubeletBench({
        pods: agentPods,
        replicas: agentReplicas,
        busybox: images.busybox,
        registryHost: registries.plain,
        runtimeLogLevel: values['nodelet-log-level'],
        log: say,
        defer: (fn) => cleanups.push(fn),
        keepLogsDir: values['keep-logs'] ? path.join(values['keep-logs'], 'agent-kubelet') : undefined,
      }).catch((err: unknown) => {
        failedParts.push('agent-kubelet');
        const reason = err instanceof Error ? err.message : String(err);
        say(`agent-kubelet failed, its rows are missing: ${reason}`);
        return { missing: `failed: ${reason}` };
      });
      if (agentKubelet.missing !== undefined) say(`agent vs kubelet: missing: ${agentKubelet.missing}`);
    }

    const summary = `Whole run ${((Date.now() - began) / 1000).toFixed(0)} s; 1-minute load average ${loadAtStart.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end`;
    const nodeletResult = results.get('nodelet');
    const containerdResult = results.get('containerd');
    const latency = latencyTable(nodeletResult, containerdResult);
    const memory = memoryTable(nodeletResult, containerdResult, memoryContainers, listPods * perPod, opts.largeMemoryContainers);
    const agent = agentTable(agentResults.get('nodelet'), agentResults.get('containerd'));
    const versusKubelet = agentKubeletTable(agentKubelet.samples?.get('nodelet-agent'), agentKubelet.samples?.get('kubelet'), agentKubelet.missing);
    const critestRows = critestTable(critest);
    const tables = [
      ...(workloadRuns ? [latency, memory] : []),
      ...(only === undefined || only === 'critest' ? [critestRows] : []),
      ...(only === undefined || only === 'agent' ? [agent, versusKubelet] : []),
    ];
    const failedPhases = [...failedParts, ...new Set([...results.values()].flatMap((r) => r.failed))];
    const failedLine = failedPhases.length ? `\nFailed phases (rows missing): ${failedPhases.join(', ')}` : '';
    process.stdout.write(`\n${tables.map(renderText).join('\n\n')}\n\n${summary}${failedLine}\n`);
    if (only) {
      say(`--only ${only}: nothing written`);
    } else if (!values['no-write']) {
      const machine = await machineInfo();
      await fsp.mkdir(path.dirname(values.out), { recursive: true });
      await fsp.writeFile(
        values.out,
        markdownReport(machine, opts, latency, memory, critestRows, agent, versusKubelet, agentPods, agentReplicas, failedPhases.length ? `${summary}; failed, rows missing: ${failedPhases.join(', ')}` : summary, values['nodelet-log-level'], values['nodelet-sandbox-image']),
      );
      say(`wrote ${path.relative(process.cwd(), values.out) || values.out}`);
    }
  } finally {
    say('cleaning up');
    await cleanupAll();
  }
}

function markdownReport(
  m: MachineInfo,
  o: WorkloadOptions,
  latency: ReturnType<typeof latencyTable>,
  memory: ReturnType<typeof memoryTable>,
  critest: ReturnType<typeof critestTable>,
  agent: ReturnType<typeof agentTable>,
  versusKubelet: ReturnType<typeof agentKubeletTable>,
  agentPods: number,
  agentReplicas: number,
  summary: string,
  nodeletLogLevel: string,
  nodeletSandboxImage: boolean,
): string {
  const date = new Date().toISOString().slice(0, 10);
  return `# Benchmark: nodelet-cri and containerd's CRI, side by side

Measured ${date} with \`npm run bench\` (scripts/bench.ts). Both runtimes run at the same time and get the
same CRI calls from the same gRPC client, interleaved step by step (nodelet then containerd, containerd then
nodelet on the next step), so load from anything else on the machine falls on both alike. Times are what the
client sees for each call.

## Machine

- CPUs: ${m.cpus}; memory ${m.memory}
- ${m.os}, kernel ${m.kernel}, cgroup ${m.cgroup}
- node ${m.node}; runc: ${m.runc}; conmon: ${m.conmon}
- containerd: ${m.containerd} (CRI plugin, runtime \`io.containerd.runc.v2\`, overlayfs, cgroupfs)

## Workload

- Images come from a local registry (Debian's docker-registry on 127.0.0.1, plain HTTP): \`busybox\`
  (one small layer) and \`big\` (busybox plus a ~40 MB layer of incompressible data). Before timing, each
  runtime pulls both and runs one warm-up pod.
- Both runtimes use a CNI conflist of the same shape (bridge + host-local + portmap from /usr/lib/cni), each
  with its own bridge and /24.
- Sandboxes: containerd's \`sandbox_image\` is an image made from nodelet's static pause binary, pushed to
  the local registry and pulled before timing; nodelet runs ${
    nodeletSandboxImage ? 'that same image (\`--sandbox-image\`)' : 'its built-in pause rootfs (no image, no overlay mount)'
  }.
- Life cycle, ${o.iterations} times: RunPodSandbox, CreateContainer (busybox \`sh\` trapping TERM), StartContainer,
  ${o.execsPerContainer}× ExecSync \`true\`, StopContainer (timeout ${10} s; the container exits on TERM at once),
  RemoveContainer, StopPodSandbox, RemovePodSandbox.
- Pulls, ${o.iterations} times each: cold = RemoveImage then PullImage (blobs and layers deleted by both
  runtimes' RemoveImage; busybox and big share their base layer, so both are removed first), warm = PullImage of an image already present.
- Lists: ${o.listPods} pods × ${o.listContainersPerPod} containers running \`sleep\`; ListContainers and ListPodSandbox
  ${o.iterations} times each with all of them present. Memory is read with ${o.memoryContainers} of them running.
- Large lists: ${o.largeListContainers > 0 ? `pods of 50 containers (8 created at a time) added to the 100 above up to ${o.largeListContainers} containers, running \`sleep\` up to ${o.largeRunningContainers} and only created (CONTAINER_CREATED) after that (${o.largeListContainers} running containers on each runtime at once is too much for this 2-core machine); ListContainers, ListPodSandbox and ListContainers filtered by one pod ${o.iterations} times each; memory read again at ${o.largeMemoryContainers} running containers` : 'not run'}.
- Parallel: ${o.parallelPods} RunPodSandbox calls at once, wall time until all returned, ${o.parallelRounds} rounds.
- nodelet-cri logs at \`${nodeletLogLevel}\`, containerd at \`info\`. ${summary}.

## Latency

p50 and p95 (nearest rank) in milliseconds; ratio = nodelet p50 / containerd p50 (below 1 means nodelet is faster).

${renderMarkdown(latency)}

## Memory

RSS from /proc/PID/status (VmRSS) and PSS from /proc/PID/smaps_rollup, MiB. The daemon is nodelet-cri's node
process and the containerd process. The monitor is conmon (one per container, sandboxes included) for
nodelet and containerd-shim-runc-v2 (one per pod, all its containers included) for containerd, so one
monitor against one monitor does not compare the same unit of work; the totals do, and PSS is the fair total
(RSS counts the pages of the shared binary and libraries once in every process).

${renderMarkdown(memory)}

## critest -benchmark

critest 1.36's own benchmark (\`critest -benchmark\`, binary from the Kubernetes tools directory) against each
runtime in turn (nodelet-cri on its runc backend, nodelet-cri on its containerd backend — the handler
\`containerd:io.containerd.runc.v2\`, a containerd of its own — and containerd's CRI; the reverse order on the
next round), with every image it pulls served by one local registry behind the runtimes' registry mirrors (critest's stand-in images, as in the
conformance phase), one operation at a time (\`*NumberParallel: 1\`). Each runtime runs in its own daemon
started for this phase (nodelet-cri at \`${nodeletLogLevel}\`). Samples of all rounds are pooled; p50 in
milliseconds, ratio = nodelet-cri (each backend) / containerd's CRI. The pod + container start row comes from critest's own Ginkgo
report (one sample a run).

${renderMarkdown(critest)}

## Agent: pod created → running

For each runtime, our test kube-apiserver (in the benchmark's process) and one nodelet-agent (same process,
default settings, logging off) on that runtime's CRI socket. After one warm-up pod, ${agentPods} pods (busybox
\`sleep 3600\`, image present, \`imagePullPolicy: IfNotPresent\`) are created in the API one after another, the
runtimes in turn, each left running until the end (the k-th starts beside the warm-up pod and the k − 1 before it), then all deleted
through the API. Measured from the create in the API store to: phase Running written back to the API (store
polled every 5 ms); the pod's container listed CONTAINER_RUNNING by ListContainers (polled every 20 ms over
the runtime's socket); the container's \`started_at\` as the runtime reports it (its clock against ours, no
polling). p50 and p95 in milliseconds as above; ratio = on nodelet-cri / on containerd.

${renderMarkdown(agent)}

## Agent against the kubelet: pod created → Running

The real control plane of the conformance tier (etcd, kube-apiserver, kube-scheduler and kube-controller-manager
from the Kubernetes tools directory, on 127.0.0.1) with two nodes joined to it: one run by the real kubelet
(\`--v=2\`, the conformance tier's KubeletConfiguration: cgroupfs, default generic PLEG), one by nodelet-agent
(its own process, \`--log-level info\`). Each node has a nodelet-cri of its own (runc backend, the same flags,
\`${nodeletLogLevel}\`): one runtime shared by two nodes would have each node's clean-up remove the other's pods as
unknown. busybox is pulled into both before timing and each node runs one warm-up pod. Then ${agentPods} pods per
node (busybox \`sleep 3600\`, \`spec.nodeName\` set so no scheduler is involved, the default service account token
mounted), created one at a time as admin, the nodes in turn (the order flipped on every other pod), each left
running. Timed from the create call to the first event with phase Running on one watch of the pods; and to the
container's \`started_at\` as the runtime reports it. ${agentReplicas > 0 ? `Last, a Deployment of ${agentReplicas} replicas pinned to each node by
\`nodeSelector\` (through the scheduler), kubelet's first, timed from its create to all replicas Running (one sample each).` : 'No Deployment was timed.'}
p50 and p95 in milliseconds; ratio = nodelet-agent / kubelet (below 1 means nodelet-agent is faster).

${renderMarkdown(versusKubelet)}

## Commentary

Where the time goes (CPU profile, per-step trace of each RPC), which goals are met, and what stands in the
way of the others: [benchmark-commentary.md](benchmark-commentary.md) (written by hand after a measured run).
`;
}

main().catch((err) => {
  say(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
});
