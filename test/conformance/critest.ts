// The critest phases: critest's validation suite, then its benchmarks, against a nodelet-cri of its own
// (temp root, run root, socket, CNI bridge and subnet), with every image critest names served by our
// stand-ins from a local docker-registry behind the runtime's registry mirrors. Everything it starts
// is undone at the end, or on SIGINT/SIGTERM through run.ts's cleanups.
// Every spec becomes one report line `<label>: <spec>` (label: the phase, critest or critest-containerd);
// skipped specs are reported as not run.
// NODELET_CRITEST_LOGS=DIR keeps critest's output, its JUnit files and the daemon log there (critest-containerd: in DIR/critest-containerd).
// NODELET_CRITEST_FOCUS=REGEX runs only the matching specs (diagnosis).
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { pathExists } from '../../src/common/fsutil.js';
import { run } from '../../src/common/exec.js';
import { startTestDaemon, type TestBackend, type TestDaemon } from '../helpers/daemon.js';
import { startRegistryProcess, stopChild, type RegistryProcess } from '../helpers/registries.js';
import {
  buildCritestImages,
  pushCritestImages,
  UNBUILDABLE_DIGEST_IMAGE,
  UPSTREAM_REGISTRIES,
  type StandInImages,
} from '../../scripts/conformance/critest-images.js';
import { Cleanup } from './cleanup.js';
import type { Tools } from './tools.js';
import type { ConformanceReport } from './report.js';

const SUITE_TIMEOUT_MS = 20 * 60_000;
const BENCHMARK_TIMEOUT_MS = 8 * 60_000;
const STREAMING_TIMEOUT_MS = 5 * 60_000;

/** Specs not run, with why: a regexp for -ginkgo.skip and the reason reported. */
const NOT_RUN: { pattern: string; why: string }[] = [
  {
    pattern: 'public image with digest should be pulled and removed',
    why: `pulls ${UNBUILDABLE_DIGEST_IMAGE}, an upstream digest no offline build can reproduce`,
  },
];

/** Small sample counts so the benchmarks take a minute or two on a 2-core machine. */
const BENCHMARK_PARAMS = [
  'containersNumber: 10',
  'containersNumberParallel: 2',
  'containerBenchmarkTimeoutSeconds: 120',
  'podsNumber: 10',
  'podsNumberParallel: 2',
  'podBenchmarkTimeoutSeconds: 120',
  'imagesNumber: 10',
  'imagesNumberParallel: 2',
  'imageBenchmarkTimeoutSeconds: 120',
  'podContainerStartBenchmarkTimeoutSeconds: 120',
  '',
].join('\n');

export interface JunitCase {
  name: string;
  status: 'passed' | 'failed' | 'skipped' | string;
  seconds: number;
  /** The failure or skip message (entities decoded). */
  message: string;
}

function decodeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);/g, (_, e: string) => {
    if (e === 'lt') return '<';
    if (e === 'gt') return '>';
    if (e === 'amp') return '&';
    if (e === 'quot') return '"';
    if (e === 'apos') return "'";
    return String.fromCodePoint(e.startsWith('#x') ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

function attributes(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/([\w:-]+)="([^"]*)"/g)) out[m[1]!] = decodeXml(m[2]!);
  return out;
}

/** The test cases of a Ginkgo JUnit report (one per spec, plus suite nodes such as [BeforeSuite]). */
export function parseJunit(xml: string): JunitCase[] {
  const cases: JunitCase[] = [];
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const attrs = attributes(m[1]!);
    const body = m[2] ?? '';
    const failure = /<(failure|error)\b([^>]*?)(?:\/>|>([\s\S]*?)<\/\1>)/.exec(body);
    const skipped = /<skipped\b([^>]*?)(?:\/>|>)/.exec(body);
    let status = attrs.status ?? (failure ? 'failed' : skipped ? 'skipped' : 'passed');
    let message = '';
    if (failure) {
      const fa = attributes(failure[2]!);
      message = fa.message || decodeXml(failure[3] ?? '');
      if (!attrs.status) status = 'failed';
    } else if (skipped) {
      message = attributes(skipped[1]!).message ?? '';
    }
    cases.push({ name: (attrs.name ?? '').replace(/^\[It\]\s+/, ''), status, seconds: Number(attrs.time ?? 0), message });
  }
  return cases;
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? ''
  ).slice(0, 300);
}

