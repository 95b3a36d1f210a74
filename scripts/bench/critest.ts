// critest's own benchmark (`critest -benchmark`) against nodelet-cri (on each backend) and containerd's CRI in one run:
// all daemons up at once, the stand-in images critest pulls served by one local registry behind all
// runtimes' registry mirrors, critest run against each in turn (A, B, C then C, B, A on the next round) so load
// from elsewhere falls on all alike. Per operation the samples of all rounds are pooled; p50 per op.
//
//   node dist/scripts/bench/critest.js [--rounds 2] [--samples 10] [--runtimes nodelet,nodelet-containerd,containerd]
//        [--nodelet-log-level info] [--cpu-prof DIR] [--nodelet-node-flags '--flag ...'] [--keep DIR]
//        [--alt-node-flags=--flag --alt-env NAME=VALUE,... --alt-bin PATH]
//
// --runtimes may also name nodelet-builtin: nodelet (runc) with --grpc-server builtin, side by side with
// the others (e.g. --runtimes nodelet,nodelet-builtin compares the two gRPC servers under the same load), and
// nodelet-alt: nodelet (runc) with --alt-node-flags '--flag ...' and --alt-env NAME=VALUE,... added, and/or
// another build's entry point (--alt-bin ../baseline/bin/nodelet-cri): an A/B of a setting or a change.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../../src/common/exec.js';
import { pathExists } from '../../src/common/fsutil.js';
import { startTestDaemon, type TestDaemon } from '../../test/helpers/daemon.js';
import { startRegistryProcess, stopChild, type RegistryProcess } from '../../test/helpers/registries.js';
import { benchmarkLatencies, registryHasAll } from '../../test/conformance/critest.js';
import { findTools } from '../../test/conformance/tools.js';
import { buildCritestImages, pushCritestImages, UPSTREAM_REGISTRIES } from '../conformance/critest-images.js';
import { startContainerd, type BenchContainerd } from './containerd.js';
import { percentile } from './report.js';

export interface CritestBenchOptions {
  /** critest runs per runtime. */
  rounds: number;
  /** Samples per operation in one critest run (containersNumber, podsNumber, imagesNumber). */
  samples: number;
  runtimes: string[];
  nodeletLogLevel: string;
  /** Node flags for nodelet-cri (e.g. --cpu-prof ...); the entry point's own flags are kept. */
  nodeletNodeFlags?: string[];
  /** "nodelet-alt": nodelet (runc) again with these node flags and environment added (an A/B of a setting). */
  altNodeFlags?: string[];
  altEnv?: Record<string, string>;
  /** "nodelet-alt": this entry point instead of the checkout's bin/nodelet-cri. */
  altBin?: string;
  keep?: string;
  log: (line: string) => void;
}

/** Per runtime: "benchmark / operation" → samples in ms. */
export type CritestSamples = Map<string, Map<string, number[]>>;

function params(samples: number): string {
  return [
    `containersNumber: ${samples}`, 'containersNumberParallel: 1', 'containerBenchmarkTimeoutSeconds: 300',
    `podsNumber: ${samples}`, 'podsNumberParallel: 1', 'podBenchmarkTimeoutSeconds: 300',
    `imagesNumber: ${samples}`, 'imagesNumberParallel: 1', 'imageBenchmarkTimeoutSeconds: 300',
    'podContainerStartBenchmarkTimeoutSeconds: 300', '',
  ].join('\n');
}

async function serveStandIns(work: string, log: (l: string) => void): Promise<RegistryProcess> {
  const images = await buildCritestImages();
  const storage = path.join(work, 'storage');
  const cached = path.join(images.root, 'registry-storage');
  if (await pathExists(cached)) await run('cp', ['-a', cached, storage], { timeoutMs: 120_000 });
  else await fsp.mkdir(storage);
  const registry = await startRegistryProcess(work, 'registry', storage, {});
  if (!(await registryHasAll(registry.host, images))) {
    log('pushing the critest stand-in images');
    await pushCritestImages(registry.host, images);
  }
  return registry;
}

