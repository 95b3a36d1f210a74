// Percentiles and the benchmark tables, as aligned text for the terminal and as markdown.
import os from 'node:os';
import { run } from '../../src/common/exec.js';
import type { MemoryFigures } from './procs.js';
import type { WorkloadResult } from './workload.js';

/** Nearest-rank percentile of the samples (p in 0..100). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

export type Table = { header: string[]; rows: string[][]; alignRight: boolean[] };

function ms(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return '—';
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function mib(bytes: number | undefined): string {
  return bytes === undefined || Number.isNaN(bytes) ? '—' : (bytes / (1024 * 1024)).toFixed(1);
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !b || Number.isNaN(a) || Number.isNaN(b)) return '—';
  return `${(a / b).toFixed(2)}×`;
}

/** Milliseconds per operation name (a workload's or the agent benchmark's). */
export type Samples = { samples: Map<string, number[]> };

/** Operation | first p50 | first p95 | second p50 | second p95 | ratio (p50, first/second). */
export function sideBySideTable(first: Samples | undefined, second: Samples | undefined, names: [string, string], title = 'operation'): Table {
  const ops = [...new Set([...(first?.samples.keys() ?? []), ...(second?.samples.keys() ?? [])])];
  const rows = ops.map((op) => {
    const a = first?.samples.get(op);
    const b = second?.samples.get(op);
    const a50 = a ? percentile(a, 50) : undefined;
    const b50 = b ? percentile(b, 50) : undefined;
    return [
      `${op} (n=${a?.length ?? b?.length ?? 0})`,
      ms(a50),
      ms(a ? percentile(a, 95) : undefined),
      ms(b50),
      ms(b ? percentile(b, 95) : undefined),
      ratio(a50, b50),
    ];
  });
  const [x, y] = names;
  return {
    header: [title, `${x} p50 ms`, `${x} p95 ms`, `${y} p50 ms`, `${y} p95 ms`, `ratio p50 (${x}/${y})`],
    rows,
    alignRight: [false, true, true, true, true, true],
  };
}

/** Operation | nodelet p50 | nodelet p95 | containerd p50 | containerd p95 | ratio (p50). */
export function latencyTable(nodelet: Samples | undefined, containerd: Samples | undefined): Table {
  return sideBySideTable(nodelet, containerd, ['nodelet', 'containerd']);
}

/** The agent's pod start times, one row per measure, in the latency table's columns. */
export function agentTable(nodelet: Samples | undefined, containerd: Samples | undefined): Table {
  return sideBySideTable(nodelet, containerd, ['nodelet', 'containerd'], 'agent, one pod at a time');
}

/** nodelet-agent against the real kubelet (same runtime, real apiserver); `missing` fills the one row when it was not measured. */
export function agentKubeletTable(agent: Samples | undefined, kubelet: Samples | undefined, missing?: string): Table {
  const table = sideBySideTable(agent, kubelet, ['nodelet-agent', 'kubelet'], 'node agent on nodelet-cri (runc), real apiserver');
  if (missing !== undefined && table.rows.length === 0) table.rows.push([`missing: ${missing.split('\n')[0]!.replace(/\|/g, '/')}`, '—', '—', '—', '—', '—']);
  return table;
}

export function memoryTable(
  nodelet: WorkloadResult | undefined,
  containerd: WorkloadResult | undefined,
  memoryContainers: number,
  listContainers: number,
  largeMemoryContainers = 0,
): Table {
  const row = (what: string, pick: (r: WorkloadResult) => MemoryFigures | undefined, field: keyof MemoryFigures) => {
    const a = nodelet ? pick(nodelet)?.[field] : undefined;
    const b = containerd ? pick(containerd)?.[field] : undefined;
    return [what, mib(a), mib(b), ratio(a, b)];
  };
  const nMon = nodelet?.memory.monitors?.count ?? '?';
  const cMon = containerd?.memory.monitors?.count ?? '?';
  return {
    header: ['memory (MiB)', 'nodelet', 'containerd', 'ratio'],
    rows: [
      row('daemon RSS, idle (after warm-up)', (r) => r.memory.idle, 'rss'),
      row(`daemon RSS, ${memoryContainers} running containers`, (r) => r.memory.withContainers, 'rss'),
      row(`daemon RSS, ${listContainers} running containers`, (r) => r.memory.withAllListContainers, 'rss'),
      ...(largeMemoryContainers > 0 ? [row(`daemon RSS, ${largeMemoryContainers} running containers`, (r) => r.memory.withLargeContainers, 'rss')] : []),
      row('daemon RSS, idle at the end of the run', (r) => r.memory.idleAfter, 'rss'),
      row('daemon PSS, idle (after warm-up)', (r) => r.memory.idle, 'pss'),
      row(`daemon PSS, ${memoryContainers} running containers`, (r) => r.memory.withContainers, 'pss'),
      row(`daemon PSS, ${listContainers} running containers`, (r) => r.memory.withAllListContainers, 'pss'),
      ...(largeMemoryContainers > 0 ? [row(`daemon PSS, ${largeMemoryContainers} running containers`, (r) => r.memory.withLargeContainers, 'pss')] : []),
      row('one monitor RSS (median conmon / containerd-shim-runc-v2)', (r) => r.memory.monitors?.one, 'rss'),
      row('one monitor PSS (median)', (r) => r.memory.monitors?.one, 'pss'),
      row(`all monitors RSS, ${memoryContainers} containers (${nMon} conmon / ${cMon} shims)`, (r) => r.memory.monitors?.total, 'rss'),
      row(`all monitors PSS, ${memoryContainers} containers`, (r) => r.memory.monitors?.total, 'pss'),
    ],
    alignRight: [false, true, true, true],
  };
}

export function renderText(t: Table): string {
  const widths = t.header.map((h, i) => Math.max(h.length, ...t.rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (t.alignRight[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  return [line(t.header), widths.map((w) => '-'.repeat(w)).join('  '), ...t.rows.map(line)].join('\n');
}

export function renderMarkdown(t: Table): string {
  const sep = t.alignRight.map((r) => (r ? '---:' : '---'));
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(t.header), line(sep), ...t.rows.map(line)].join('\n');
}

async function firstLine(file: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(file, args, { timeoutMs: 10_000 });
    return stdout.split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

export interface MachineInfo {
  cpus: string;
  memory: string;
  kernel: string;
  os: string;
  node: string;
  runc: string;
  conmon: string;
  containerd: string;
  cgroup: string;
}

export async function machineInfo(): Promise<MachineInfo> {
  const cpus = os.cpus();
  const osRelease = await import('node:fs').then((fs) => fs.promises.readFile('/etc/os-release', 'utf8')).catch(() => '');
  const pretty = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(osRelease)?.[1] ?? 'unknown';
  const cgroup2Only = await import('node:fs').then((fs) => fs.promises.access('/sys/fs/cgroup/cgroup.controllers').then(() => true, () => false));
  return {
    cpus: `${cpus.length} × ${cpus[0]?.model ?? 'unknown'}`,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: os.release(),
    os: pretty,
    node: process.version,
    runc: await firstLine('runc', ['--version']),
    conmon: await firstLine('conmon', ['--version']),
    containerd: await firstLine('containerd', ['--version']),
    cgroup: cgroup2Only ? 'v2 (unified)' : 'v1 (hybrid)',
  };
}