export interface OperationLatency {
  benchmark: string;
  operation: string;
  p50Ms: number;
  samples: number;
}

/** p50 per operation of critest's lifecycle benchmark files (operationsNames + datapoints). */
export function benchmarkLatencies(benchmark: string, data: unknown): OperationLatency[] {
  const set = data as { operationsNames?: string[]; datapoints?: { operationsDurationsNs?: number[] }[] };
  if (!Array.isArray(set?.operationsNames) || !Array.isArray(set.datapoints)) return [];
  return set.operationsNames.map((operation, i) => {
    const values = set.datapoints!.map((d) => d.operationsDurationsNs?.[i]).filter((v): v is number => typeof v === 'number').sort((a, b) => a - b);
    const mid = values.length === 0 ? NaN : values.length % 2 ? values[(values.length - 1) / 2]! : (values[values.length / 2 - 1]! + values[values.length / 2]!) / 2;
    return { benchmark, operation, p50Ms: mid / 1e6, samples: values.length };
  });
}

/** Every tag of every stand-in is in the registry (a cached storage may lack newer ones). */
export async function registryHasAll(host: string, images: StandInImages): Promise<boolean> {
  for (const l of images.layouts) {
    for (const tag of l.tags) {
      const res = await fetch(`http://${host}/v2/${l.repository}/manifests/${tag}`, {
        method: 'HEAD',
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' },
      });
      await res.arrayBuffer();
      if (res.status !== 200) return false;
    }
  }
  return true;
}

interface CritestRun {
  exitCode: number | null;
  timedOut: boolean;
  outputFile: string;
}

/** The critest processes running; `stopped` once the phase's cleanup began (no new ones then). */
type Children = Set<ChildProcess> & { stopped?: boolean };

function runCritest(critest: string, args: string[], outputFile: string, timeoutMs: number, children: Children): Promise<CritestRun> {
  return new Promise((resolve, reject) => {
    void fsp.open(outputFile, 'w').then((out) => {
      if (children.stopped) {
        void out.close();
        return resolve({ exitCode: null, timedOut: false, outputFile });
      }
      const child = spawn(critest, args, { stdio: ['ignore', out.fd, out.fd], cwd: path.dirname(outputFile) });
      void out.close();
      children.add(child);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGINT'); // lets ginkgo run its cleanup nodes and write the report
        setTimeout(() => child.kill('SIGKILL'), 60_000).unref();
      }, timeoutMs);
      child.once('error', reject);
      child.once('exit', (code) => {
        clearTimeout(timer);
        children.delete(child);
        resolve({ exitCode: code, timedOut, outputFile });
      });
    }, reject);
  });
}

interface ShmSegment {
  shmid: number;
  size: number;
  nattch: number;
  cuid: number;
  /** Creation time, seconds since the epoch. */
  ctime: number;
}

/** System V shared memory segments (/proc/sysvipc/shm). */
export function parseSysvShm(text: string): ShmSegment[] {
  const [header, ...rows] = text.split('\n').filter((l) => l.trim());
  const cols = (header ?? '').trim().split(/\s+/);
  const at = (name: string) => cols.indexOf(name);
  return rows.map((row) => {
    const f = row.trim().split(/\s+/).map(Number);
    return { shmid: f[at('shmid')]!, size: f[at('size')]!, nattch: f[at('nattch')]!, cuid: f[at('cuid')]!, ctime: f[at('ctime')]! };
  });
}

/**
 * critest's HostIpc specs make a 1 MiB segment on the host with ipcmk and never remove it: remove the
 * unattached root-created ones of that size that appeared while our suite ran.
 */
async function removeLeakedShm(before: Set<number>, sinceSeconds: number): Promise<number> {
  const now = await fsp.readFile('/proc/sysvipc/shm', 'utf8').catch(() => '');
  const leaked = parseSysvShm(now).filter(
    (s) => !before.has(s.shmid) && s.size === 1048576 && s.nattch === 0 && s.cuid === 0 && s.ctime >= sinceSeconds,
  );
  for (const s of leaked) await run('ipcrm', ['-m', String(s.shmid)], { reject: false });
  return leaked.length;
}

