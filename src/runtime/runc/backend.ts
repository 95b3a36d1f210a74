// The runc backend: one conmon per container starts the OCI runtime (runc or crun), holds the
// container's stdio, writes its CRI log and exit file and serves attach. The daemon is never the
// container's parent, so containers outlive it; everything here can be rebuilt from files and
// `runtime state` after a restart.
import { existsSync as pathExistsSync, promises as fsp, readFileSync, statSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { constants as osConstants, release as osRelease } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { run, spawnChild } from '../../common/exec.js';
import { ensureDir, pathExists, readJsonIfExists, writeJsonAtomic } from '../../common/fsutil.js';
import {
  deadlineExceeded,
  errorMessage,
  failedPrecondition,
  hasCode,
  internal,
  invalidArgument,
  notFound,
} from '../../common/errors.js';
import { logger, type Logger } from '../../common/log.js';
import { crashPoint } from '../../common/crash-point.js';
import { openAttach, type AttachOptions, type AttachSession } from './attach.js';

export type { AttachSession };

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
  /** Per-container conmon files (pid files, exit, oom, our monitor record); default `<dirname(exitDir)>/conmon`. */
  persistRoot?: string;
  /** conmon --log-level (error, warn, info, debug, trace). */
  conmonLogLevel?: string;
  /** How long a create may take before it is abandoned (default 60 s). */
  createTimeoutMs?: number;
}

export interface CreateOptions {
  id: string;
  /** The OCI runtime spec, written as the bundle's config.json; the rootfs path is in it. */
  spec?: object;
  /** A bundle made by the caller (holding config.json) instead of `spec`. */
  bundleDir?: string;
  /** Mounts making up the rootfs: this backend needs the caller to have mounted it, so none may be given. */
  rootfsMounts?: unknown[];
  /** The CRI-format log file conmon writes. */
  logPath: string;
  tty: boolean;
  stdin: boolean;
  stdinOnce: boolean;
  /** Bytes; conmon truncates the log when it grows beyond this. */
  logMaxSize?: number;
}

export interface StopOptions {
  /** The caller gave up (cancelled RPC): stop waiting and throw its reason. */
  signal?: AbortSignal;
  /** Aborted by a later timeout-0 stop: skip what is left of the grace period and kill now. */
  escalate?: AbortSignal;
}

export type ContainerStatus = 'created' | 'running' | 'paused' | 'stopped';

export interface RuntimeState {
  status: ContainerStatus;
  pid: number;
  bundle?: string;
}

export interface ExitInfo {
  exitCode: number;
  /** mtime of the exit file. */
  finishedAt: Date;
}

export interface ExecSyncOptions {
  /** Extra `KEY=value` entries; they override the container's own. */
  env?: string[];
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
  timedOut: boolean;
}

/** What we remember about a container's monitor, beside conmon's own files. */
interface MonitorRecord {
  id: string;
  bundleDir: string;
  logPath: string;
  conmonPid: number;
  pid: number;
  createdAt: string;
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const UNIX_SOCKET_PATH_MAX = 107;
/** open(2)'s O_PATH (Linux), which Node's fs.constants leaves out. */
const O_PATH = 0o10000000;
/** Each of stdout and stderr of an ExecSync is cut at this size so a chatty command can't exhaust memory. */
export const EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024;
const EXIT_POLL_MS = 250;
const CTL_RESIZE = 1;
const CTL_REOPEN_LOG = 2;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A grace period that does not keep the process alive by itself. */
function grace(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** runc's words for a command that cannot be started: the exit code a shell gives and runc's message. */
export function commandNotRunnable(stderr: string): { exitCode: number; message: string } | undefined {
  const msg = /msg="((?:[^"\\]|\\.)*)"/.exec(stderr)?.[1]?.replace(/\\(.)/g, '$1') ?? stderr;
  // `exec: "<cmd>": ...` is runc's report of the execve of the command itself (not of the runtime's own files).
  const execOf = /exec: "(?:[^"\\]|\\.)*": (.*)$/.exec(msg)?.[1];
  if (execOf === undefined) return undefined;
  if (/executable file not found|no such file or directory/i.test(execOf)) return { exitCode: 127, message: msg };
  if (/permission denied|exec format error|is a directory|not a directory/i.test(execOf)) return { exitCode: 126, message: msg };
  return undefined;
}

function isUnknownContainer(stderr: string): boolean {
  return /does not exist|not exist|No such file or directory|not found/i.test(stderr);
}

function isNotRunning(stderr: string): boolean {
  return /not running|process already finished|no such process|container is stopped/i.test(stderr);
}

/**
 * State and start time (clock ticks after boot: with the pid, unique for the boot) from /proc/PID/stat;
 * undefined when the process is gone. Read synchronously: procfs answers from kernel memory, and this is
 * on the path of every status call, where a promise round trip through the thread pool costs ~10× more.
 */
function procStat(pid: number): { state: string; startTime: string } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', startTime: fields[19] ?? '' };
}

/** True while the process exists and is not a zombie waiting for its reaper. */
async function processAlive(pid: number): Promise<boolean> {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}