async function runOnce(critest: string, endpoint: string, dir: string, samples: number): Promise<Map<string, number[]>> {
  await fsp.mkdir(dir, { recursive: true });
  const paramsFile = path.join(dir, 'params.yaml');
  await fsp.writeFile(paramsFile, params(samples));
  const out = await fsp.open(path.join(dir, 'critest.log'), 'w');
  const child = spawn(
    critest,
    ['-benchmark', '-runtime-endpoint', endpoint, '-image-endpoint', endpoint, '-ginkgo.no-color', '-benchmarking-params-file', paramsFile, '-benchmarking-output-dir', dir],
    { stdio: ['ignore', out.fd, out.fd], cwd: dir },
  );
  await out.close();
  const timer = setTimeout(() => child.kill('SIGKILL'), 15 * 60_000);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c) => resolve(c));
  });
  clearTimeout(timer);
  if (code !== 0) {
    const tail = (await fsp.readFile(path.join(dir, 'critest.log'), 'utf8').catch(() => '')).split('\n').slice(-20).join('\n');
    throw new Error(`critest -benchmark against ${endpoint} exited ${code}:\n${tail}`);
  }
  const found = new Map<string, number[]>();
  for (const f of (await fsp.readdir(dir)).filter((f) => f.endsWith('.json')).sort()) {
    const data = JSON.parse(await fsp.readFile(path.join(dir, f), 'utf8')) as unknown;
    const benchmark = f.replace(/_benchmark_data\.json$|\.json$/, '');
    const set = data as { operationsNames?: string[]; datapoints?: { operationsDurationsNs?: number[] }[] };
    if (!Array.isArray(set?.operationsNames) || !Array.isArray(set.datapoints)) continue;
    if (benchmarkLatencies(benchmark, data).length === 0) continue;
    set.operationsNames.forEach((op, i) => {
      const ms = set.datapoints!.map((d) => d.operationsDurationsNs?.[i]).filter((v): v is number => typeof v === 'number').map((ns) => ns / 1e6);
      found.set(`${benchmark} / ${op}`, ms);
    });
  }
  // The pod + container start benchmark reports through Ginkgo only: one gmeasure row in the log.
  const text = await fsp.readFile(path.join(dir, 'critest.log'), 'utf8');
  for (const m of text.matchAll(/create PodSandbox and container \[duration\]\s*\|\s*(\d+)\s*\|[^|]*\|\s*([\d.]+)(ms|s|µs)/g)) {
    const ms = Number(m[2]) * (m[3] === 's' ? 1000 : m[3] === 'µs' ? 0.001 : 1);
    const key = 'pod_container / create PodSandbox and container';
    found.set(key, [...(found.get(key) ?? []), ms]);
  }
  return found;
}

export async function runCritestBench(o: CritestBenchOptions): Promise<CritestSamples> {
  const tools = findTools();
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-bench-critest-'));
  const undo: (() => Promise<void>)[] = [async () => void (await fsp.rm(work, { recursive: true, force: true }))];
  const result: CritestSamples = new Map();
  try {
    o.log('critest: serving the stand-in images');
    const registry = await serveStandIns(work, o.log);
    undo.push(() => stopChild(registry.child));
    const endpoints: { name: string; endpoint: string; pid: number }[] = [];
    // nodelet-cri once per backend: runc through conmon ("nodelet"), containerd's shims ("nodelet-containerd");
    // "nodelet-builtin": runc again, on the builtin HTTP/2 gRPC server.
    const nodelets = [['nodelet', 'runc', []], ['nodelet-builtin', 'runc', ['--grpc-server', 'builtin']], ['nodelet-alt', 'runc', []], ['nodelet-containerd', 'containerd', []]] as const;
    for (const [name, backend, extra] of nodelets) {
      if (!o.runtimes.includes(name)) continue;
      const mirrors = UPSTREAM_REGISTRIES.flatMap((r) => ['--registry-mirror', `${r}=http://${registry.host}`]);
      const daemon: TestDaemon = await startTestDaemon({
        network: true,
        backend,
        args: [...mirrors, '--insecure-registry', registry.host, '--log-level', o.nodeletLogLevel, ...extra],
        nodeFlags: o.nodeletNodeFlags,
        ...(name === 'nodelet-alt' ? { env: o.altEnv ?? {}, nodeFlags: [...(o.nodeletNodeFlags ?? []), ...(o.altNodeFlags ?? [])], bin: o.altBin } : {}),
      });
      undo.push(async () => {
        if (o.keep) await fsp.copyFile(daemon.logFile, path.join(o.keep, `${name}-cri.log`)).catch(() => undefined);
        await daemon.cleanup();
      });
      endpoints.push({ name, endpoint: `unix://${daemon.socket}`, pid: daemon.proc.pid! });
    }
    if (o.runtimes.includes('containerd')) {
      const c: BenchContainerd = await startContainerd({ registry: registry.host, sandboxImage: 'registry.k8s.io/pause:3.10', mirrored: [...UPSTREAM_REGISTRIES] });
      undo.push(() => c.cleanup());
      endpoints.push({ name: 'containerd', endpoint: `unix://${c.socket}`, pid: c.pid });
    }
    for (const e of endpoints) result.set(e.name, new Map());
    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? endpoints : [...endpoints].reverse();
      for (const e of order) {
        o.log(`critest -benchmark on ${e.name}, round ${round + 1}/${o.rounds}`);
        const found = await runOnce(tools.critest, e.endpoint, path.join(o.keep ?? work, `${e.name}-${round}`), o.samples);
        const into = result.get(e.name)!;
        for (const [op, ms] of found) into.set(op, [...(into.get(op) ?? []), ...ms]);
        const status = await fsp.readFile(`/proc/${e.pid}/status`, 'utf8').catch(() => '');
        const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN) / 1024;
        o.log(`${e.name} daemon after the run: VmRSS ${kb('VmRSS').toFixed(1)} MiB, RssAnon ${kb('RssAnon').toFixed(1)} MiB, VmHWM ${kb('VmHWM').toFixed(1)} MiB`);
      }
    }
  } finally {
    for (const fn of undo.reverse()) await fn().catch((err) => o.log(`critest cleanup: ${String(err)}`));
  }
  return result;
}