async function junitCases(dir: string): Promise<JunitCase[]> {
  const files = (await fsp.readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.xml')).sort();
  const cases: JunitCase[] = [];
  for (const f of files) cases.push(...parseJunit(await fsp.readFile(path.join(dir, f), 'utf8')));
  return cases;
}

/** One report line per spec; specs a focus/skip filter left out are listed only when `withUnselected`. */
function reportCases(report: ConformanceReport, label: string, cases: JunitCase[], withUnselected: boolean): { passed: number; failed: number; skipped: number } {
  const counts = { passed: 0, failed: 0, skipped: 0 };
  for (const c of cases) {
    const notRun = NOT_RUN.find((s) => new RegExp(s.pattern).test(c.name));
    if (c.status === 'passed') {
      counts.passed++;
      report.add({ name: `${label}: ${c.name}`, passed: true });
    } else if (c.status === 'skipped' || c.status === 'pending') {
      const unselected = c.message.trim() === 'skipped';
      if (unselected && !withUnselected) continue;
      counts.skipped++;
      const why = unselected ? 'not selected (focus/skip filter)' : firstLine(c.message.replace(/^skipped\s*-?\s*/i, ''));
      report.skip(`${label}: ${c.name}`, notRun?.why ?? (why || 'skipped by critest'));
    } else {
      counts.failed++;
      report.add({ name: `${label}: ${c.name}`, passed: false, detail: `${c.status}: ${firstLine(c.message)}` });
    }
  }
  return counts;
}

async function tail(file: string, lines = 30): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}

/**
 * One critest run on a nodelet-cri whose default handler runs on `backend` (undefined: the test daemon's
 * default, runc); every report line starts with `label`; the benchmark only `withBenchmark`.
 */
