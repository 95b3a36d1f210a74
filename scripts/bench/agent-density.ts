// Pod density for nodelet-agent: one agent process (bin/nodelet-agent, its own process so its CPU and
// RSS are its own) on a test nodelet-cri and our test apiserver; N pods created at once, each timed from
// the create to phase Running in the API; then the agent's CPU while the N pods just run, and its RSS.
// Usage (after npm run build, as root):
//   node dist/scripts/bench/agent-density.js [--pods 110] [--idle-seconds 30] [--agent-bin bin/nodelet-agent] [--heap-snapshot DIR]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startTestDaemon } from '../../test/helpers/daemon.js';
import { useRegistries } from '../../test/helpers/registries.js';
import { startTestApiServer } from '../../test/agent/apiserver.js';
import { unmountAllUnder } from '../../src/agent/volumes/tmpfs.js';
import { PodCgroups } from '../../src/agent/pod-cgroups.js';
import { configureLogger, logger } from '../../src/common/log.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const NS = 'density';
const CLK_TCK = 100;

/** utime + stime of a process, in ms. */
async function cpuMs(pid: number): Promise<number> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

async function rssMiB(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      pods: { type: 'string', default: '110' },
      'idle-seconds': { type: 'string', default: '30' },
      'agent-bin': { type: 'string', default: path.join(REPO, 'bin', 'nodelet-agent') },
      'heap-snapshot': { type: 'string' },
    },
  });
  const pods = Number(values.pods);
  const idleSeconds = Number(values['idle-seconds']);
  configureLogger('silent');
  const say = (line: string) => process.stderr.write(`density: ${line}\n`);
  const reg = await useRegistries();
  const daemon = await startTestDaemon({ network: true });
  const api = await startTestApiServer();
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-density-'));
  const nodeName = `density-${randomBytes(3).toString('hex')}`;
  const busybox = `${reg.plain}/nodelet-test/busybox:latest`;
  const cgroupRoot = `/nodelet-density-${randomBytes(3).toString('hex')}`;
  let agent: ReturnType<typeof spawn> | undefined;
  try {
    await daemon.client.image('PullImage', { image: { image: busybox } });
    const nodeArgs = values['heap-snapshot'] ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${values['heap-snapshot']}`] : [];
    // The entry point itself (its own node flags), heap-snapshot flags through NODE_OPTIONS.
    agent = spawn(values['agent-bin']!, [
      '--kubeconfig', api.kubeconfigPath, '--node-name', nodeName, '--cri-endpoint', `unix://${daemon.socket}`,
      '--root', path.join(base, 'root'), '--pod-logs-dir', path.join(base, 'pods'), '--kubelet-api-address', '127.0.0.1:0',
      '--cgroup-root', cgroupRoot, '--max-pods', String(Math.max(110, pods)), '--log-level', 'warn'], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, NODE_OPTIONS: nodeArgs.join(' ') },
    });
    const pid = agent.pid!;
    const deadline = Date.now() + 60_000;
    while (!api.get('nodes', undefined, nodeName)) {
      if (Date.now() > deadline) throw new Error('the agent did not register its node');
      await sleep(100);
    }
    say(`agent pid ${pid} registered; RSS ${(await rssMiB(pid)).toFixed(1)} MiB; creating ${pods} pods`);
    const cpuBefore = await cpuMs(pid);
    const t0 = Date.now();
    const created = new Map<string, number>();
    for (let i = 0; i < pods; i++) {
      const name = `p-${i}`;
      created.set(name, Date.now());
      api.create('pods', {
        metadata: { name, namespace: NS },
        spec: { nodeName, terminationGracePeriodSeconds: 1, containers: [{ name: 'sleep', image: busybox, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'] }] },
      });
    }
    const runningAt = new Map<string, number>();
    while (runningAt.size < pods) {
      if (Date.now() - t0 > 30 * 60_000) throw new Error(`only ${runningAt.size}/${pods} pods Running after 30 min`);
      for (const name of created.keys()) {
        if (!runningAt.has(name) && api.get('pods', NS, name)?.status?.phase === 'Running') runningAt.set(name, Date.now());
      }
      await sleep(20);
    }
    const allRunningMs = Date.now() - t0;
    const startCpu = (await cpuMs(pid)) - cpuBefore;
    const latencies = [...runningAt].map(([n, at]) => at - created.get(n)!).sort((a, b) => a - b);
    say(`${pods} pods Running in ${allRunningMs} ms (agent CPU ${Math.round(startCpu)} ms); RSS ${(await rssMiB(pid)).toFixed(1)} MiB`);
    const idleStart = await cpuMs(pid);
    let peakRss = 0;
    for (let s = 0; s < idleSeconds; s++) {
      await sleep(1000);
      peakRss = Math.max(peakRss, await rssMiB(pid));
    }
    const idleCpuPct = ((await cpuMs(pid)) - idleStart) / (idleSeconds * 10);
    if (values['heap-snapshot']) {
      process.kill(pid, 'SIGUSR2');
      await sleep(5000);
    }
    const result = {
      pods,
      createToRunningMs: { p50: percentile(latencies, 50), p90: percentile(latencies, 90), max: latencies.at(-1) },
      allRunningMs,
      startCpuMs: Math.round(startCpu),
      idleCpuPercent: Number(idleCpuPct.toFixed(2)),
      rssMiB: Number((await rssMiB(pid)).toFixed(1)),
      peakIdleRssMiB: Number(peakRss.toFixed(1)),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    say('deleting the pods');
    for (const name of created.keys()) api.remove('pods', NS, name);
    const goneBy = Date.now() + 180_000;
    while ([...created.keys()].some((n) => api.get('pods', NS, n)) && Date.now() < goneBy) await sleep(200);
  } finally {
    if (agent?.pid) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent!.once('exit', r));
    }
    await daemon.cleanup();
    await api.close();
    await reg.stop();
    await unmountAllUnder(base).catch(() => undefined);
    await fsp.rm(base, { recursive: true, force: true });
    await (await PodCgroups.detect(logger({ component: 'density' }))).remove(cgroupRoot).catch(() => undefined);
  }
}

main().catch((err) => {
  process.stderr.write(`density: ${err?.stack ?? err}\n`);
  process.exit(1);
});
