// The per-call cost of the trivial CRI calls (Version, Status, the *Status and List* calls, RemoveImage):
// one or more daemons side by side (e.g. a baseline build and the current one, or containerd), each
// call repeated in batches taken in turn (A, B, then B, A on the next round) so load from elsewhere
// falls on all alike. Reports client p50/p95 and the daemon's CPU per call (utime + stime of every
// thread, and the main thread's run time from schedstat), which moves far less with machine load.
//
//   node dist/scripts/bench/call-loop.js [--daemon NAME=BIN]... [--containerd] [--calls 5000] [--batch 250]
//        [--cpu-prof DIR] [--log-level info] [--memory-containers 50] [--remove-image 20] [--only Method,...]
//        [--list-containers 100,1000] [--sequences 20] [--cold-pulls N] [--hold SECONDS]
//
// --daemon defaults to current=bin/nodelet-cri of this checkout; BIN is a nodelet-cri entry point of any
// build (copy a baseline's bin/, dist/, proto/ and node_modules link aside to compare with it).
// --cpu-prof writes one .cpuprofile per nodelet daemon into DIR when it stops.
// --list-containers: after the calls above, CREATED containers (pods of 50) are added on every daemon up to
// each count in turn, and ListContainers / ListPodSandbox are measured again at each (--calls of each).
// --sequences N: ImageStatus right after PullImage and ContainerStatus right after StartContainer, as critest's
// benchmark calls them, against the same call 50 ms later (N of each, daemons in turn): what the previous
// call leaves the daemon doing.
// --cold-pulls: before the memory figures, the fixtures' `big` image (~40 MB layer) is pulled cold N times on
// every daemon (removed between pulls, kept after the last), as the bench's pull phase does before its RSS reads.
// --hold: the daemons are left running this long at the end (pids printed), to look at them from outside.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectCri, type CriClient } from '../../test/helpers/cri-client.js';
import { entryEnv, entryNodeFlags } from '../../test/helpers/daemon.js';
import { testConflist } from '../../test/helpers/cni.js';
import { useRegistries } from '../../test/helpers/registries.js';
import { loadFixtures, imageRef } from '../../test/helpers/fixtures.js';
import { sandboxConfig, containerConfig, runContainer } from '../../test/helpers/pods.js';
import { socketAnswers } from '../../src/common/unix-socket.js';
import { run } from '../../src/common/exec.js';
import { startContainerd } from './containerd.js';
import { pushPauseImage } from './pause-image.js';
import { describeMemoryParts, memoryOf, memoryParts } from './procs.js';
import { percentile } from './report.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLOCK_TICK_MS = 10; // USER_HZ is 100 on Linux

interface Target {
  name: string;
  client: CriClient;
  pid: number;
  pod: string;
  /** The pod's sandbox config, sent again with each CreateContainer in it. */
  podConfig: unknown;
  container: string;
  logDir: string;
}

interface Figures {
  ms: number[];
  cpuTicks: number;
  mainThreadNs: number;
  calls: number;
}

async function cpuTicks(pid: number): Promise<number> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5))
}

async function mainThreadNs(pid: number): Promise<number> {
  return Number((await fsp.readFile(`/proc/${pid}/schedstat`, 'utf8')).split(' ')[0]);
}

