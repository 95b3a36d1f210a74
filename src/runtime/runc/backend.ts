// The runc backend: one conmon per container starts the OCI runtime (runc or crun), holds the
// container's stdio, writes its CRI log and exit file and serves attach. The daemon is never the
// container's parent, so containers outlive it; everything here can be rebuilt from files and
// `runtime state` after a restart. This facade puts the parts behind RuntimeBackend: paths.ts (where
// files live), runtime-cli.ts (runc commands), conmon.ts (the monitor), exit-files.ts, exec.ts,
// control.ts and attach.ts (control fifo, attach socket), leftovers.ts (processes runc lost).
import { promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { run } from '../../common/exec.js';
import { deadlineExceeded, errorMessage, failedPrecondition, hasCode, internal, invalidArgument, notFound } from '../../common/errors.js';
import { ensureDir, pathExists, readJsonIfExists } from '../../common/fsutil.js';
import { logger, type Logger } from '../../common/log.js';
import { cgroupDirFor } from '../../stats/cgroup.js';
import { cgroupsPathFor } from '../../oci/container-spec.js';
import type { OciResources, OciSpec } from '../../oci/types.js';
import type {
  AttachSession,
  BackendCreateOptions,
  BackendEnvironment,
  BackendFeatures,
  BackendState,
  BackendStopOptions,
  ContainerExit,
  ExecOptions,
  ExecSession,
  ExecSyncOptions,
  ExecSyncResult,
  RuntimeBackend,
} from '../backend.js';
import { resendMissedSignal } from '../missed-signal.js';
import { Conmon } from './conmon.js';
import { connectAttach, resizeMessage, REOPEN_LOG_MESSAGE, writeControl } from './control.js';
import { RuncExec } from './exec.js';
import { ExitFiles } from './exit-files.js';
import { cgroupProcesses, killLeftovers } from './leftovers.js';
import { checkId, RuncPaths } from './paths.js';
import { processAlive, procStat, signalNumber, sleep } from './processes.js';
import { RuntimeCli } from './runtime-cli.js';

/**
 * A status call takes a conmon seen alive this recently as still alive (no /proc read). A conmon killed out of
 * band, with no exit file, then shows as EXITED up to this much later; every exit conmon saw shows at once.
 */
const MONITOR_SIGHTING_MS = 500;

export { commandNotRunnable } from './runtime-cli.js';
export { EXEC_OUTPUT_LIMIT } from './exec.js';

export interface RuncBackendOptions {
  conmonPath: string;
  /** runc or crun: an absolute path or a name looked up in PATH. */
  runtimePath: string;
  /** The runtime's --root: our own directory so several daemons don't see each other's containers. */
  runtimeRoot: string;
  /** conmon writes `<exitDir>/<id>` holding the exit code when a container exits. */
  exitDir: string;
  /** conmon's attach sockets are reached at `<socketDir>/<id>/attach` (a link to the bundle); any length works. */
  socketDir: string;
  /** Per-container conmon files (pid files, exit, oom, our monitor record, the bundle); default `<dirname(exitDir)>/conmon`. */
  persistRoot?: string;
  /** conmon --log-level (error, warn, info, debug, trace). */
  conmonLogLevel?: string;
  /** How long a create may take before it is abandoned (default 60 s). */
  createTimeoutMs?: number;
}

export class RuncBackend implements RuntimeBackend {
  readonly type = 'runc';
  readonly paths: RuncPaths;
  readonly cli: RuntimeCli;
  readonly conmon: Conmon;
  readonly exitFiles: ExitFiles;
  private readonly execs: RuncExec;
  private readonly log: Logger;
  /** Per container: whether its spec gives it a PID namespace of its own (see signal()). */
  private readonly ownPidNamespace = new Map<string, boolean>();

  constructor(opts: RuncBackendOptions) {
    this.paths = new RuncPaths(opts);
    this.cli = new RuntimeCli(opts.runtimePath, this.paths.runtimeRoot);
    this.log = logger({ component: 'runc-backend', runtime: path.basename(opts.runtimePath) });
    this.conmon = new Conmon({ conmonPath: opts.conmonPath, paths: this.paths, logLevel: opts.conmonLogLevel ?? 'info', createTimeoutMs: opts.createTimeoutMs ?? 60_000 });
    this.exitFiles = new ExitFiles(this.paths, this.log);
    this.execs = new RuncExec({ paths: this.paths, cli: this.cli, conmon: this.conmon, bundleOf: (id) => this.bundleOf(id) });
  }

  // ---- start-up ----

  check(): Promise<string | undefined> {
    return this.cli.check();
  }

  async readiness(): Promise<string[]> {
    const problems: string[] = [];
    for (const bin of [this.conmon.opts.conmonPath, this.cli.path]) {
      const res = await run(bin, ['--version'], { reject: false, timeoutMs: 5000 }).catch((e: unknown) => ({ exitCode: -1, stderr: errorMessage(e) }));
      if (res.exitCode !== 0) problems.push(`${bin} is not usable`);
    }
    return problems;
  }

  /**
   * At daemon start: temp files of monitor records cut short by a kill, exec process specs (they carry
   * the container's env) and terminal exec session dirs of execs no one waits for any more; bundles
   * made readable by others go back to root only.
   */
  async cleanStale(): Promise<void> {
    const root = this.paths.persistRoot;
    await removeStaleTempFiles(root);
    for (const id of await fsp.readdir(root).catch(() => [] as string[])) {
      const dir = path.join(root, id);
      await removeStaleTempFiles(dir);
      for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
        if (/^exec-[^/.]+(\.(json|pid))?$/.test(name)) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
      }
      await fsp.chmod(path.join(dir, 'bundle'), 0o700).catch(() => undefined);
      await fsp.chmod(path.join(dir, 'bundle', 'config.json'), 0o600).catch(() => undefined);
    }
  }

  async features(): Promise<BackendFeatures> {
    return { recursiveReadOnlyMounts: await this.cli.supportsRecursiveReadOnly() };
  }

  // ---- lifecycle ----

  /** Writes the bundle and starts conmon, which runs `runtime create`; resolves when the container exists (not started). */
  async create(opts: BackendCreateOptions): Promise<{ pid: number; monitorPid: number }> {
    const id = checkId(opts.id);
    const log = this.log.child({ containerId: id });
    if (opts.rootfsMounts?.length) throw invalidArgument(`container ${id}: this backend runs on a rootfs the caller mounted; rootfs mounts were given`);
    if (await this.cli.knows(id)) {
      throw failedPrecondition(`container ${id} already exists in runtime root ${this.paths.runtimeRoot}`);
    }
    const runtime = await this.cli.binary();
    const persistDir = this.paths.persistDir(id);
    const logPath = path.resolve(opts.logPath);
    await Promise.all([
      ensureDir(this.paths.exitDir),
      ensureDir(this.paths.socketDir),
      ensureDir(this.paths.runtimeRoot, 0o700),
      ensureDir(path.dirname(logPath)),
    ]);
    // A leftover exit file or persist dir of an earlier container with this id would fake an exit.
    await this.exitFiles.remove(id);
    await fsp.rm(persistDir, { recursive: true, force: true });
    this.conmon.forget(id);
    this.ownPidNamespace.delete(id);
    await ensureDir(persistDir, 0o700);
    // The bundle lives in the persist dir: it goes with everything else conmon keeps for the container.
    const bundleDir = this.paths.bundleDir(id);
    await ensureDir(bundleDir, 0o700);
    await fsp.writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(opts.spec), { mode: 0o600 });

    const args = this.conmon.args(opts, id, runtime, bundleDir, logPath, persistDir);
    const started = Date.now();
    let pid: number;
    try {
      pid = await this.conmon.launch(id, args, persistDir);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'container create failed; cleaning up');
      await this.delete(id).catch((cleanupErr: unknown) => log.warn({ err: errorMessage(cleanupErr) }, 'cleanup after failed create'));
      throw err;
    }
    const conmonPid = await this.conmon.readPid(id);
    this.conmon.remember(id, conmonPid);
    await this.conmon.writeRecord({ id, bundleDir, logPath, conmonPid, pid, createdAt: new Date().toISOString() });
    log.debug({ pid, conmonPid, ms: Date.now() - started }, 'container created');
    return { pid, monitorPid: conmonPid };
  }

  start(id: string): Promise<void> {
    return this.cli.start(id);
  }

  kill(id: string, signal: string | number, all = false): Promise<void> {
    return this.cli.kill(id, signal, all);
  }

  async stop(id: string, timeoutSec: number, stopSignal: string | number = 'SIGTERM', opts: BackendStopOptions = {}): Promise<void> {
    // conmon's exit file means it is over: no runtime call needed.
    if (await this.exitFiles.read(id)) return;
    // While conmon holds the init process it runs (or waits to start): `runc state` would only say so.
    if (!(await this.heldInitPid(id))) {
      const state = await this.cli.state(id);
      if (!state) {
        // The runtime lost its state, the kernel did not: what still runs in the container's cgroup is ours to kill.
        if ((await killLeftovers(id, this.log)) > 0) {
          await this.waitStopped(id, 5000, opts.signal);
          return;
        }
        throw notFound(`container ${id} not found in runtime`);
      }
      if (state.status === 'stopped') {
        await this.waitStopped(id, 2000, opts.signal);
        return;
      }
      if (state.status === 'paused') await this.cli.resume(id);
    }
    if (timeoutSec > 0 && !opts.escalate?.aborted) {
      await this.signal(id, stopSignal);
      const stopped = new AbortController();
      void this.redeliverMissedSignal(id, stopSignal, stopped.signal).catch((err: unknown) => this.log.debug({ containerId: id, err: errorMessage(err) }, 'watching for a missed stop signal failed'));
      const done = await this.waitStopped(id, timeoutSec * 1000, opts.signal, opts.escalate).finally(() => stopped.abort());
      if (done) return;
      this.log.info({ containerId: id, timeoutSec, escalated: Boolean(opts.escalate?.aborted) }, 'container still running after its stop signal; killing');
    }
    await this.signal(id, 'SIGKILL');
    if (await this.waitStopped(id, 2000, opts.signal)) return;
    // A container frozen by hand (runc pause) takes no signal until thawed.
    if ((await this.cli.state(id))?.status === 'paused') await this.cli.resume(id);
    await this.cli.kill(id, 'SIGKILL');
    if (!(await this.waitStopped(id, 30_000, opts.signal))) throw deadlineExceeded(`container ${id} did not die after SIGKILL`);
  }

  /**
   * The container's init pid while its conmon (the parent that reaps it) is alive and it is not yet
   * reaped: until then the pid cannot be reused, so kill(2) on it reaches the container.
   */
  private async heldInitPid(id: string): Promise<number | undefined> {
    const conmonPid = await this.conmon.pidOf(id);
    if (!conmonPid) return undefined;
    const pid = (await this.conmon.readRecord(id))?.pid;
    if (!pid) return undefined;
    const stat = procStat(pid);
    return stat && stat.parentPid === conmonPid && stat.state !== 'Z' ? pid : undefined;
  }

  /**
   * Sends a signal to the container's init. SIGKILL to a container with its own PID namespace is sent from
   * here while conmon holds the init (that is all `runc kill` does, and it kills the whole namespace): no
   * runc child, which costs a fork of this daemon. Every other signal goes through `runc kill`: a stop
   * signal sent a moment after the start, before the command set its handler, is ignored by a namespace's
   * init (critest's StopContainer right after StartContainer then waited out its timeout); runc's own few
   * milliseconds are what every other runtime leaves it too.
   */
  private async signal(id: string, signal: string | number): Promise<void> {
    const number = signalNumber(signal);
    const direct = number === osConstants.signals.SIGKILL && (await this.ownsPidNamespace(id));
    const pid = direct ? await this.heldInitPid(id) : undefined;
    if (pid === undefined) {
      await this.cli.kill(id, signal);
      return;
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      if (!hasCode(err, 'ESRCH')) throw internal(`cannot signal container ${id} with ${signal}: ${errorMessage(err)}`);
    }
  }

  /** Sends the stop signal again if the container's init set its handler only after it came (missed-signal.ts). */
  private async redeliverMissedSignal(id: string, stopSignal: string | number, until: AbortSignal): Promise<void> {
    const number = signalNumber(stopSignal);
    if (number === undefined || number === osConstants.signals.SIGKILL) return;
    const pid = await this.heldInitPid(id);
    if (pid === undefined) return;
    const resent = await resendMissedSignal(pid, number, until, () => this.cli.kill(id, stopSignal));
    if (resent) this.log.debug({ containerId: id, signal: stopSignal }, 'init set its handler after the stop signal; sent it again');
  }

  /** Whether the container's spec gives it a PID namespace of its own (asked once an id; the bundle does not change). */
  private async ownsPidNamespace(id: string): Promise<boolean> {
    let owns = this.ownPidNamespace.get(id);
    if (owns === undefined) {
      const spec = await readJsonIfExists<OciSpec>(path.join(this.paths.bundleDir(id), 'config.json')).catch(() => undefined);
      owns = spec?.linux?.namespaces?.some((ns) => ns.type === 'pid' && !ns.path) ?? false;
      this.ownPidNamespace.set(id, owns);
    }
    return owns;
  }

  /**
   * True once the exit file exists, or the runtime says stopped and no conmon is left to write it; false
   * when timeoutMs passed or `cutShort` fired. Throws the call's reason when `signal` aborts.
   */
  private async waitStopped(id: string, timeoutMs: number, signal?: AbortSignal, cutShort?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      signal?.throwIfAborted();
      if (await this.exitFiles.read(id)) return true;
      if (!(await this.conmon.pidOf(id))) {
        const state = await this.cli.state(id);
        if (!state || state.status === 'stopped') return true;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || cutShort?.aborted) return false;
      const slice = [AbortSignal.timeout(Math.min(remaining, 1000)), ...(signal ? [signal] : []), ...(cutShort ? [cutShort] : [])];
      try {
        await this.exitFiles.wait(id, AbortSignal.any(slice));
        return true;
      } catch {
        // slice over, escalated or cancelled: the checks above decide
      }
    }
  }

  /** Removes the container from the runtime and conmon's files for it (its bundle too); fine to call again. */
  async delete(id: string): Promise<void> {
    checkId(id);
    // Never created in the runtime (an undo, a handler whose binary is gone): no runtime call needed.
    const known = await this.cli.forceDelete(id);
    // runc delete --force kills all it knows; what runs on in a cgroup it forgot is killed here.
    if (!known) await killLeftovers(id, this.log);
    // conmon writes the exit file once the container is gone; let it finish so nothing reappears.
    const conmonPid = await this.conmon.pidOf(id);
    if (conmonPid) {
      const deadline = Date.now() + 5000;
      while (processAlive(conmonPid) && Date.now() < deadline) await sleep(20);
      if (processAlive(conmonPid)) {
        this.log.warn({ containerId: id, conmonPid }, 'conmon outlived its container; killing it');
        try {
          process.kill(conmonPid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await Promise.all([
      this.exitFiles.remove(id),
      fsp.rm(this.paths.socketLink(id), { force: true, recursive: true }),
      fsp.rm(this.paths.persistDir(id), { force: true, recursive: true }),
    ]);
    this.conmon.forget(id);
    this.ownPidNamespace.delete(id);
  }

  async state(id: string): Promise<BackendState | undefined> {
    const state = await this.cli.state(id);
    if (state) return { status: state.status, pid: state.pid };
    // runc forgot it (its --root was wiped) but the kernel did not: what runs in its cgroup is still the container.
    if ((await cgroupProcesses(id)).length > 0) return { status: 'running', pid: 0, untracked: true };
    return undefined;
  }

  async exitOf(id: string): Promise<ContainerExit | undefined> {
    const exit = await this.exitFiles.read(id);
    if (exit) return { id, exitCode: exit.exitCode, exitedAt: exit.finishedAt, oomKilled: await this.exitFiles.oomKilled(id).catch(() => false) };
    // No exit file: conmon may have been killed with (or after) the container, and nobody will ever write one.
    const unmonitored = await this.unmonitoredExit(id);
    if (!unmonitored) return undefined;
    return { id, exitCode: unmonitored.exitCode, exitedAt: new Date(), reason: unmonitored.message, lost: unmonitored.lost, oomKilled: await this.exitFiles.oomKilled(id).catch(() => false) };
  }

  private async unmonitoredExit(id: string): Promise<{ exitCode: number; message: string; lost?: boolean } | undefined> {
    if (await this.conmon.runningWithin(id, MONITOR_SIGHTING_MS)) return undefined;
    if (await this.exitFiles.read(id)) return undefined; // conmon finished normally: the exit file says it all
    const state = await this.cli.state(id);
    if (state && state.status !== 'stopped') return undefined;
    if (state) {
      // containerd reports a task whose shim died as killed (128 + SIGKILL); the real code is unknowable.
      return { exitCode: 137, message: 'the container monitor (conmon) was killed; the container is gone and its exit code is unknown' };
    }
    if ((await cgroupProcesses(id)).length > 0) return undefined;
    return { exitCode: 255, message: 'the container monitor (conmon) and the runtime lost the container', lost: true };
  }

  async *exits(signal: AbortSignal): AsyncIterable<ContainerExit> {
    for await (const exit of this.exitFiles.follow(signal)) {
      yield { id: exit.id, exitCode: exit.exitCode, exitedAt: exit.finishedAt, oomKilled: await this.exitFiles.oomKilled(exit.id).catch(() => false) };
    }
  }

  /** The container's conmon while it runs. */
  monitorPid(id: string): Promise<number | undefined> {
    return this.conmon.pidOf(id);
  }

  // ---- processes and stdio ----

  exec(id: string, opts: ExecOptions): Promise<ExecSession> {
    const env = opts.process.env ?? [];
    if (opts.tty) return this.execs.terminalExec(id, opts.process.args, { stdin: opts.stdin, width: opts.width ?? 80, height: opts.height ?? 24, env });
    return this.execs.pipeExec(id, opts.process.args, env, opts.stdin);
  }

  execSync(id: string, cmd: string[], opts: ExecSyncOptions): Promise<ExecSyncResult> {
    return this.execs.execSync(id, cmd, opts.timeoutSec, opts.env ?? []);
  }

  /** Connects to the container's stdio through conmon (output from now on; stdin when created with stdin). */
  attach(id: string): Promise<AttachSession> {
    return connectAttach(this.paths.attachSocket(id));
  }

  async resize(id: string, width: number, height: number): Promise<void> {
    await this.writeControl(id, resizeMessage(width, height));
  }

  // ---- resources, logs, stats ----

  updateResources(id: string, resources: OciResources): Promise<void> {
    return this.cli.update(id, resources);
  }

  /** Asks conmon to reopen the log file (after rotation) and waits until the file exists again. */
  async reopenLog(id: string): Promise<void> {
    await this.writeControl(id, REOPEN_LOG_MESSAGE);
    const record = await this.conmon.readRecord(id);
    if (!record) return;
    const deadline = Date.now() + 5000;
    while (!(await pathExists(record.logPath))) {
      if (Date.now() > deadline) throw deadlineExceeded(`conmon did not reopen log ${record.logPath} of container ${id}`);
      await sleep(10);
    }
  }

  cgroupOf(id: string, cgroupParent: string | undefined): string {
    // The spec builders set linux.cgroupsPath from cgroupsPathFor; runc's cgroup drivers lay it out as cgroupDirFor reads it.
    return cgroupDirFor(cgroupsPathFor(cgroupParent, id));
  }

  // ---- helpers ----

  private async writeControl(id: string, message: string): Promise<void> {
    await writeControl(path.join(await this.bundleOf(id), 'ctl'), message, `container ${id}`);
  }

  private async bundleOf(id: string): Promise<string> {
    const record = await this.conmon.readRecord(id);
    if (record) return record.bundleDir;
    const state = await this.cli.state(id);
    if (!state?.bundle) throw notFound(`container ${id} not found in runtime`);
    return state.bundle;
  }
}

async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('.') && name.endsWith('.tmp')) await fsp.rm(path.join(dir, name), { force: true });
  }
}

/** The runc backend of a handler: its runtime binary under conmon, state under the run root. */
export function runcBackendFor(env: BackendEnvironment): RuncBackend {
  const runDir = env.config.runRoot;
  return new RuncBackend({
    conmonPath: env.config.runtime.conmonPath,
    runtimePath: env.handler.path,
    runtimeRoot: env.handler.root ?? path.join(runDir, 'runtime', env.name),
    exitDir: path.join(runDir, 'exits'),
    socketDir: path.join(runDir, 's'),
  });
}
