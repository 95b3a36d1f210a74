// Per-step trace of each RPC from a nodelet-cri debug log (--log-level debug): for every method, its mean
// time and the child processes that ran inside its calls (the `exec` lines ending within a call's window,
// and the `spawn` lines of long-running children), with how long each took and how long its fork + exec
// held the event loop (spawnMs). Meant for a log of calls made one at a time (critest -benchmark with
// *NumberParallel: 1, e.g. `node dist/scripts/bench/critest.js --runtimes nodelet --nodelet-log-level debug --keep DIR`).
//
//   node dist/scripts/bench/rpc-trace.js DAEMON.log
import { readFileSync } from 'node:fs';

interface Line {
  time: number;
  msg: string;
  rpc?: string;
  ms?: number;
  spawnMs?: number;
  cmd?: string;
  args?: string[];
}

interface Step {
  calls: number;
  ms: number;
  spawnMs: number;
}

function stepName(l: Line): string {
  const words = (l.args ?? []).filter((a) => !a.startsWith('/') && !a.startsWith('--root') && a.length < 30).slice(0, 3);
  return `${l.msg} ${(l.cmd ?? '').split('/').pop()} ${words.join(' ')}`.trim();
}

export function traceRpcs(text: string): string {
  const lines: Line[] = [];
  for (const raw of text.split('\n')) {
    if (!raw.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(raw) as Line);
    } catch {
      // a partial last line
    }
  }
  const children = lines.filter((l) => l.msg === 'exec' || l.msg === 'spawn');
  const methods = new Map<string, { calls: number; ms: number; steps: Map<string, Step> }>();
  for (const call of lines.filter((l) => l.msg === 'ok' && l.rpc && l.ms !== undefined)) {
    const name = call.rpc!.split('/').pop()!;
    const m = methods.get(name) ?? { calls: 0, ms: 0, steps: new Map<string, Step>() };
    methods.set(name, m);
    m.calls++;
    m.ms += call.ms!;
    const start = call.time - call.ms! - 1;
    for (const c of children) {
      if (c.time < start || c.time > call.time + 1) continue;
      const key = stepName(c);
      const s = m.steps.get(key) ?? { calls: 0, ms: 0, spawnMs: 0 };
      m.steps.set(key, s);
      s.calls++;
      s.ms += c.ms ?? 0;
      s.spawnMs += c.spawnMs ?? 0;
    }
  }
  const out: string[] = [];
  for (const [name, m] of [...methods].sort((a, b) => b[1].ms / b[1].calls - a[1].ms / a[1].calls)) {
    out.push(`${name}: ${m.calls} calls, mean ${(m.ms / m.calls).toFixed(1)} ms`);
    for (const [key, s] of [...m.steps].sort((a, b) => b[1].ms - a[1].ms)) {
      out.push(
        `    ${key.padEnd(48)} ×${(s.calls / m.calls).toFixed(1)} a call, mean ${(s.ms / s.calls).toFixed(1)} ms` +
          (s.spawnMs ? `, fork+exec on the event loop ${(s.spawnMs / s.calls).toFixed(1)} ms` : ''),
      );
    }
  }
  return out.join('\n');
}

if (process.argv[2]) process.stdout.write(`${traceRpcs(readFileSync(process.argv[2], 'utf8'))}\n`);
