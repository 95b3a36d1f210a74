// Starts a real nodelet-cri process with its own temp root, run root, socket and CNI config for a test.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { connectCri, type CriClient } from './cri-client.js';
import { testConflist } from './cni.js';
import { socketAnswers } from '../../src/common/unix-socket.js';
import { findProcesses } from '../../scripts/bench/procs.js';

// dist/test/helpers → the repository's bin/nodelet-cri (which loads dist/src/cri/main.js).
const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'nodelet-cri');

export interface TestDaemonOptions {
  /** Extra flags, e.g. ['--insecure-registry', host]. */
  args?: string[];
  /** Write a CNI config of our own (unique bridge and subnet) instead of nodelet's default. */
  network?: boolean;
  /** Extra environment of the first start (e.g. NODELET_TEST_CRASH_AT). */
  env?: Record<string, string>;
  /** Run under `node` with these flags (plus the entry point's own), e.g. --cpu-prof. */
  nodeFlags?: string[];
  /** Which backend runs the default handler (default: NODELET_TEST_BACKEND, else runc). */
  backend?: TestBackend;
  /** The nodelet-cri entry point (default: this checkout's bin/nodelet-cri), e.g. a baseline build's in a bench. */
  bin?: string;
}

export type TestBackend = 'runc' | 'containerd';

/** The backends a backend-neutral test file runs once each for: NODELET_TEST_BACKENDS (comma-separated), else both. */
export function testBackends(): TestBackend[] {
  const list = (process.env.NODELET_TEST_BACKENDS ?? 'runc,containerd').split(',').map((b) => b.trim()).filter(Boolean);
  for (const b of list) if (b !== 'runc' && b !== 'containerd') throw new Error(`NODELET_TEST_BACKENDS: unknown backend ${b}`);
  return list as TestBackend[];
}

/** The containerd namespace nodelet-cri uses by default (its containers live there). */
export const TEST_CONTAINERD_NAMESPACE = 'nodelet';

export interface TestDaemon {
  socket: string;
  root: string;
  runRoot: string;
  cniConfDir: string;
  bridge: string;
  subnet: string;
  client: CriClient;
  proc: ChildProcess;
  logFile: string;
  backend: TestBackend;
  /** The containerd nodelet-cri started for itself (containerd backend): its socket. */
  containerdSocket?: string;
  /** The handler names RuntimeStatus lists besides the default (''), extra handlers of the test included. */
  handlerNames: string[];
  /** The exit of a container is on record in the backend (conmon's exit file; a stopped containerd task), daemon up or not. */
  exitRecorded(id: string): Promise<boolean>;
  /** Ids of the containers (sandboxes included) the default handler's backend still has. */
  backendContainers(): Promise<string[]>;
  /** SIGKILLs the daemon (containers keep running under conmon). */
  kill(): Promise<void>;
  /** Starts the daemon again on the same state (with `env` added to the test's environment, if given). */
  restart(opts?: { env?: Record<string, string> }): Promise<void>;
  /** Removes every pod (stop + remove through CRI), stops the daemon, deletes temp dirs and the bridge. */
  cleanup(): Promise<void>;
}

async function waitForSocket(socket: string, proc: ChildProcess, logFile: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    // The file alone is not enough: a stale socket from a killed daemon exists too.
    if (existsSync(socket) && (await socketAnswers(socket))) return;
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const log = await fsp.readFile(logFile, 'utf8').catch(() => '');
  throw new Error(`nodelet-cri did not start (exit ${proc.exitCode ?? proc.signalCode}):\n${log.slice(-4000)}`);
}