async function resolveExecutable(file: string): Promise<string> {
  if (file.includes('/')) return path.resolve(file);
  for (const dir of (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    const candidate = path.join(dir, file);
    try {
      await fsp.access(candidate, fsp.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw failedPrecondition(`runtime binary ${file} not found in PATH`);
}

/** A byte sink that keeps at most `limit` bytes and drops the rest. */
class CappedBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    const room = this.limit - this.size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (kept.length < chunk.length) this.truncated = true;
    this.chunks.push(kept);
    this.size += kept.length;
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

export class RuncBackend {
  readonly conmonPath: string;
  readonly runtimePath: string;
  readonly runtimeRoot: string;
  readonly exitDir: string;
  readonly socketDir: string;
  readonly persistRoot: string;
  private readonly conmonLogLevel: string;
  private readonly createTimeoutMs: number;
  private resolvedRuntime: string | undefined;
  private recursiveReadOnly: Promise<boolean> | undefined;
  /** conmon processes verified for an id (pid and start time), so status calls need not re-read monitor.json and cmdline. */
  private readonly knownConmons = new Map<string, { pid: number; startTime: string }>();
  private readonly log: Logger;

  constructor(opts: RuncBackendOptions) {
    this.conmonPath = opts.conmonPath;
    this.runtimePath = opts.runtimePath;
    this.runtimeRoot = path.resolve(opts.runtimeRoot);
    this.exitDir = path.resolve(opts.exitDir);
    this.socketDir = path.resolve(opts.socketDir);
    this.persistRoot = path.resolve(opts.persistRoot ?? path.join(path.dirname(this.exitDir), 'conmon'));
    this.conmonLogLevel = opts.conmonLogLevel ?? 'info';
    this.createTimeoutMs = opts.createTimeoutMs ?? 60_000;
    this.log = logger({ component: 'runc-backend', runtime: path.basename(opts.runtimePath) });
  }

  // ---- paths ----

  persistDir(id: string): string {
    return path.join(this.persistRoot, checkId(id));
  }

  /** The bundle (config.json, conmon's ctl and winsz fifos and attach socket) of a container created here. */
  bundleDirOf(id: string): string {
    return path.join(this.persistDir(id), 'bundle');
  }

  exitFilePath(id: string): string {
    return path.join(this.exitDir, checkId(id));
  }

  /** conmon's attach socket (SOCK_SEQPACKET): frames out are `<1 stdout|2 stderr><bytes>`, stdin goes in raw. */
  attachSocketPath(id: string): string {
    return path.join(this.socketLinkPath(id), 'attach');
  }

  /** conmon's `<socketDir>/<id>` link to the bundle, one byte shorter when it would be exactly 107 bytes (as conmon makes it). */
  private socketLinkPath(id: string): string {
    const link = path.join(this.socketDir, checkId(id));
    return link.length === UNIX_SOCKET_PATH_MAX ? link.slice(0, -1) : link;
  }

  /** Connects to the container's stdio through conmon (output from now on; stdin when created with stdin). */
  async attach(id: string): Promise<AttachSession> {
    return this.connectAttach(this.attachSocketPath(id));
  }

  private async connectAttach(socketPath: string, opts: AttachOptions = {}): Promise<AttachSession> {
    if (socketPath.length <= UNIX_SOCKET_PATH_MAX) return openAttach(socketPath, socketPath, opts);
    // Too long for sun_path (a long --run-root): reach the socket through a short /proc/self/fd path, as conmon binds it.
    let dir: fsp.FileHandle;
    try {
      dir = await fsp.open(path.dirname(socketPath), O_PATH | fsp.constants.O_DIRECTORY);
    } catch (err) {
      throw failedPrecondition(`cannot attach to ${socketPath}: ${errorMessage(err)}`);
    }
    try {
      return await openAttach(`/proc/self/fd/${dir.fd}/attach`, socketPath, opts);
    } finally {
      await dir.close();
    }
  }

  // ---- lifecycle ----

  /** Starts conmon, which runs `runtime create`; resolves when the container exists (not started). */
  async create(opts: CreateOptions): Promise<{ pid: number; conmonPid: number }> {
    const id = checkId(opts.id);
    const log = this.log.child({ containerId: id });
    if (opts.rootfsMounts?.length) throw invalidArgument(`container ${id}: this backend runs on a rootfs the caller mounted; rootfs mounts were given`);
    // runc and crun both keep a directory per container under --root; checking it spares a runtime exec.
    if (await pathExists(path.join(this.runtimeRoot, id))) {
      throw failedPrecondition(`container ${id} already exists in runtime root ${this.runtimeRoot}`);
    }

    const runtime = await this.runtimeBinary();
    const persistDir = this.persistDir(id);
    const logPath = path.resolve(opts.logPath);
    await Promise.all([
      ensureDir(this.exitDir),
      ensureDir(this.socketDir),
      ensureDir(this.runtimeRoot, 0o700),
      ensureDir(path.dirname(logPath)),
    ]);
    // A leftover exit file or persist dir of an earlier container with this id would fake an exit.
    await fsp.rm(this.exitFilePath(id), { force: true });
    await fsp.rm(persistDir, { recursive: true, force: true });
    this.knownConmons.delete(id);
    await ensureDir(persistDir, 0o700);
    // The bundle lives in the persist dir: it goes with everything else conmon keeps for the container.
    let bundleDir = this.bundleDirOf(id);
    if (opts.spec) {
      await ensureDir(bundleDir, 0o700);
      await fsp.writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(opts.spec), { mode: 0o600 });
    } else if (opts.bundleDir && (await pathExists(path.join(opts.bundleDir, 'config.json')))) {
      bundleDir = path.resolve(opts.bundleDir);
    } else {
      throw invalidArgument(`container ${id}: no spec and no bundle with a config.json`);
    }

    const args = this.conmonArgs(opts, id, runtime, bundleDir, logPath, persistDir);
    const started = Date.now();
    let pid: number;
    try {
      pid = await this.launchConmon(id, args, persistDir);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'container create failed; cleaning up');
      await this.delete(id).catch((cleanupErr: unknown) => log.warn({ err: errorMessage(cleanupErr) }, 'cleanup after failed create'));
      throw err;
    }
    const conmonPid = await this.readConmonPid(id);
    const record: MonitorRecord = { id, bundleDir, logPath, conmonPid, pid, createdAt: new Date().toISOString() };
    await writeJsonAtomic(path.join(persistDir, 'monitor.json'), record);
    log.debug({ pid, conmonPid, ms: Date.now() - started }, 'container created');
    return { pid, conmonPid };
  }

  /** The conmon argv for a create (without the binary), exposed for logs and tests. */
  conmonArgs(opts: CreateOptions, id: string, runtime: string, bundleDir: string, logPath: string, persistDir: string): string[] {
    const args = [
      '--api-version', '1',
      '-c', id,
      '-u', id,
      '-n', id,
      '-r', runtime,
      '-b', bundleDir,
      '-p', path.join(persistDir, 'pidfile'),
      '-P', path.join(persistDir, 'conmon.pid'),
      '-l', `k8s-file:${logPath}`,
      '--exit-dir', this.exitDir,
      '--persist-dir', persistDir,
      '--socket-dir-path', this.socketDir,
      '--log-level', this.conmonLogLevel,
      '--runtime-arg', `--root=${this.runtimeRoot}`,
    ];
    if (opts.logMaxSize !== undefined && opts.logMaxSize > 0) args.push('--log-size-max', String(Math.floor(opts.logMaxSize)));
    if (opts.stdin) args.push('-i');
    if (opts.stdin && !opts.stdinOnce) args.push('--leave-stdin-open');
    if (opts.tty) args.push('-t');
    return args;
  }

  /**
   * Runs conmon with a sync pipe on fd 3 and waits for its `{"data": pid}` report. conmon forks
   * itself away (its daemon half is reparented, not our child) and keeps the pipe's write end, so
   * the report, not EOF, marks success; EOF or a negative `data` is a failure.
   */
  private async launchConmon(id: string, args: string[], persistDir: string): Promise<number> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      _OCI_SYNCPIPE: '3',
    };
    if (process.env.XDG_RUNTIME_DIR) env.XDG_RUNTIME_DIR = process.env.XDG_RUNTIME_DIR;
    const child = spawnChild(this.conmonPath, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env,
      extendEnv: false,
      cwd: persistDir, // conmon drops an `oom` file into its cwd as well
      detached: true,
      cleanup: false,
      buffer: false,
      reject: false,
    });
    crashPoint('runc.create.conmon-launched');
    void child.then(undefined, () => undefined);
    const syncPipe = child.stdio[3] as Readable;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 16_384) stderr += chunk.toString('utf8');
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      if (stderr.length < 16_384) stderr += chunk.toString('utf8');
    });

    let firstExitCode: number | null | undefined;
    const firstExited = new Promise<void>((resolve) => {
      child.once('exit', (code) => {
        firstExitCode = code;
        resolve();
      });
      child.once('error', () => resolve());
    });

    const report = await new Promise<{ data: number; message?: string } | Error>((resolve) => {
      let text = '';
      let settled = false;
      const settle = (value: { data: number; message?: string } | Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      };
      const timer = setTimeout(
        () => settle(deadlineExceeded(`conmon did not report container ${id} within ${this.createTimeoutMs} ms`)),
        this.createTimeoutMs,
      );
      syncPipe.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        const newline = text.indexOf('\n');
        if (newline < 0) return;
        try {
          const parsed = JSON.parse(text.slice(0, newline)) as { data?: unknown; message?: unknown };
          if (typeof parsed.data !== 'number') throw new Error('no numeric data');
          settle({ data: parsed.data, message: typeof parsed.message === 'string' ? parsed.message : undefined });
        } catch (err) {
          settle(internal(`conmon sent an unreadable sync message for ${id}: ${JSON.stringify(text.slice(0, 200))}: ${errorMessage(err)}`));
        }
      });
      syncPipe.once('error', (err) => settle(internal(`conmon sync pipe of ${id}: ${errorMessage(err)}`)));
      syncPipe.once('close', () => settle(internal(`conmon exited without reporting container ${id}`)));
      void firstExited.then(() => {
        if (firstExitCode !== 0) settle(internal(`conmon for ${id} exited with ${firstExitCode ?? 'a signal'}`));
      });
    });
    syncPipe.destroy();

    if (report instanceof Error) {
      await Promise.race([firstExited, grace(2000)]);
      if (!child.killed && firstExitCode === undefined) child.kill('SIGKILL');
      const detail = stderr.trim();
      throw detail ? internal(`${report.message}: ${detail.slice(0, 2000)}`, report) : report;
    }
    if (report.data <= 0) {
      throw internal(`runtime failed to create container ${id}: ${(report.message ?? '').trim() || `code ${report.data}`}`);
    }
    // The first conmon process only forks and writes the conmon pid file; give it its moment.
    await Promise.race([firstExited, grace(5000)]);
    child.stdout?.destroy();
    child.stderr?.destroy();
    child.unref();
    return report.data;
  }

  private async readConmonPid(id: string): Promise<number> {
    const file = path.join(this.persistDir(id), 'conmon.pid');
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        const pid = Number.parseInt(await fsp.readFile(file, 'utf8'), 10);
        if (pid > 0) return pid;
      } catch (err) {
        if (!hasCode(err, 'ENOENT')) throw err;
      }
      await sleep(20);
    }
    throw internal(`conmon for ${id} did not write its pid file ${file}`);
  }

  /** The pid of the container's conmon while it runs, undefined once it has gone. */
  async conmonPid(id: string): Promise<number | undefined> {
    // Seen before: the same pid with the same start time is the same process, so one /proc read answers.
    const known = this.knownConmons.get(id);
    if (known) {
      const stat = procStat(known.pid);
      if (stat?.startTime === known.startTime) return stat.state === 'Z' ? undefined : known.pid;
      this.knownConmons.delete(id);
    }
    const record = await this.monitorRecord(id);
    let pid = record?.conmonPid;
    if (!pid) {
      const text = await fsp.readFile(path.join(this.persistDir(id), 'conmon.pid'), 'utf8').catch(() => '');
      pid = Number.parseInt(text, 10) || undefined;
    }
    const stat = pid ? procStat(pid) : undefined;
    if (!pid || !stat || stat.state === 'Z') return undefined;
    // Guard against pid reuse: the process must still be conmon for this id.
    const cmdline = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const argv = cmdline.split('\0');
    if (!argv[0]?.endsWith('conmon') || !argv.includes(id)) return undefined;
    this.knownConmons.set(id, { pid, startTime: stat.startTime });
    return pid;
  }

  async start(id: string): Promise<void> {
    const res = await this.runtime(['start', checkId(id)]);
    if (res.exitCode !== 0) {
      if (isUnknownContainer(res.stderr)) throw notFound(`container ${id} not found in runtime`);
      throw failedPrecondition(`cannot start container ${id}: ${res.stderr.trim()}`);
    }
  }

  /** The runtime's view of the container, undefined when the runtime does not know it. */
  async state(id: string): Promise<RuntimeState | undefined> {
    // runc and crun keep a directory per container under --root: none means the runtime does not know it.
    if (!(await pathExists(path.join(this.runtimeRoot, checkId(id))))) return undefined;
    const res = await this.runtime(['state', id]);
    if (res.exitCode !== 0) {
      if (isUnknownContainer(res.stderr)) return undefined;
      throw internal(`runtime state ${id}: ${res.stderr.trim()}`);
    }
    const parsed = JSON.parse(res.stdout) as { status?: string; pid?: number; bundle?: string };
    const status = parsed.status as ContainerStatus;
    if (!['created', 'running', 'paused', 'stopped'].includes(status)) {
      throw internal(`runtime state ${id}: unknown status ${String(parsed.status)}`);
    }
    return { status, pid: parsed.pid ?? 0, bundle: parsed.bundle };
  }

  /** Ids and states of every container in our runtime root. */
  async list(): Promise<Array<{ id: string } & RuntimeState>> {
    const res = await this.runtime(['list', '--format', 'json']);
    if (res.exitCode !== 0) throw internal(`runtime list: ${res.stderr.trim()}`);
    const parsed = JSON.parse(res.stdout || 'null') as Array<{ id: string; status: ContainerStatus; pid: number; bundle?: string }> | null;
    return (parsed ?? []).map((c) => ({ id: c.id, status: c.status, pid: c.pid, bundle: c.bundle }));
  }

  /** Sends a signal; a container that already stopped is left alone. */
  async kill(id: string, signal: string | number, all = false): Promise<void> {
    const args = ['kill'];
    if (all) args.push('--all');
    args.push(checkId(id), String(signal));
    const res = await this.runtime(args);
    if (res.exitCode === 0) return;
    if (isUnknownContainer(res.stderr)) throw notFound(`container ${id} not found in runtime`);
    if (isNotRunning(res.stderr)) return;
    throw internal(`cannot signal container ${id} with ${signal}: ${res.stderr.trim()}`);
  }

  /**
   * Sends stopSignal, waits up to timeoutSec for the exit, then SIGKILL (at once when timeoutSec is 0).
   * Resolves once the exit is recorded; stopping a stopped container does nothing.
   */
  async stop(id: string, timeoutSec: number, stopSignal: string | number = 'SIGTERM', opts: StopOptions = {}): Promise<void> {
    // conmon's exit file means it is over: no runtime call needed.
    if (await this.readExit(id)) return;
    const state = await this.state(id);
    if (!state) {
      // The runtime lost its state, the kernel did not: what still runs in the container's cgroup is ours to kill.
      if ((await this.killLeftovers(id)) > 0) {
        await this.waitStopped(id, 5000, opts.signal);
        return;
      }
      throw notFound(`container ${id} not found in runtime`);
    }
    if (state.status === 'stopped') {
      await this.waitStopped(id, 2000, opts.signal);
      return;
    }
    if (state.status === 'paused') await this.runtime(['resume', id]);
    if (timeoutSec > 0 && !opts.escalate?.aborted) {
      await this.kill(id, stopSignal);
      if (await this.waitStopped(id, timeoutSec * 1000, opts.signal, opts.escalate)) return;
      this.log.info({ containerId: id, timeoutSec, escalated: Boolean(opts.escalate?.aborted) }, 'container still running after its stop signal; killing');
    }
    await this.kill(id, 'SIGKILL');
    if (!(await this.waitStopped(id, 30_000, opts.signal))) throw deadlineExceeded(`container ${id} did not die after SIGKILL`);
  }

  /**
   * True once the exit file exists, or the runtime says stopped and no conmon is left to write it; false
   * when timeoutMs passed or `cutShort` fired. Throws the call's reason when `signal` aborts.
   */
  private async waitStopped(id: string, timeoutMs: number, signal?: AbortSignal, cutShort?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      signal?.throwIfAborted();
      if (await this.readExit(id)) return true;
      if (!(await this.conmonPid(id))) {
        const state = await this.state(id);
        if (!state || state.status === 'stopped') return true;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0 || cutShort?.aborted) return false;
      const slice = [AbortSignal.timeout(Math.min(remaining, 1000)), ...(signal ? [signal] : []), ...(cutShort ? [cutShort] : [])];
      try {
        await this.waitExit(id, AbortSignal.any(slice));
        return true;
      } catch {
        // slice over, escalated or cancelled: the checks above decide
      }
    }
  }

  /** Removes the container from the runtime and conmon's files for it; fine to call again. */
  async delete(id: string): Promise<void> {
    checkId(id);
    // Never created in the runtime (an undo, a handler whose binary is gone): no runtime call needed.
    let known = await pathExists(path.join(this.runtimeRoot, id));
    if (known) {
      const res = await this.runtime(['delete', '--force', id]);
      if (res.exitCode !== 0 && !isUnknownContainer(res.stderr)) {
        throw internal(`cannot delete container ${id}: ${res.stderr.trim()}`);
      }
      known = res.exitCode === 0;
    }
    // runc delete --force kills all it knows; what runs on in a cgroup it forgot is killed here.
    if (!known) await this.killLeftovers(id);
    // conmon writes the exit file once the container is gone; let it finish so nothing reappears.
    const conmonPid = await this.conmonPid(id);
    if (conmonPid) {
      const deadline = Date.now() + 5000;
      while ((await processAlive(conmonPid)) && Date.now() < deadline) await sleep(20);
      if (await processAlive(conmonPid)) {
        this.log.warn({ containerId: id, conmonPid }, 'conmon outlived its container; killing it');
        try {
          process.kill(conmonPid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await Promise.all([
      fsp.rm(this.exitFilePath(id), { force: true }),
      fsp.rm(this.socketLinkPath(id), { force: true, recursive: true }),
      fsp.rm(this.persistDir(id), { force: true, recursive: true }),
    ]);
    this.knownConmons.delete(id);
  }

  /** Why the runtime binary cannot be used (missing, not executable, `--version` fails), or undefined when it can. */
  async checkRuntime(): Promise<string | undefined> {
    let binary: string;
    try {
      binary = await resolveExecutable(this.runtimePath);
      const st = await fsp.stat(binary);
      if (!st.isFile()) return `${binary} is not a file`;
      await fsp.access(binary, fsp.constants.X_OK);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return `${this.runtimePath} does not exist`;
      if (hasCode(err, 'EACCES')) return `${this.runtimePath} is not executable`;
      return errorMessage(err);
    }
    const res = await run(binary, ['--version'], { reject: false, timeoutMs: 10_000 }).catch((err: unknown) => ({ exitCode: -1, stderr: errorMessage(err) }));
    if (res.exitCode !== 0) return `${binary} --version failed: ${String(res.stderr).trim().slice(0, 200) || `exit code ${res.exitCode}`}`;
    return undefined;
  }

  // ---- processes the runtime lost ----

  /** Live processes in the container's cgroups (found from /proc, so it works when the runtime forgot the container). */
  async cgroupProcesses(id: string): Promise<Array<{ pid: number; cgroups: string[] }>> {
    checkId(id);
    const leaves = [`/${id}`, `/nodelet-${id}.scope`];
    const found: Array<{ pid: number; cgroups: string[] }> = [];
    for (const name of await fsp.readdir('/proc')) {
      if (!/^[0-9]+$/.test(name)) continue;
      const text = await fsp.readFile(`/proc/${name}/cgroup`, 'utf8').catch(() => '');
      const cgroups = text.split('\n').filter((line) => leaves.some((leaf) => line.endsWith(leaf)));
      if (cgroups.length > 0 && (await processAlive(Number(name)))) found.push({ pid: Number(name), cgroups });
    }
    return found;
  }

  /**
   * SIGKILLs every process left in the container's cgroups until none is left, then removes those
   * cgroups; returns how many processes it killed.
   */
  async killLeftovers(id: string): Promise<number> {
    let killed = 0;
    const cgroupLines = new Set<string>();
    const deadline = Date.now() + 10_000;
    for (;;) {
      const procs = await this.cgroupProcesses(id);
      if (procs.length === 0) break;
      if (Date.now() > deadline) throw internal(`processes of container ${id} survive SIGKILL: ${procs.map((p) => p.pid).join(', ')}`);
      for (const p of procs) {
        for (const line of p.cgroups) cgroupLines.add(line);
        try {
          process.kill(p.pid, 'SIGKILL');
          killed++;
        } catch {
          // gone meanwhile
        }
      }
      await sleep(50);
    }
    if (killed > 0) {
      this.log.warn({ containerId: id, killed }, 'killed processes left in the cgroup of a container the runtime had lost');
      for (const dir of cgroupDirs(cgroupLines)) await fsp.rmdir(dir).catch(() => undefined);
    }
    return killed;
  }

  /**
   * When conmon is gone without writing an exit file (it was killed): what the container's end looks
   * like, or undefined while conmon lives or the container's processes still run.
   */
  async unmonitoredExit(id: string): Promise<{ exitCode: number; message: string; lost?: boolean } | undefined> {
    if (await this.conmonPid(id)) return undefined;
    if (await this.readExit(id)) return undefined; // conmon finished normally: the exit file says it all
    const state = await this.state(id);
    if (state && state.status !== 'stopped') return undefined;
    if (state) {
      // containerd reports a task whose shim died as killed (128 + SIGKILL); the real code is unknowable.
      return { exitCode: 137, message: 'the container monitor (conmon) was killed; the container is gone and its exit code is unknown' };
    }
    if ((await this.cgroupProcesses(id)).length > 0) return undefined;
    return { exitCode: 255, message: 'the container monitor (conmon) and the runtime lost the container', lost: true };
  }

  // ---- exits ----

  async readExit(id: string): Promise<ExitInfo | undefined> {
    const file = this.exitFilePath(id);
    // Every status call asks while the container runs: no file is the common answer, found here without
    // a thread-pool round trip or an ENOENT error object (the exit dir is under the run root, a tmpfs).
    const stat = statSync(file, { throwIfNoEntry: false });
    if (!stat) return undefined;
    try {
      const text = await fsp.readFile(file, 'utf8');
      const exitCode = Number.parseInt(text.trim(), 10);
      if (Number.isNaN(exitCode)) return undefined; // being written
      return { exitCode, finishedAt: stat.mtime };
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return undefined;
      throw err;
    }
  }

  /** Resolves when conmon has written the exit file; rejects with the signal's reason when aborted. */
  async waitExit(id: string, signal?: AbortSignal): Promise<ExitInfo> {
    checkId(id);
    await ensureDir(this.exitDir);
    return new Promise<ExitInfo>((resolve, reject) => {
      let watcher: FSWatcher | undefined;
      let poller: NodeJS.Timeout | undefined;
      let checking = false;
      let done = false;
      const finish = (fn: () => void): void => {
        if (done) return;
        done = true;
        watcher?.close();
        if (poller) clearInterval(poller);
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = (): void => finish(() => reject(signal?.reason ?? new Error('aborted')));
      const check = (): void => {
        if (checking || done) return;
        checking = true;
        this.readExit(id).then(
          (exit) => {
            checking = false;
            if (exit) finish(() => resolve(exit));
          },
          (err: unknown) => {
            checking = false;
            finish(() => reject(err));
          },
        );
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        watcher = fsWatch(this.exitDir, (_event, name) => {
          if (name === null || name === id || String(name).includes(id)) check();
        });
        watcher.on('error', () => undefined);
      } catch {
        watcher = undefined; // polling alone
      }
      poller = setInterval(check, EXIT_POLL_MS);
      poller.unref();
      check();
    });
  }

  /**
   * Exit files as conmon writes them, until `signal` aborts; a watch of the exit dir, so one may be
   * missed (or reported twice) and callers poll too.
   */
  async *exitFiles(signal: AbortSignal): AsyncGenerator<ExitInfo & { id: string }> {
    await ensureDir(this.exitDir);
    const pending: string[] = [];
    let wake: (() => void) | undefined;
    const notify = (): void => {
      wake?.();
      wake = undefined;
    };
    let watcher: FSWatcher | undefined;
    try {
      watcher = fsWatch(this.exitDir, (_event, name) => {
        if (name && ID_PATTERN.test(String(name)) && pending.length < 10_000) {
          pending.push(String(name));
          notify();
        }
      });
      watcher.on('error', (err) => {
        this.log.warn({ err: errorMessage(err) }, 'exit dir watch failed; exits are found by polling only');
        notify();
      });
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'cannot watch the exit dir; exits are found by polling only');
    }
    signal.addEventListener('abort', notify, { once: true });
    try {
      while (!signal.aborted) {
        const id = pending.shift();
        if (id === undefined) {
          await new Promise<void>((resolve) => (wake = resolve));
          continue;
        }
        const exit = await this.readExit(id).catch(() => undefined);
        if (exit) yield { id, ...exit };
      }
    } finally {
      watcher?.close();
      signal.removeEventListener('abort', notify);
    }
  }

  /**
   * At daemon start: temp files of monitor records cut short by a kill, exec process specs (they carry
   * the container's env) and terminal exec session dirs of execs no one waits for any more; bundles
   * made world-readable by an older version go back to root only.
   */
  async cleanStale(): Promise<void> {
    await removeStaleTempFiles(this.persistRoot);
    for (const id of await fsp.readdir(this.persistRoot).catch(() => [] as string[])) {
      const dir = path.join(this.persistRoot, id);
      await removeStaleTempFiles(dir);
      for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
        if (/^exec-[^/.]+(\.(json|pid))?$/.test(name)) await fsp.rm(path.join(dir, name), { recursive: true, force: true });
      }
      await fsp.chmod(path.join(dir, 'bundle'), 0o700).catch(() => undefined);
      await fsp.chmod(path.join(dir, 'bundle', 'config.json'), 0o600).catch(() => undefined);
    }
  }

  /** conmon leaves an `oom` file in the persist dir when the container's cgroup hit an OOM kill. */
  async wasOomKilled(id: string): Promise<boolean> {
    return pathExists(path.join(this.persistDir(id), 'oom'));
  }

  // ---- exec ----

  /** The container's own process spec (env, cwd, user, capabilities) with another command, for `runc exec --process`. */
  private async writeExecProcess(
    id: string,
    cmd: string[],
    terminal: boolean,
    extraEnv: string[],
    consoleSize?: { width: number; height: number },
  ): Promise<{ processFile: string; pidFile: string }> {
    checkId(id);
    if (cmd.length === 0) throw invalidArgument('cmd must not be empty');
    const bundleDir = await this.bundleOf(id);
    const spec = await readJsonIfExists<{ process?: Record<string, unknown> }>(path.join(bundleDir, 'config.json'));
    if (!spec?.process) throw failedPrecondition(`bundle ${bundleDir} of container ${id} has no process spec`);
    const processSpec: Record<string, unknown> = {
      ...spec.process,
      args: cmd,
      terminal,
      env: mergeEnv((spec.process.env as string[] | undefined) ?? [], extraEnv),
    };
    delete processSpec.consoleSize;
    // runc's init sizes the terminal before it execs the command, so the command never sees 0x0.
    if (terminal && consoleSize) processSpec.consoleSize = consoleSize;
    const persistDir = this.persistDir(id);
    await ensureDir(persistDir, 0o700);
    const tag = randomBytes(6).toString('hex');
    const processFile = path.join(persistDir, `exec-${tag}.json`);
    const pidFile = path.join(persistDir, `exec-${tag}.pid`);
    await fsp.writeFile(processFile, JSON.stringify(processSpec));
    return { processFile, pidFile };
  }

  /** Runs a command in the container and collects its output; kills it when timeoutSec (>0) passes. */
  async execSync(id: string, cmd: string[], timeoutSec: number, opts: ExecSyncOptions = {}): Promise<ExecSyncResult> {
    const { processFile, pidFile } = await this.writeExecProcess(id, cmd, false, opts.env ?? []);

    const stdout = new CappedBuffer(EXEC_OUTPUT_LIMIT);
    const stderr = new CappedBuffer(EXEC_OUTPUT_LIMIT);
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    let escalateTimer: NodeJS.Timeout | undefined;
    try {
      const runtime = await this.runtimeBinary();
      const child = spawnChild(
        runtime,
        ['--root', this.runtimeRoot, 'exec', '--process', processFile, '--pid-file', pidFile, id],
        { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', buffer: false, reject: false, extendEnv: true },
      );
      void child.then(undefined, () => undefined);
      child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
      child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
        child.once('exit', (code, sig) => resolve({ code, signal: sig }));
        child.once('error', () => resolve({ code: 255, signal: null }));
      });
      if (timeoutSec > 0) {
        killTimer = setTimeout(() => {
          timedOut = true;
          void this.killExecProcess(pidFile).then((killed) => {
            // runc forwards signals to the process it execs; SIGKILL on runc itself is the last resort.
            if (!killed) child.kill('SIGTERM');
            escalateTimer = setTimeout(() => child.kill('SIGKILL'), 2000);
          });
        }, timeoutSec * 1000);
      }
      const { code, signal } = await exited;
      // A background child of the command may hold the pipes open; don't wait on it for long.
      await Promise.race([
        Promise.all([streamEnded(child.stdout), streamEnded(child.stderr)]),
        grace(500),
      ]);
      child.stdout?.destroy();
      child.stderr?.destroy();
      let exitCode = code ?? -1;
      if (code === null && signal) exitCode = 128 + (osConstants.signals[signal] ?? 0);
      // No pid file means the runtime never started the command: its failure, not the command's exit.
      if (exitCode !== 0 && !timedOut && !(await pathExists(pidFile))) {
        const why = stderr.toBuffer().toString('utf8').trim().slice(0, 2000);
        if (/stopped container|not running|paused/i.test(why)) throw failedPrecondition(`container ${id} is not running: ${why}`);
        if (isUnknownContainer(why) && !(await this.state(id))) throw notFound(`container ${id} not found in runtime`);
        // The command itself could not be run: the shell's exit codes (127 not found, 126 not runnable), as a result.
        const notRunnable = commandNotRunnable(why);
        if (notRunnable) return { stdout: Buffer.alloc(0), stderr: Buffer.from(`${notRunnable.message}\n`), exitCode: notRunnable.exitCode, timedOut: false };
        throw internal(`cannot exec ${JSON.stringify(cmd[0])} in container ${id}: ${why}`);
      }
      return { stdout: stdout.toBuffer(), stderr: stderr.toBuffer(), exitCode, timedOut };
    } finally {
      if (killTimer) clearTimeout(killTimer);
      if (escalateTimer) clearTimeout(escalateTimer);
      await Promise.all([fsp.rm(processFile, { force: true }), fsp.rm(pidFile, { force: true })]);
    }
  }

  private async killExecProcess(pidFile: string): Promise<boolean> {
    const pid = Number.parseInt(await fsp.readFile(pidFile, 'utf8').catch(() => ''), 10);
    if (!(pid > 0)) return false;
    try {
      process.kill(pid, 'SIGKILL');
      return true;
    } catch {
      return false;
    }
  }

  // ---- conmon control fifo ----

  /** Applies new cgroup limits to a live container (`runc update --resources -`, OCI LinuxResources JSON). */
  async updateResources(id: string, resources: object): Promise<void> {
    checkId(id);
    const runtime = await this.runtimeBinary();
    const res = await run(runtime, ['--root', this.runtimeRoot, 'update', '--resources', '-', id], {
      reject: false,
      input: JSON.stringify(resources),
      timeoutMs: 30_000,
    });
    if (res.exitCode !== 0) {
      if (!(await this.state(id))) throw notFound(`container ${id} not found in runtime`);
      throw internal(`runc update of ${id} failed: ${res.stderr.trim()}`);
    }
  }

  /** Asks conmon to reopen the log file (after rotation) and waits until the file exists again. */
  async reopenLog(id: string): Promise<void> {
    await this.writeControl(id, `${CTL_REOPEN_LOG} 0 0\n`);
    const record = await this.monitorRecord(id);
    if (!record) return;
    const deadline = Date.now() + 5000;
    while (!(await pathExists(record.logPath))) {
      if (Date.now() > deadline) throw deadlineExceeded(`conmon did not reopen log ${record.logPath} of container ${id}`);
      await sleep(10);
    }
  }

  /** Resizes the container's terminal (tty containers only). */
  async resizeTerminal(id: string, width: number, height: number): Promise<void> {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0 || width > 1000 || height > 1000) {
      throw invalidArgument(`terminal size ${width}x${height} out of range 0..1000`);
    }
    await this.writeControl(id, `${CTL_RESIZE} ${height} ${width}\n`);
  }

  private async writeControl(id: string, message: string): Promise<void> {
    await this.writeFifo(path.join(await this.bundleOf(id), 'ctl'), message, `container ${id}`);
  }

  private async writeFifo(fifo: string, message: string, what: string): Promise<void> {
    let handle: fsp.FileHandle;
    try {
      // Non-blocking open fails with ENXIO instead of hanging when conmon is gone.
      handle = await fsp.open(fifo, fsp.constants.O_WRONLY | fsp.constants.O_NONBLOCK);
    } catch (err) {
      if (hasCode(err, 'ENXIO') || hasCode(err, 'ENOENT')) {
        throw failedPrecondition(`${what} has no running monitor (${fifo}: ${errorMessage(err)})`);
      }
      throw err;
    }
    try {
      await handle.write(message);
    } finally {
      await handle.close();
    }
  }

  // ---- helpers ----

  private async monitorRecord(id: string): Promise<MonitorRecord | undefined> {
    return readJsonIfExists<MonitorRecord>(path.join(this.persistDir(id), 'monitor.json')).catch(() => undefined);
  }

  private async bundleOf(id: string): Promise<string> {
    const record = await this.monitorRecord(id);
    if (record) return record.bundleDir;
    const state = await this.state(id);
    if (!state?.bundle) throw notFound(`container ${id} not found in runtime`);
    return state.bundle;
  }

  /**
   * Whether this runtime applies the "rro" mount option (recursive read-only, `runc features`
   * lists it) on a kernel with mount_setattr (5.12+). Asked once.
   */
  supportsRecursiveReadOnly(): Promise<boolean> {
    this.recursiveReadOnly ??= (async () => {
      const [major = 0, minor = 0] = osRelease().split('.').map((n) => parseInt(n, 10));
      if (major < 5 || (major === 5 && minor < 12)) return false;
      const res = await run(await this.runtimeBinary(), ['features'], { reject: false, timeoutMs: 10_000 }).catch(() => undefined);
      if (!res || res.exitCode !== 0) return false;
      try {
        const features = JSON.parse(res.stdout) as { mountOptions?: unknown };
        return Array.isArray(features.mountOptions) && features.mountOptions.includes('rro');
      } catch {
        return false;
      }
    })();
    return this.recursiveReadOnly;
  }

  private async runtimeBinary(): Promise<string> {
    this.resolvedRuntime ??= await resolveExecutable(this.runtimePath);
    return this.resolvedRuntime;
  }

  private async runtime(args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const runtime = await this.runtimeBinary();
    return run(runtime, ['--root', this.runtimeRoot, ...args], { reject: false, timeoutMs: 60_000 });
  }

  // streaming: an interactive exec whose stdio the caller wires (pipes, or a pty for `terminal`):
  // the caller runs `file args`; cleanup() removes the process and pid files afterwards.
  async prepareStreamingExec(id: string, cmd: string[], terminal: boolean, env: string[] = []): Promise<{ file: string; args: string[]; pidFile: string; cleanup: () => Promise<void> }> {
    const { processFile, pidFile } = await this.writeExecProcess(id, cmd, terminal, env);
    const args = ['--root', this.runtimeRoot, 'exec', '--process', processFile, '--pid-file', pidFile];
    if (terminal) args.push('--tty');
    args.push(id);
    return {
      file: await this.runtimeBinary(),
      args,
      pidFile,
      cleanup: async () => {
        await Promise.all([fsp.rm(processFile, { force: true }), fsp.rm(pidFile, { force: true })]);
      },
    };
  }

  /**
   * streaming: runs a command on a terminal under its own conmon (`conmon --exec --exec-attach -t`),
   * as CRI-O does. runc makes the one pty inside the container, sized from the process spec before
   * the command runs, and hands its master to conmon; the caller talks to it through conmon's
   * attach socket. (Under `runc exec -t` with a pty of ours there were two ptys, and runc clears
   * ONLCR on the inner one and sizes it only after its init may already have exec'd the command:
   * early output came out CR CR LF and `stty size` could read 0x0.)
   */
  async startTerminalExec(id: string, cmd: string[], opts: { stdin: boolean; width: number; height: number; env?: string[] }): Promise<TerminalExec> {
    const { processFile } = await this.writeExecProcess(id, cmd, true, opts.env ?? [], { width: opts.width, height: opts.height });
    const tag = randomBytes(6).toString('hex');
    const sessionId = `exec-${tag}`;
    const sessionDir = path.join(this.persistDir(id), sessionId);
    const pidFile = path.join(sessionDir, 'pid');
    const link = path.join(this.socketDir, sessionId);
    const cleanup = async (): Promise<void> => {
      await Promise.all([
        fsp.rm(sessionDir, { recursive: true, force: true }),
        fsp.rm(processFile, { force: true }),
        fsp.rm(link, { force: true }),
      ]);
    };
    const args = [
      '--api-version', '1',
      '-c', id,
      '-u', sessionId,
      '-n', sessionId,
      '-r', await this.runtimeBinary(),
      '-b', sessionDir,
      '-p', pidFile,
      '-l', 'none:',
      '--exit-dir', sessionDir,
      '--socket-dir-path', this.socketDir,
      '--log-level', 'error',
      '--runtime-arg', `--root=${this.runtimeRoot}`,
      '-e', '--exec-process-spec', processFile, '--exec-attach',
      '-t', '--sync',
    ];
    if (opts.stdin) args.push('-i');
    await ensureDir(sessionDir, 0o700);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      _OCI_SYNCPIPE: '3',
      _OCI_ATTACHPIPE: '4',
      _OCI_STARTPIPE: '5',
    };
    // --sync keeps conmon our child: the session ends with the daemon, as any streaming exec does.
    const child = spawnChild(this.conmonPath, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
      env,
      extendEnv: false,
      cwd: sessionDir,
      buffer: false,
      reject: false,
    });
    void child.then(undefined, () => undefined);
    let diagnostics = '';
    const keep = (chunk: Buffer): void => {
      if (diagnostics.length < 8192) diagnostics += chunk.toString('utf8');
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const conmonExited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.once('error', () => resolve(null));
    });
    const syncMessages = jsonLines((child.stdio as unknown as Readable[])[3]!);
    const attachReady = jsonLines((child.stdio as unknown as Readable[])[4]!);
    const start = (child.stdio as unknown as Writable[])[5]!;
    start.on('error', () => undefined);
    const fail = async (why: string): Promise<never> => {
      child.kill('SIGKILL');
      await conmonExited;
      await cleanup();
      const detail = diagnostics.trim();
      throw internal(`cannot exec ${JSON.stringify(cmd[0])} in container ${id}: ${why}${detail ? `: ${detail.slice(0, 2000)}` : ''}`);
    };
    const within = <T>(p: Promise<T>, what: string): Promise<T | Error> =>
      Promise.race([
        p,
        conmonExited.then(() => new Error(`conmon exited before ${what}`)),
        grace(this.createTimeoutMs).then(() => new Error(`conmon did not report ${what} within ${this.createTimeoutMs} ms`)),
      ]);

    // conmon waits for a start byte, makes the attach socket, says so, then waits for another before running the runtime.
    start.write('\0');
    const ready = await within(attachReady.next(), 'its attach socket');
    if (ready instanceof Error) return fail(ready.message);
    let session: AttachSession;
    try {
      session = await this.connectAttach(path.join(link, 'attach'));
    } catch (err) {
      return fail(errorMessage(err));
    }
    start.write('\0');
    const started = await within(syncMessages.next(), 'the exec pid');
    if (started instanceof Error || started === undefined || !(started.data > 0)) {
      session.close();
      if (started instanceof Error) return fail(started.message);
      const message = (started?.message ?? '').trim();
      await conmonExited;
      await cleanup();
      const notRunnable = commandNotRunnable(message);
      if (notRunnable) return { session: emptySession(), exited: Promise.resolve(notRunnable.exitCode), message: notRunnable.message, resize: async () => {}, kill: async () => {}, cleanup: async () => {} };
      if (/stopped container|not running|paused/i.test(message)) throw failedPrecondition(`container ${id} is not running: ${message}`);
      throw internal(`cannot exec ${JSON.stringify(cmd[0])} in container ${id}: ${message || 'conmon reported no pid'}`);
    }
    const exited = (async (): Promise<number> => {
      const report = await Promise.race([syncMessages.next(), conmonExited.then(() => undefined)]);
      if (report && typeof report.data === 'number') return report.data;
      // No report on the pipe: conmon also leaves the code in its exit file.
      const code = Number.parseInt(await fsp.readFile(path.join(sessionDir, sessionId), 'utf8').catch(() => ''), 10);
      return Number.isFinite(code) ? code : -1;
    })();
    return {
      session,
      exited,
      resize: async (width: number, height: number) => {
        await this.writeFifo(path.join(sessionDir, 'ctl'), `${CTL_RESIZE} ${height} ${width}\n`, `exec session ${sessionId} of container ${id}`);
      },
      kill: async () => {
        if (!(await this.killExecProcess(pidFile))) child.kill('SIGKILL');
      },
      cleanup: async () => {
        session.close();
        // The process is gone; conmon follows at once. Don't leave it behind if it doesn't.
        if ((await Promise.race([conmonExited.then(() => true), grace(2000).then(() => false)])) === false) child.kill('SIGKILL');
        await cleanup();
      },
    };
  }

  // streaming: SIGKILLs the process a streaming exec started; false when it never started or is gone.
  async killStreamingExec(pidFile: string): Promise<boolean> {
    return this.killExecProcess(pidFile);
  }
}