/** The runtimes critest's benchmark can run against, in table order. */
export const CRITEST_RUNTIMES = ['nodelet', 'nodelet-containerd', 'containerd'] as const;
/** Table order, with the runtime only named on request (nodelet on the builtin gRPC server). */
const TABLE_ORDER = ['nodelet', 'nodelet-builtin', 'nodelet-alt', 'nodelet-containerd', 'containerd'];

/** One row per operation: p50 on each runtime measured, and each nodelet backend's ratio to containerd's CRI. */
export function critestTable(samples: CritestSamples): { header: string[]; rows: string[][]; alignRight: boolean[] } {
  const measured = TABLE_ORDER.filter((r) => samples.has(r));
  const nodelets = measured.filter((r) => r !== 'containerd');
  const base = samples.get('containerd');
  const ops = [...new Set(measured.flatMap((r) => [...samples.get(r)!.keys()]))];
  const fmt = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const p50 = (r: string, op: string) => {
    const v = samples.get(r)?.get(op);
    return v?.length ? percentile(v, 50) : undefined;
  };
  const rows = ops.map((op) => {
    const n = measured.map((r) => samples.get(r)!.get(op)?.length).find((v) => v !== undefined) ?? 0;
    const y50 = base ? p50('containerd', op) : undefined;
    const ratios = base ? nodelets.map((r) => {
      const x50 = p50(r, op);
      return x50 !== undefined && y50 ? `${(x50 / y50).toFixed(2)}×` : '—';
    }) : [];
    return [`${op} (n=${n})`, ...measured.map((r) => fmt(p50(r, op))), ...ratios];
  });
  const labels: Record<string, string> = { nodelet: 'nodelet (runc)', 'nodelet-builtin': 'nodelet (runc, builtin gRPC)', 'nodelet-alt': 'nodelet (runc, alt)', 'nodelet-containerd': 'nodelet (containerd backend)' };
  const label = (r: string) => labels[r] ?? 'containerd CRI';
  const ratioHeaders = base ? nodelets.map((r) => `${label(r)} / containerd CRI`) : [];
  const header = ['critest -benchmark operation', ...measured.map((r) => `${label(r)} p50 ms`), ...ratioHeaders];
  return { header, rows, alignRight: header.map((_, i) => i > 0) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      rounds: { type: 'string', default: '2' },
      samples: { type: 'string', default: '10' },
      runtimes: { type: 'string', default: CRITEST_RUNTIMES.join(',') },
      'nodelet-log-level': { type: 'string', default: 'info' },
      'cpu-prof': { type: 'string' },
      'nodelet-node-flags': { type: 'string' },
      keep: { type: 'string' },
      'alt-node-flags': { type: 'string' },
      'alt-env': { type: 'string' },
      'alt-bin': { type: 'string' },
    },
  });
  const cpuProf = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
  const say = (l: string) => process.stderr.write(`[critest-bench ${new Date().toISOString().slice(11, 19)}] ${l}\n`);
  const { renderText } = await import('./report.js');
  if (values.keep) await fsp.mkdir(values.keep, { recursive: true });
  runCritestBench({
    rounds: Number(values.rounds),
    samples: Number(values.samples),
    runtimes: values.runtimes.split(','),
    nodeletLogLevel: values['nodelet-log-level'],
    nodeletNodeFlags:
      cpuProf || values['nodelet-node-flags']
        ? [...(values['nodelet-node-flags']?.split(/\s+/).filter(Boolean) ?? []), ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf] : [])]
        : undefined,
    keep: values.keep ? path.resolve(values.keep) : undefined,
    altNodeFlags: values['alt-node-flags']?.split(/\s+/).filter(Boolean),
    altBin: values['alt-bin'] ? path.resolve(values['alt-bin']) : undefined,
    altEnv: Object.fromEntries((values['alt-env'] ?? '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    log: say,
  }).then(
    (s) => process.stdout.write(`${renderText(critestTable(s))}\n`),
    (err: unknown) => {
      say(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exitCode = 1;
    },
  );
}