export async function runCritestPhase(
  tools: Tools, report: ConformanceReport, backend: TestBackend | undefined, label: string, withBenchmark = true,
): Promise<void> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-critest-'));
  // The first phase keeps its logs in NODELET_CRITEST_LOGS itself, any other in a subdirectory named after it.
  const keepRoot = process.env.NODELET_CRITEST_LOGS;
  const keep = keepRoot && label !== 'critest' ? path.join(keepRoot, label) : keepRoot;
  const children: Children = new Set<ChildProcess>();
  let registry: RegistryProcess | undefined;
  let daemon: TestDaemon | undefined;
  // Starts in flight when a signal arrives are waited for, then undone.
  let registryStart: Promise<RegistryProcess> | undefined;
  let daemonStart: Promise<TestDaemon> | undefined;
  let cleaning: Promise<void> | undefined;
  // Set-up steps in flight (image build, storage copy, push): waited for before the temp dir goes.
  const inflight = new Set<Promise<unknown>>();
  const step = async <T>(p: Promise<T>): Promise<T> => {
    inflight.add(p);
    try {
      const value = await p;
      if (cleaning) throw new Error('critest phase interrupted');
      return value;
    } finally {
      inflight.delete(p);
    }
  };
  const cleanup = () =>
    (cleaning ??= (async () => {
      children.stopped = true;
      for (const c of children) c.kill('SIGKILL');
      await Promise.allSettled([...inflight]);
      daemon ??= await daemonStart?.catch(() => undefined);
      registry ??= await registryStart?.catch(() => undefined);
      if (daemon && keep) {
        await fsp.mkdir(keep, { recursive: true });
        await fsp.copyFile(daemon.logFile, path.join(keep, 'nodelet-cri.log')).catch(() => undefined);
      }
      await daemon?.cleanup().catch((err) => process.stderr.write(`critest phase: daemon cleanup: ${err}\n`));
      if (registry) await stopChild(registry.child);
      if (keep) await run('cp', ['-a', '--', ...(await fsp.readdir(work)).filter((f) => f !== 'storage').map((f) => path.join(work, f)), keep], { reject: false });
      await fsp.rm(work, { recursive: true, force: true });
    })());
  // run.ts runs it on SIGINT/SIGTERM too.
  const undo = new Cleanup();
  undo.add('critest phase: children, daemon, registry, temp dir', cleanup);

  try {
    let started = Date.now();
    const images = await step(buildCritestImages());
    const imagesMs = Date.now() - started;

    started = Date.now();
    const storage = path.join(work, 'storage');
    const cachedStorage = path.join(images.root, 'registry-storage');
    if (await pathExists(cachedStorage)) await step(run('cp', ['-a', cachedStorage, storage], { timeoutMs: 120_000 }));
    else await fsp.mkdir(storage);
    registryStart = startRegistryProcess(work, 'registry', storage, {});
    const startedRegistry = await step(registryStart);
    registry = startedRegistry;
    if (!(await registryHasAll(registry.host, images))) {
      await step(pushCritestImages(registry.host, images));
      if (!(await registryHasAll(registry.host, images))) throw new Error(`stand-in images missing from ${registry.host} after the push`);
      const tmp = `${cachedStorage}.${process.pid}.tmp`;
      await step(run('cp', ['-a', storage, tmp], { timeoutMs: 120_000 }));
      await fsp.rename(tmp, cachedStorage).catch(() => fsp.rm(tmp, { recursive: true, force: true }));
    }
    const registryMs = Date.now() - started;
    report.add({
      name: `${label}: stand-in images served`,
      passed: true,
      detail: `${images.layouts.reduce((n, l) => n + l.tags.length, 0)} tags in ${images.layouts.length} repositories on ${registry.host} (${images.busyboxSource}; build ${imagesMs} ms, registry ${registryMs} ms)`,
    });

    const mirrors = UPSTREAM_REGISTRIES.flatMap((r) => ['--registry-mirror', `${r}=http://${startedRegistry.host}`]);
    daemonStart = startTestDaemon({ backend, args: [...mirrors, '--insecure-registry', startedRegistry.host] });
    daemon = await step(daemonStart);

    // The validation suite.
    const suiteDir = path.join(work, 'suite');
    await fsp.mkdir(suiteDir);
    const endpoint = `unix://${daemon.socket}`;
    const skip = NOT_RUN.flatMap((s) => ['-ginkgo.skip', s.pattern]);
    const focus = process.env.NODELET_CRITEST_FOCUS ? ['-ginkgo.focus', process.env.NODELET_CRITEST_FOCUS] : [];
    const parallel = process.env.NODELET_CRITEST_PARALLEL ? ['-parallel', process.env.NODELET_CRITEST_PARALLEL] : [];
    started = Date.now();
    const shmBefore = new Set(parseSysvShm(await fsp.readFile('/proc/sysvipc/shm', 'utf8').catch(() => '')).map((s) => s.shmid));
    const suiteStartSeconds = Math.floor(started / 1000) - 1;
    undo.add('remove the shared memory segments critest left', () => removeLeakedShm(shmBefore, suiteStartSeconds));
    const suite = await runCritest(
      tools.critest,
      [
        '-runtime-endpoint', endpoint, '-image-endpoint', endpoint, '-ginkgo.junit-report', path.join(suiteDir, 'junit.xml'), '-ginkgo.no-color',
        '-ginkgo.timeout', `${Math.floor(SUITE_TIMEOUT_MS / 1000) - 30}s`, ...parallel, ...skip, ...focus,
      ],
      path.join(work, 'critest.log'),
      SUITE_TIMEOUT_MS,
      children,
    );
    if (cleaning) throw new Error('critest phase interrupted');
    const suiteSeconds = (Date.now() - started) / 1000;
    // Both runs list every spec; each reports its own: the benchmark specs are the "benchmark about" ones.
    const isBenchmark = (c: JunitCase) => /\bbenchmark about\b/.test(c.name);
    const isSuiteNode = (c: JunitCase) => c.name.startsWith('[') && !c.name.startsWith('[k8s.io]');
    const cases = (await junitCases(suiteDir)).filter((c) => !isBenchmark(c) && !(isSuiteNode(c) && c.status === 'passed'));
    if (cases.length === 0) {
      report.add({
        name: `${label}: validation suite ran`,
        passed: false,
        detail: `no JUnit report (exit ${suite.exitCode}${suite.timedOut ? ', timed out' : ''}):\n${await tail(suite.outputFile)}`,
      });
    }
    const counts = reportCases(report, label, cases, true);
    if (suite.timedOut) report.add({ name: `${label}: validation suite finished in time`, passed: false, detail: `stopped after ${SUITE_TIMEOUT_MS / 60_000} min` });
    process.stdout.write(`${label} validation: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped in ${suiteSeconds.toFixed(0)} s (exit ${suite.exitCode})\n`);

    // The streaming specs again, over WebSocket (v5.channel.k8s.io, v2.portforward.k8s.io) instead of SPDY.
    const focused = process.env.NODELET_CRITEST_FOCUS;
    if (!focused || new RegExp(focused).test('[k8s.io] Streaming runtime should support streaming interfaces')) {
      const wsDir = path.join(work, 'websocket');
      await fsp.mkdir(wsDir);
      started = Date.now();
      const ws = await runCritest(
        tools.critest,
        [
          '-runtime-endpoint', endpoint, '-image-endpoint', endpoint, '-ginkgo.junit-report', path.join(wsDir, 'junit.xml'), '-ginkgo.no-color',
          '-websocket-exec', '-websocket-attach', '-websocket-portforward', '-ginkgo.focus', '\\[k8s.io\\] Streaming',
        ],
        path.join(work, 'critest-websocket.log'),
        STREAMING_TIMEOUT_MS,
        children,
      );
      if (cleaning) throw new Error('critest phase interrupted');
      const wsCases = (await junitCases(wsDir)).filter((c) => !isBenchmark(c) && !(isSuiteNode(c) && c.status === 'passed'));
      const wsCounts = reportCases(report, `${label} (websocket)`, wsCases, false);
      if (wsCases.length === 0 || ws.timedOut) {
        report.add({ name: `${label} (websocket): streaming specs ran`, passed: false, detail: `exit ${ws.exitCode}${ws.timedOut ? ', timed out' : ''}:\n${await tail(ws.outputFile)}` });
      }
      process.stdout.write(`${label} streaming over WebSocket: ${wsCounts.passed} passed, ${wsCounts.failed} failed in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    }

    // The benchmarks.
    if (process.env.NODELET_CRITEST_FOCUS || !withBenchmark) return;
    const benchDir = path.join(work, 'benchmark');
    const benchReport = path.join(benchDir, 'junit');
    await fsp.mkdir(benchReport, { recursive: true });
    const params = path.join(benchDir, 'params.yaml');
    await fsp.writeFile(params, BENCHMARK_PARAMS);
    started = Date.now();
    const bench = await runCritest(
      tools.critest,
      [
        '-benchmark', '-runtime-endpoint', endpoint, '-image-endpoint', endpoint, '-ginkgo.no-color',
        '-benchmarking-params-file', params, '-benchmarking-output-dir', benchDir, '-ginkgo.junit-report', path.join(benchReport, 'junit.xml'),
      ],
      path.join(work, 'critest-benchmark.log'),
      BENCHMARK_TIMEOUT_MS,
      children,
    );
    if (cleaning) throw new Error('critest phase interrupted');
    const benchSeconds = (Date.now() - started) / 1000;
    const latencies: OperationLatency[] = [];
    for (const f of (await fsp.readdir(benchDir)).filter((f) => f.endsWith('.json')).sort()) {
      const data = JSON.parse(await fsp.readFile(path.join(benchDir, f), 'utf8')) as unknown;
      latencies.push(...benchmarkLatencies(f.replace(/_benchmark_data\.json$|\.json$/, ''), data));
    }
    const benchCases = (await junitCases(benchReport)).filter((c) => isBenchmark(c) || (isSuiteNode(c) && c.status !== 'passed'));
    for (const c of benchCases) {
      if (c.status === 'passed') report.add({ name: `${label} benchmark: ${c.name}`, passed: true });
      else if (c.status === 'skipped') report.skip(`${label} benchmark: ${c.name}`, firstLine(c.message) || 'skipped by critest');
      else report.add({ name: `${label} benchmark: ${c.name}`, passed: false, detail: `${c.status}: ${firstLine(c.message)}` });
    }
    report.add({
      name: `${label} benchmark: ran to the end`,
      passed: bench.exitCode === 0 && !bench.timedOut,
      detail:
        `exit ${bench.exitCode}${bench.timedOut ? ' (timed out)' : ''} in ${benchSeconds.toFixed(0)} s; p50 ms: ` +
        (latencies.map((l) => `${l.benchmark} ${l.operation} ${l.p50Ms.toFixed(1)}`).join(', ') || 'none') +
        (bench.exitCode === 0 ? '' : `\n${await tail(bench.outputFile, 15)}`),
    });
    if (latencies.length > 0) {
      process.stdout.write(`${label} benchmark p50 (ms):\n`);
      for (const l of latencies) process.stdout.write(`  ${l.benchmark.padEnd(22)} ${l.operation.padEnd(28)} ${l.p50Ms.toFixed(1).padStart(9)}  (n=${l.samples})\n`);
    }
  } finally {
    await undo.run();
    await cleanup(); // when a signal started it, wait for it to finish
    if (keep) process.stdout.write(`critest phase: logs kept in ${keep}\n`);
  }
}