async function startNodelet(name: string, bin: string, opts: { logLevel: string; cpuProfDir?: string }): Promise<{ client: CriClient; proc: ChildProcess; stop(): Promise<void> }> {
  const tag = randomBytes(4).toString('hex');
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-callbench-'));
  const runRoot = path.join('/run/nodelet-test', tag);
  const socket = path.join(runRoot, 'cri.sock');
  const cniConfDir = path.join(base, 'cni');
  const bridge = `nlcb${tag}`.slice(0, 15);
  const subnet = `10.${16 + (parseInt(tag.slice(0, 4), 16) % 200)}.${parseInt(tag.slice(4, 6), 16)}.0/24`;
  await fsp.mkdir(cniConfDir, { recursive: true });
  await fsp.writeFile(path.join(cniConfDir, '10-test.conflist'), testConflist(`nodelet-callbench-${tag}`, bridge, subnet, path.join(base, 'ipam')));
  const logFile = path.join(base, 'daemon.log');
  const out = await fsp.open(logFile, 'a');
  // The entry point's own #! flags and environment, plus the profiler when asked.
  const nodeFlags = [...entryNodeFlags(bin), ...(opts.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir, '--cpu-prof-name', `${name}.cpuprofile`] : [])];
  const proc = spawn(process.execPath, [...nodeFlags, bin, '--socket', socket, '--root', path.join(base, 'root'), '--run-root', runRoot, '--cni-conf-dir', cniConfDir, '--log-level', opts.logLevel], {
    stdio: ['ignore', out.fd, out.fd],
    env: { ...process.env, ...entryEnv(bin) },
  });
  await out.close();
  for (let i = 0; i < 400 && proc.exitCode === null; i++) {
    if (existsSync(socket) && (await socketAnswers(socket))) break;
    await sleep(50);
  }
  if (proc.exitCode !== null || !existsSync(socket)) throw new Error(`${name} did not start:\n${(await fsp.readFile(logFile, 'utf8')).slice(-3000)}`);
  const client = connectCri(socket);
  return {
    client,
    proc,
    stop: async () => {
      client.close();
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      await run('ip', ['link', 'del', bridge], { reject: false });
      await fsp.rm(runRoot, { recursive: true, force: true }).catch(() => undefined);
      await fsp.rm(base, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

async function removeAllPods(client: CriClient): Promise<void> {
  const { items } = await client.runtime('ListPodSandbox', {});
  for (const s of items) {
    await client.runtime('StopPodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
    await client.runtime('RemovePodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
  }
}

/** Adds `count` CREATED containers in pods of 50 (filling the last pod first), 4 creates at a time. */
async function addCreatedContainers(t: Target, pods: { id: string; config: unknown; count: number }[], count: number, image: string): Promise<void> {
  const PER_POD = 50;
  const slots: { pod: { id: string; config: unknown; count: number }; name: string }[] = [];
  for (let left = count; left > 0; ) {
    let pod = pods.at(-1);
    if (!pod || pod.count >= PER_POD) {
      const config = sandboxConfig(`callbench-list-${pods.length}`, t.logDir);
      const { pod_sandbox_id } = await t.client.runtime('RunPodSandbox', { config });
      pods.push((pod = { id: pod_sandbox_id, config, count: 0 }));
    }
    const n = Math.min(left, PER_POD - pod.count);
    for (let k = 0; k < n; k++) slots.push({ pod, name: `created-${pod.count + k}` });
    pod.count += n;
    left -= n;
  }
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let s = slots.shift(); s; s = slots.shift()) {
        await t.client.runtime('CreateContainer', { pod_sandbox_id: s.pod.id, config: containerConfig(s.name, image, ['sleep', '3600']), sandbox_config: s.pod.config });
      }
    }),
  );
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      daemon: { type: 'string', multiple: true },
      containerd: { type: 'boolean', default: false },
      calls: { type: 'string', default: '5000' },
      batch: { type: 'string', default: '250' },
      'cpu-prof': { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      'memory-containers': { type: 'string', default: '0' },
      hold: { type: 'string', default: '0' },
      'remove-image': { type: 'string', default: '20' },
      only: { type: 'string' },
      'list-containers': { type: 'string' },
      sequences: { type: 'string', default: '0' },
      'cold-pulls': { type: 'string', default: '0' },
    },
  });
  const listCounts = (values['list-containers'] ?? '').split(',').filter(Boolean).map(Number);
  if (listCounts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--list-containers N,M,...: positive integers, got ${values['list-containers']}`);
  const calls = Number(values.calls);
  const batch = Number(values.batch);
  const daemons = (values.daemon ?? [`current=${path.join(REPO, 'bin', 'nodelet-cri')}`]).map((d) => {
    const [name, bin] = d.split('=');
    if (!name || !bin) throw new Error(`--daemon NAME=BIN, got ${d}`);
    return { name, bin: path.resolve(bin) };
  });
  const reg = await useRegistries();
  const busybox = `${reg.plain}/nodelet-test/busybox:latest`;
  const small = `${reg.plain}/nodelet-test/entrypoint:latest`;
  const cpuProfDir = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
  if (cpuProfDir) await fsp.mkdir(cpuProfDir, { recursive: true });

  const targets: Target[] = [];
  const stoppers: Array<() => Promise<void>> = [];
  const setUp = async (name: string, client: CriClient, pid: number, stop: () => Promise<void>) => {
    stoppers.push(async () => {
      await removeAllPods(client).catch(() => undefined);
      await stop().catch(() => undefined);
    });
    const logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-callbench-logs-'));
    stoppers.push(() => fsp.rm(logDir, { recursive: true, force: true }));
    await client.image('PullImage', { image: { image: busybox } });
    await client.image('PullImage', { image: { image: small } });
    const config = sandboxConfig(`callbench-${name}`, logDir);
    const { pod_sandbox_id: pod } = await client.runtime('RunPodSandbox', { config });
    const container = await runContainer(client, pod, config, containerConfig('sleeper', busybox, ['sleep', '3600']));
    targets.push({ name, client, pid, pod, podConfig: config, container, logDir });
  };
  try {
    for (const d of daemons) {
      const n = await startNodelet(d.name, d.bin, { logLevel: values['log-level'], cpuProfDir });
      await setUp(d.name, n.client, n.proc.pid!, n.stop);
    }
    if (values.containerd) {
      const pause = await pushPauseImage(reg.plain);
      const c = await startContainerd({ registry: reg.plain, sandboxImage: pause });
      await c.client.image('PullImage', { image: { image: pause } });
      await setUp('containerd', c.client, c.pid, c.cleanup);
    }

    type Step = { name: string; call: (t: Target) => Promise<unknown> };
    // With a deadline, as the kubelet (2 min) and crictl send every call.
    const D = { deadlineMs: 120_000 };
    const allSteps: Step[] = [
      { name: 'Version', call: (t) => t.client.runtime('Version', {}, D) },
      { name: 'Status', call: (t) => t.client.runtime('Status', {}, D) },
      { name: 'PodSandboxStatus', call: (t) => t.client.runtime('PodSandboxStatus', { pod_sandbox_id: t.pod }, D) },
      { name: 'ContainerStatus', call: (t) => t.client.runtime('ContainerStatus', { container_id: t.container }, D) },
      { name: 'ListPodSandbox', call: (t) => t.client.runtime('ListPodSandbox', {}, D) },
      { name: 'ListContainers', call: (t) => t.client.runtime('ListContainers', {}, D) },
      { name: 'ImageStatus', call: (t) => t.client.image('ImageStatus', { image: { image: busybox } }, D) },
      { name: 'ListImages', call: (t) => t.client.image('ListImages', {}, D) },
    ];
    const steps = allSteps.filter((s) => !values.only || values.only.split(',').includes(s.name));

    const results = new Map<string, Map<string, Figures>>();
    const figuresOf = (step: string, target: string): Figures => {
      let byTarget = results.get(step);
      if (!byTarget) results.set(step, (byTarget = new Map()));
      let f = byTarget.get(target);
      if (!f) byTarget.set(target, (f = { ms: [], cpuTicks: 0, mainThreadNs: 0, calls: 0 }));
      return f;
    };
    const measure = async (list: Step[], label = '') => {
      // Warm each daemon's code paths first (JIT), unmeasured.
      for (const step of list) for (const t of targets) for (let i = 0; i < 200; i++) await step.call(t);
      for (const step of list) {
        for (let round = 0; round * batch < calls; round++) {
          const order = round % 2 === 0 ? targets : [...targets].reverse();
          for (const t of order) {
            const f = figuresOf(step.name + label, t.name);
            const ticks0 = await cpuTicks(t.pid);
            const ns0 = await mainThreadNs(t.pid);
            for (let i = 0; i < batch; i++) {
              const t0 = performance.now();
              await step.call(t);
              f.ms.push(performance.now() - t0);
            }
            f.cpuTicks += (await cpuTicks(t.pid)) - ticks0;
            f.mainThreadNs += (await mainThreadNs(t.pid)) - ns0;
            f.calls += batch;
          }
        }
      }
    };
    await measure(steps);
    // Lists at each count: CREATED containers (no process of their own on a runtime that creates at start).
    const listSteps = allSteps.filter((s) => s.name === 'ListContainers' || s.name === 'ListPodSandbox');
    const pods = new Map<Target, { id: string; config: unknown; count: number }[]>(targets.map((t) => [t, []]));
    let have = 1; // each target's sleeper
    for (const want of listCounts) {
      for (const t of targets) await addCreatedContainers(t, pods.get(t)!, want - have, busybox);
      have = Math.max(have, want);
      for (const t of targets) {
        const { containers } = await t.client.runtime('ListContainers', {}, D);
        if (containers.length !== have) throw new Error(`${t.name}: ListContainers gave ${containers.length}, want ${have}`);
      }
      await measure(listSteps, ` (${have} containers)`);
    }
    const sequences = Number(values.sequences);
    for (let i = 0; i < sequences; i++) {
      const order = i % 2 === 0 ? targets : [...targets].reverse();
      for (const gapMs of [0, 50]) {
        const label = gapMs ? ` (${gapMs} ms after the previous call)` : ' (right after the previous call)';
        for (const t of order) {
          await t.client.image('PullImage', { image: { image: small } });
          if (gapMs) await sleep(gapMs);
          const t0 = performance.now();
          await t.client.image('ImageStatus', { image: { image: small } }, D);
          figuresOf(`ImageStatus after PullImage${label}`, t.name).ms.push(performance.now() - t0);
          await t.client.image('RemoveImage', { image: { image: small } }, D);
          const { container_id } = await t.client.runtime('CreateContainer', { pod_sandbox_id: t.pod, config: containerConfig(`seq-${i}-${gapMs}`, busybox, ['sleep', '3600']), sandbox_config: t.podConfig });
          await t.client.runtime('StartContainer', { container_id });
          if (gapMs) await sleep(gapMs);
          const t1 = performance.now();
          await t.client.runtime('ContainerStatus', { container_id }, D);
          figuresOf(`ContainerStatus after StartContainer${label}`, t.name).ms.push(performance.now() - t1);
          await t.client.runtime('StopContainer', { container_id, timeout: 0 });
          await t.client.runtime('RemoveContainer', { container_id });
        }
      }
    }
    // RemoveImage of a small image, pulled again (unmeasured) before each.
    const removes = Number(values['remove-image']);
    if (removes > 0 && (!values.only || values.only.split(',').includes('RemoveImage'))) {
      for (let i = 0; i < removes; i++) {
        const order = i % 2 === 0 ? targets : [...targets].reverse();
        for (const t of order) {
          await t.client.image('PullImage', { image: { image: small } });
          const f = figuresOf('RemoveImage', t.name);
          const ticks0 = await cpuTicks(t.pid);
          const ns0 = await mainThreadNs(t.pid);
          const t0 = performance.now();
          await t.client.image('RemoveImage', { image: { image: small } }, D);
          f.ms.push(performance.now() - t0);
          f.cpuTicks += (await cpuTicks(t.pid)) - ticks0;
          f.mainThreadNs += (await mainThreadNs(t.pid)) - ns0;
          f.calls += 1;
        }
      }
    }

    process.stdout.write(`load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}\n`);
    process.stdout.write('| call | daemon | p50 ms | p95 ms | CPU ms/call (all threads) | main thread ms/call |\n|---|---|---:|---:|---:|---:|\n');
    for (const [step, byTarget] of results) {
      for (const [name, f] of byTarget) {
        const cpu = f.calls ? ((f.cpuTicks * CLOCK_TICK_MS) / f.calls).toFixed(3) : '';
        const main = f.calls ? (f.mainThreadNs / 1e6 / f.calls).toFixed(3) : '';
        process.stdout.write(`| ${step} | ${name} | ${percentile(f.ms, 50).toFixed(3)} | ${percentile(f.ms, 95).toFixed(3)} | ${cpu} | ${main} |\n`);
      }
    }

    const coldPulls = Number(values['cold-pulls']);
    if (coldPulls > 0) {
      const big = imageRef(reg.plain, (await loadFixtures()).big);
      // In turn, as the calls above: load from elsewhere falls on every daemon alike.
      const ms = new Map(targets.map((t) => [t, [] as number[]]));
      for (let i = 0; i < coldPulls; i++) {
        for (const t of targets) {
          const started = performance.now();
          await t.client.image('PullImage', { image: { image: big } });
          ms.get(t)!.push(performance.now() - started);
          if (i < coldPulls - 1) await t.client.image('RemoveImage', { image: { image: big } });
        }
      }
      for (const [t, times] of ms) process.stdout.write(`cold pulls ${t.name}: ${times.map((m) => m.toFixed(0)).join(' ')} ms\n`);
      await sleep(2000);
    }

    // Memory: idle (one pod, one container), then with N running containers in pods of 10.
    const extra = Number(values['memory-containers']);
    for (const t of targets) {
      const idle = await memoryOf(t.pid);
      process.stdout.write(`memory ${t.name}: idle RSS ${mib(idle.rss)} MiB, PSS ${mib(idle.pss)} MiB\n`);
      process.stdout.write(`memory ${t.name}: ${describeMemoryParts(await memoryParts(t.pid))}\n`);
    }
    if (extra > 0) {
      for (let p = 0; p * 10 < extra; p++) {
        for (const t of targets) {
          const config = sandboxConfig(`callbench-mem-${p}`, t.logDir);
          const { pod_sandbox_id: pod } = await t.client.runtime('RunPodSandbox', { config });
          for (let c = 0; c < Math.min(10, extra - p * 10); c++) await runContainer(t.client, pod, config, containerConfig(`sleeper-${c}`, busybox, ['sleep', '3600']));
        }
      }
      await sleep(3000);
      for (const t of targets) {
        const m = await memoryOf(t.pid);
        process.stdout.write(`memory ${t.name}: ${extra} more containers, RSS ${mib(m.rss)} MiB, PSS ${mib(m.pss)} MiB\n`);
        process.stdout.write(`memory ${t.name}: ${describeMemoryParts(await memoryParts(t.pid))}\n`);
      }
    }
    const hold = Number(values.hold);
    if (hold > 0) {
      process.stdout.write(`holding ${hold} s: ${targets.map((t) => `${t.name} pid ${t.pid}`).join(', ')}\n`);
      await sleep(hold * 1000);
    }
  } finally {
    for (const stop of stoppers) await stop().catch(() => undefined);
    await reg.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