export async function startTestDaemon(opts: TestDaemonOptions = {}): Promise<TestDaemon> {
  const tag = randomBytes(4).toString('hex');
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-test-'));
  const root = path.join(base, 'root');
  // Unix socket paths are limited to 108 bytes: keep the run root short.
  const runRoot = path.join('/run/nodelet-test', tag);
  const socket = path.join(runRoot, 'cri.sock');
  const cniConfDir = path.join(base, 'cni');
  const bridge = `nlt${tag}`.slice(0, 15);
  const octet = 16 + (parseInt(tag.slice(0, 4), 16) % 200);
  const third = parseInt(tag.slice(4, 6), 16);
  const subnet = `10.${octet}.${third}.0/24`;
  await fsp.mkdir(cniConfDir, { recursive: true });
  await fsp.writeFile(path.join(cniConfDir, '10-test.conflist'), testConflist(`nodelet-test-${tag}`, bridge, subnet, path.join(base, 'ipam')));
  const logFile = path.join(base, 'daemon.log');
  const backend = opts.backend ?? ((process.env.NODELET_TEST_BACKEND as TestBackend | undefined) || 'runc');
  // containerd: the default handler on containerd's runc shim, nodelet-cri running its own containerd.
  const backendArgs = backend === 'containerd' ? ['--runtime-handler', 'containerd-runc=containerd:io.containerd.runc.v2', '--default-runtime', 'containerd-runc'] : [];
  const bin = opts.bin ?? MAIN;
  const args = [
    bin,
    '--socket', socket,
    '--root', root,
    '--run-root', runRoot,
    '--cni-conf-dir', cniConfDir,
    '--log-level', 'debug',
    ...backendArgs,
    // NODELET_TEST_GRPC_SERVER=grpc-js runs the tests' daemons on grpc-js instead of the builtin HTTP/2 gRPC server.
    ...(process.env.NODELET_TEST_GRPC_SERVER ? ['--grpc-server', process.env.NODELET_TEST_GRPC_SERVER] : []),
    ...(opts.args ?? []),
  ];
  const spawnDaemon = async (env?: Record<string, string>) => {
    const out = await fsp.open(logFile, 'a');
    // Run the executable itself, so the node flags of its #! line apply as in production.
    const [file, argv] = opts.nodeFlags ? [process.execPath, [...entryNodeFlags(bin), ...opts.nodeFlags, ...args]] : [args[0]!, args.slice(1)];
    const entry = opts.nodeFlags ? entryEnv(bin) : {};
    const proc = spawn(file, argv, { stdio: ['ignore', out.fd, out.fd], env: { ...process.env, ...entry, ...env } });
    await out.close();
    await waitForSocket(socket, proc, logFile);
    return proc;
  };
  let proc: ChildProcess;
  try {
    proc = await spawnDaemon(opts.env);
  } catch (err) {
    await fsp.rm(base, { recursive: true, force: true });
    await fsp.rm(runRoot, { recursive: true, force: true });
    throw err;
  }
  const extraHandlers = (opts.args ?? []).flatMap((a, i, all) => (all[i - 1] === '--runtime-handler' ? [a.split('=')[0]!] : []));
  const ctr = async (ctrArgs: string[]): Promise<string> =>
    execFileSync('ctr', ['--address', path.join(runRoot, 'containerd', 'containerd.sock'), '-n', TEST_CONTAINERD_NAMESPACE, ...ctrArgs], { encoding: 'utf8', timeout: 20_000 });
  const daemon: TestDaemon = {
    handlerNames: [...new Set(['runc', 'crun', ...(backend === 'containerd' ? ['containerd-runc'] : []), ...extraHandlers])],
    async exitRecorded(id) {
      if (backend === 'runc') return existsSync(path.join(runRoot, 'exits', id));
      const rows = (await ctr(['tasks', 'ls']).catch(() => '')).split('\n').map((l) => l.trim().split(/\s+/));
      return rows.some((r) => r[0] === id && r[2] === 'STOPPED');
    },
    async backendContainers() {
      if (backend === 'runc') {
        const out = execFileSync('runc', ['--root', path.join(runRoot, 'runtime', 'runc'), 'list', '-q'], { encoding: 'utf8' });
        return out.split('\n').filter(Boolean);
      }
      return (await ctr(['containers', 'ls', '-q'])).split('\n').filter(Boolean);
    },
    socket, root, runRoot, cniConfDir, bridge, subnet, logFile, proc, backend,
    containerdSocket: backend === 'containerd' ? path.join(runRoot, 'containerd', 'containerd.sock') : undefined,
    client: connectCri(socket),
    async kill() {
      daemon.client.close();
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    },
    async restart(restartOpts) {
      proc = await spawnDaemon(restartOpts?.env);
      daemon.proc = proc;
      daemon.client = connectCri(socket);
    },
    async cleanup() {
      try {
        if (proc.exitCode === null && proc.signalCode === null) {
          // Best effort: a daemon the test already stopped has nothing to answer.
          const { items } = await daemon.client.runtime('ListPodSandbox', {});
          for (const s of items) {
            await daemon.client.runtime('StopPodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
            await daemon.client.runtime('RemovePodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
          }
          const { containers } = await daemon.client.runtime('ListContainers', {});
          for (const c of containers) await daemon.client.runtime('RemoveContainer', { container_id: c.id }).catch(() => undefined);
        }
      } catch {
        // reported by the test itself
      } finally {
        daemon.client.close();
        if (proc.exitCode === null && proc.signalCode === null) {
          const exited = new Promise((r) => proc.once('exit', r));
          proc.kill('SIGTERM');
          await exited;
        }
        if (backend === 'containerd') await stopTestContainerd(root, runRoot);
        await removeBridge(bridge);
        await fsp.rm(runRoot, { recursive: true, force: true }).catch(() => undefined);
        await fsp.rm(base, { recursive: true, force: true }).catch(() => undefined);
      }
    },
  };
  return daemon;
}

/** The node flags on an entry point's #! line (bin/nodelet-cri's, or a baseline build's), so they apply as in production. */
export function entryNodeFlags(bin: string): string[] {
  return entryLineWords(bin).filter((w) => w.startsWith('--'));
}

/** The NAME=value assignments of an entry point's `#!/usr/bin/env -S` line (env sets them before node starts). */
export function entryEnv(bin: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const w of entryLineWords(bin)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(w);
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

function entryLineWords(bin: string): string[] {
  const first = readFileSync(bin, 'utf8').split('\n')[0] ?? '';
  return first.startsWith('#!') ? first.split(/\s+/) : [];
}

/**
 * After nodelet-cri is gone: the containerd it ran (still up when the daemon was SIGKILLed), shims of tasks a
 * failed test left behind, and mounts under the daemon's dirs.
 */
async function stopTestContainerd(root: string, runRoot: string): Promise<void> {
  const socket = path.join(runRoot, 'containerd', 'containerd.sock');
  const configFile = path.join(runRoot, 'containerd', 'config.toml');
  const procs = await findProcesses((a) => (a[0]?.endsWith('/containerd') === true && a.includes(configFile)) || (a[0]?.includes('containerd-shim') === true && a.includes(socket)));
  for (const p of procs) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (let i = 0; i < 100 && procs.some((p) => existsSync(`/proc/${p.pid}`)); i++) await new Promise((r) => setTimeout(r, 50));
  const mounts = (await fsp.readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m.startsWith(`${root}/`) || m.startsWith(`${runRoot}/`))
    .reverse();
  for (const m of mounts) {
    await new Promise<void>((resolve) => {
      const p = spawn('umount', ['-l', m], { stdio: 'ignore' });
      p.on('exit', () => resolve());
      p.on('error', () => resolve());
    });
  }
}

async function removeBridge(name: string): Promise<void> {
  await new Promise<void>((resolve) => {
    const p = spawn('ip', ['link', 'del', name], { stdio: 'ignore' });
    p.on('exit', () => resolve());
    p.on('error', () => resolve());
  });
}
