// `npm run conformance [-- PHASE...]`: the real components judge nodelet.
// Phases (default: all, in this order):
//   critest             critest's validation suite and benchmark against nodelet-cri (stand-in images from a local registry)
//   critest-containerd  the validation suite and streaming specs again, nodelet-cri's default handler on the containerd
//                       backend (its own containerd, runc shim): the same specs pass on both backends (no benchmark)
//   kubelet             node checks: the real kubelet on nodelet-cri, joined to a control plane of our own on 127.0.0.1
//   agent               the same node checks with nodelet-agent on nodelet-cri
// kubelet and agent share one control plane and registry (started by the first, stopped after the last);
// NODELET_CONFORMANCE_BACKEND=containerd runs critest, kubelet and agent on the containerd backend instead of
// runc (critest-containerd is then left out of the default list: it would repeat critest).
// NODELET_TEST_GRPC_SERVER=grpc-js runs every nodelet-cri of the run with --grpc-server grpc-js (test/helpers/daemon.ts).
// SIGINT/SIGTERM run every pending cleanup before exiting 130.
// Exits non-zero on any failure; the last line is `conformance: N passed, M failed`.
import { conformanceBackend, findTools } from './tools.js';
import { ConformanceReport } from './report.js';
import { runCritestPhase } from './critest.js';
import { runNodeChecksPhase, SharedCluster } from './node-checks.js';
import { Cleanup, runAllCleanups } from './cleanup.js';

const PHASES = ['critest', 'critest-containerd', 'kubelet', 'agent'] as const;
type Phase = (typeof PHASES)[number];

async function main(): Promise<number> {
  const asked = process.argv.slice(2);
  const unknown = asked.filter((a) => !(PHASES as readonly string[]).includes(a));
  if (unknown.length > 0) {
    process.stderr.write(`conformance: unknown phase ${unknown.join(', ')} (phases: ${PHASES.join(', ')})\n`);
    return 2;
  }
  let tools;
  let backend;
  try {
    backend = conformanceBackend();
    tools = findTools();
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const phases: Phase[] = asked.length > 0 ? (asked as Phase[]) : PHASES.filter((p) => !(p === 'critest-containerd' && backend === 'containerd'));
  const report = new ConformanceReport();
  // The node phases share one control plane and registry, stopped after the last phase.
  const clusterCleanup = new Cleanup();
  const cluster = new SharedCluster(tools, clusterCleanup);
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`conformance: ${signal}: cleaning up\n`);
    runAllCleanups().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  for (const phase of phases) {
    const started = Date.now();
    process.stdout.write(`== conformance phase ${phase}\n`);
    try {
      if (phase === 'critest') await runCritestPhase(tools, report, backend, 'critest');
      // Without the benchmark (75 s): the phase is about the specs passing; scripts/bench compares speed.
      else if (phase === 'critest-containerd') await runCritestPhase(tools, report, 'containerd', 'critest-containerd', false);
      else await runNodeChecksPhase(tools, report, phase === 'kubelet' ? 'kubelet' : 'nodelet-agent', cluster);
    } catch (err) {
      report.add({ name: `${phase}: phase ran to the end`, passed: false, detail: (err as Error)?.stack ?? String(err) });
    }
    process.stdout.write(`== phase ${phase} took ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
  await clusterCleanup.run();
  if (report.skipped.length > 0) {
    process.stdout.write(`not run (${report.skipped.length}):\n${report.skipped.map((s) => `  ${s.name} — ${s.detail}`).join('\n')}\n`);
  }
  if (report.failed.length > 0) {
    process.stdout.write(`failed (${report.failed.length}):\n${report.failed.map((f) => `  ${f.name}`).join('\n')}\n`);
  }
  process.stdout.write(`${report.summary()}\n`);
  return report.failed.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`conformance: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
