// The gRPC transport's own CPU per call, handlers aside: one CRI server per transport (grpc-js on
// node:http2, and the builtin HTTP/2 code of src/cri/h2/), each in its own process with canned
// handlers, called by the same clients in alternating batches; the server's utime + stime is read
// from /proc/PID/stat around each batch.
//
//   node dist/scripts/bench/grpc-transport.js [--calls 5000] [--batch 500] [--crictl 100] [--containers 1000] [--cpu-prof DIR]
//
// Clients: a grpc-js client (sequential unary calls with a deadline, as the kubelet and crictl send
// them), and, when the k8s tools are present (NODELET_K8S_TOOLS or /var/cache/nodelet-k8s-tools/bin),
// crictl (grpc-go): one process per call, so only the server's CPU per invocation is reported.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriServer, type GrpcTransport } from '../../src/cri/server.js';
import { connectCri, type CriClient } from '../../test/helpers/cri-client.js';
import { run } from '../../src/common/exec.js';
import { percentile } from './report.js';

const CLOCK_TICK_MS = 10; // USER_HZ is 100 on Linux
const TRANSPORTS: GrpcTransport[] = ['grpc-js', 'builtin'];

function image(i: number) {
  const digest = `sha256:${i.toString(16).padStart(64, '0')}`;
  return { id: digest, repo_tags: [`registry.example/nodelet/image-${i}:latest`], repo_digests: [`registry.example/nodelet/image-${i}@${digest}`], size: 1_234_567 + i, uid: null, username: '', spec: { image: digest, annotations: {} }, pinned: false };
}

function container(i: number) {
  const id = i.toString(16).padStart(64, 'c');
  return {
    id,
    pod_sandbox_id: 'p'.repeat(64),
    metadata: { name: `container-${i}`, attempt: 0 },
    image: { image: 'registry.example/nodelet/busybox:latest', annotations: {} },
    image_ref: `sha256:${'b'.repeat(64)}`,
    state: 'CONTAINER_RUNNING',
    created_at: 1_700_000_000_000_000_000 + i,
    labels: { 'io.kubernetes.container.name': `container-${i}`, 'io.kubernetes.pod.name': 'bench', 'io.kubernetes.pod.namespace': 'default', 'io.kubernetes.pod.uid': 'u'.repeat(36) },
    annotations: { 'io.kubernetes.container.hash': 'abcdef12', 'io.kubernetes.container.restartCount': '0', 'io.kubernetes.container.terminationMessagePath': '/dev/termination-log' },
  };
}

/** Child mode: one CriServer with canned answers on `socket`, until SIGTERM. */
async function serve(transport: GrpcTransport, socket: string, containers: number): Promise<void> {
  const images = Array.from({ length: 8 }, (_, i) => image(i));
  const list = Array.from({ length: containers }, (_, i) => container(i));
  const server = new CriServer({
    socket,
    transport,
    runtime: {
      unary: {
        Version: async () => ({ version: '0.1.0', runtime_name: 'nodelet', runtime_version: '0.1.0', runtime_api_version: 'v1' }),
        ListContainers: async () => ({ containers: list }),
      },
    },
    image: {
      unary: {
        ListImages: async () => ({ images }),
        ImageStatus: async () => ({ image: images[0], info: {} }),
        ImageFsInfo: async () => ({ image_filesystems: [], container_filesystems: [] }),
      },
    },
  });
  await server.start();
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  await server.stop(1000);
  process.exit(0);
}

async function cpuTicks(pid: number): Promise<number> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

interface Server {
  transport: GrpcTransport;
  socket: string;
  proc: ChildProcess;
  client: CriClient;
}