/** A terminal exec running under its own conmon (see RuncBackend.startTerminalExec). */
export interface TerminalExec {
  /** stdout is the terminal's output; stdin goes to the terminal. */
  session: AttachSession;
  /** The command's exit code. */
  exited: Promise<number>;
  /** Said to the user instead of running anything (the command could not be run), if set. */
  message?: string;
  resize(width: number, height: number): Promise<void>;
  /** SIGKILLs the command. */
  kill(): Promise<void>;
  /** Closes the session, waits for conmon and removes the session's files. */
  cleanup(): Promise<void>;
}

/** The `{"data": n, "message": "..."}` lines conmon writes on a sync pipe, one at a time; undefined once it closes. */
function jsonLines(stream: Readable): { next(): Promise<{ data: number; message?: string } | undefined> } {
  const queue: Array<{ data: number; message?: string }> = [];
  const waiters: Array<(value: { data: number; message?: string } | undefined) => void> = [];
  let text = '';
  let closed = false;
  const deliver = (value: { data: number; message?: string }): void => {
    const waiter = waiters.shift();
    if (waiter) waiter(value);
    else queue.push(value);
  };
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
      const line = text.slice(0, nl).trim();
      text = text.slice(nl + 1);
      if (!line) continue;
      try {
        const parsed = JSON.parse(line) as { data?: unknown; message?: unknown };
        if (typeof parsed.data === 'number') deliver({ data: parsed.data, message: typeof parsed.message === 'string' ? parsed.message : undefined });
      } catch {
        // not a message of conmon's; skip it
      }
    }
  });
  const close = (): void => {
    closed = true;
    for (const waiter of waiters.splice(0)) waiter(undefined);
  };
  stream.once('close', close);
  stream.once('end', close);
  stream.once('error', close);
  return {
    next: () => {
      const value = queue.shift();
      if (value || closed) return Promise.resolve(value);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/** A session with nothing to say and nobody listening: for a command that never ran. */
function emptySession(): AttachSession {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.end();
  stderr.end();
  const stdin = new PassThrough();
  stdin.resume();
  return { stdout, stderr, stdin, closed: Promise.resolve(), close: () => undefined, droppedBytes: () => 0 };
}

/** The cgroup directories named by /proc/<pid>/cgroup lines ("N:controllers:/path"), deepest first. */
function cgroupDirs(lines: Iterable<string>): string[] {
  const v2Root = pathExistsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
  const dirs: string[] = [];
  for (const line of lines) {
    const [, controllers = '', cgroupPath = ''] = line.split(/:(.*?):/);
    if (!cgroupPath.startsWith('/') || cgroupPath === '/') continue;
    const hierarchy = controllers === '' ? v2Root : path.join('/sys/fs/cgroup', controllers.replace(/^name=/, ''));
    dirs.push(path.join(hierarchy, cgroupPath));
  }
  return dirs.sort((a, b) => b.length - a.length);
}

async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('.') && name.endsWith('.tmp')) await fsp.rm(path.join(dir, name), { force: true });
  }
}

function checkId(id: string): string {
  if (!ID_PATTERN.test(id)) throw invalidArgument(`container id ${JSON.stringify(id)} is not a valid id`);
  return id;
}

/** Container env with overrides applied by key, order kept. */
function mergeEnv(base: string[], overrides: string[]): string[] {
  const keyOf = (entry: string): string => entry.split('=', 1)[0] ?? entry;
  const overridden = new Set(overrides.map(keyOf));
  return [...base.filter((entry) => !overridden.has(keyOf(entry))), ...overrides];
}

function streamEnded(stream: Readable | null | undefined): Promise<void> {
  if (!stream || stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}