async function startServer(transport: GrpcTransport, dir: string, containers: number, cpuProfDir?: string): Promise<Server> {
  const socket = path.join(dir, `${transport}.sock`);
  const self = fileURLToPath(import.meta.url);
  const prof = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir, '--cpu-prof-name', `${transport}.cpuprofile`] : [];
  const proc = spawn(process.execPath, [...prof, self, '--serve', transport, '--socket', socket, '--containers', String(containers)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.once('data', () => resolve());
    proc.once('exit', (code) => reject(new Error(`${transport} server exited ${code}`)));
  });
  return { transport, socket, proc, client: connectCri(socket) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      serve: { type: 'string' },
      socket: { type: 'string' },
      calls: { type: 'string', default: '5000' },
      batch: { type: 'string', default: '500' },
      crictl: { type: 'string', default: '100' },
      containers: { type: 'string', default: '1000' },
      'cpu-prof': { type: 'string' },
    },
  });
  const containers = Number(values.containers);
  if (values.serve) return serve(values.serve as GrpcTransport, values.socket!, containers);

  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-grpcbench-'));
  const servers: Server[] = [];
  try {
    for (const t of TRANSPORTS) servers.push(await startServer(t, dir, containers, values['cpu-prof'] && path.resolve(values['cpu-prof'])));
    const D = { deadlineMs: 120_000 };
    const steps: Array<{ name: string; calls: number; call: (c: CriClient) => Promise<unknown> }> = [
      { name: 'Version', calls: Number(values.calls), call: (c) => c.runtime('Version', {}, D) },
      { name: 'ListImages', calls: Number(values.calls), call: (c) => c.image('ListImages', {}, D) },
      { name: 'ImageStatus', calls: Number(values.calls), call: (c) => c.image('ImageStatus', { image: { image: 'x' } }, D) },
      { name: `ListContainers (${containers})`, calls: Math.max(50, Math.round(Number(values.calls) / 20)), call: (c) => c.runtime('ListContainers', {}, D) },
    ];
    // The same answers from both (ListContainers is large enough to need flow control).
    const answers = await Promise.all(servers.map((s) => s.client.runtime('ListContainers', {}, D)));
    if (JSON.stringify(answers[0]) !== JSON.stringify(answers[1]) || answers[0].containers.length !== containers) throw new Error('the transports answered ListContainers differently');
    const batch = Number(values.batch);
    const rows: string[] = [];
    for (const step of steps) {
      const fig = new Map<GrpcTransport, { ms: number[]; ticks: number; calls: number }>(TRANSPORTS.map((t) => [t, { ms: [], ticks: 0, calls: 0 }]));
      for (const s of servers) for (let i = 0; i < 200; i++) await step.call(s.client);
      const b = Math.min(batch, step.calls);
      for (let round = 0; round * b < step.calls; round++) {
        for (const s of round % 2 === 0 ? servers : [...servers].reverse()) {
          const f = fig.get(s.transport)!;
          const t0 = await cpuTicks(s.proc.pid!);
          for (let i = 0; i < b; i++) {
            const started = performance.now();
            await step.call(s.client);
            f.ms.push(performance.now() - started);
          }
          f.ticks += (await cpuTicks(s.proc.pid!)) - t0;
          f.calls += b;
        }
      }
      for (const [t, f] of fig) rows.push(`| ${step.name} | grpc-js client | ${t} | ${percentile(f.ms, 50).toFixed(3)} | ${((f.ticks * CLOCK_TICK_MS) / f.calls).toFixed(3)} |`);
    }
    const tools = process.env.NODELET_K8S_TOOLS ?? '/var/cache/nodelet-k8s-tools/bin';
    const crictl = path.join(tools, 'crictl');
    const runs = Number(values.crictl);
    if (runs > 0 && existsSync(crictl)) {
      for (const sub of [['version'], ['images']]) {
        const fig = new Map<GrpcTransport, { ticks: number; runs: number }>(TRANSPORTS.map((t) => [t, { ticks: 0, runs: 0 }]));
        for (let round = 0; round < runs; round += 10) {
          for (const s of round % 20 === 0 ? servers : [...servers].reverse()) {
            const f = fig.get(s.transport)!;
            const t0 = await cpuTicks(s.proc.pid!);
            for (let i = 0; i < 10; i++) await run(crictl, ['--runtime-endpoint', `unix://${s.socket}`, '--image-endpoint', `unix://${s.socket}`, ...sub]);
            await sleep(20); // the connection's close is handled before the CPU is read
            f.ticks += (await cpuTicks(s.proc.pid!)) - t0;
            f.runs += 10;
          }
        }
        for (const [t, f] of fig) rows.push(`| crictl ${sub.join(' ')} (one process, one connection) | crictl | ${t} | - | ${((f.ticks * CLOCK_TICK_MS) / f.runs).toFixed(3)} |`);
      }
    }
    process.stdout.write(`load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}\n`);
    process.stdout.write('| call | client | server | client p50 ms | server CPU ms/call |\n|---|---|---|---:|---:|\n');
    process.stdout.write(rows.join('\n') + '\n');
  } finally {
    for (const s of servers) {
      s.client.close();
      const exited = new Promise((r) => s.proc.once('exit', r));
      s.proc.kill('SIGTERM');
      await exited;
    }
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
