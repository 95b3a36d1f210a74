// The containerd backend: nodelet-cri speaks containerd's own API, so any containerd shim (io.containerd.runc.v2,
// kata, gVisor...) runs its containers. A container is a containerd container (the OCI spec, runtime = the handler's
// shim type) with a task created on the rootfs mounts nodelet prepared from its own image store; its stdio goes
// through FIFOs nodelet reads into the CRI log. Everything lives in one containerd namespace (default `nodelet`).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import protobuf from 'protobufjs';
import {
  errorMessage,
  failedPrecondition,
  internal,
  invalidArgument,
  isKind,
  NodeletError,
  notFound,
} from '../../common/errors.js';
import { logger } from '../../common/log.js';
import { ociRuntimeSupportsRecursiveReadOnly } from '../oci-runtime-features.js';
import { cgroupDirFor } from '../../stats/cgroup.js';
import { cgroupsPathFor } from '../../oci/container-spec.js';
import type { OciProcess, OciResources, OciSpec } from '../../oci/types.js';
import type {
  AttachSession,
  BackendCreateOptions,
  BackendCreated,
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
import { jsonAny, LINUX_RESOURCES_TYPE_URL, PROCESS_TYPE_URL, SPEC_TYPE_URL, timestampToDate } from './client.js';
import {
  connectionFor,
  LABEL_LOG_PATH,
  LABEL_MANAGED,
  LABEL_STDIN,
  LABEL_STDIN_ONCE,
  LABEL_TTY,
  type ContainerdConnection,
} from './connection.js';
import { ProcessIO } from './fifo-io.js';
import type { CreateTaskResponse__Output } from './generated/containerd/services/tasks/v1/CreateTaskResponse.js';
import type { StartResponse__Output } from './generated/containerd/services/tasks/v1/StartResponse.js';

export const DEFAULT_CONTAINERD_NAMESPACE = 'nodelet';
export const DEFAULT_SHIM = 'io.containerd.runc.v2';
/** Each of stdout and stderr of an ExecSync is cut at this size so a chatty command can't exhaust memory. */
export const EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024;
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$/;
const EXIT_POLL_MS = 500;
/** After the exit, how long the output FIFOs may take to deliver their last bytes. */
const OUTPUT_DRAIN_MS = 5000;
const KILL_WAIT_MS = 30_000;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function checkId(id: string): string {
  if (!ID_PATTERN.test(id)) throw invalidArgument(`container id ${JSON.stringify(id)} is not a valid containerd id`);
  return id;
}

export function signalNumber(signal: string | number): number {
  if (typeof signal === 'number') return signal;
  if (/^\d+$/.test(signal)) return Number(signal);
  const upper = signal.toUpperCase();
  const name = (upper.startsWith('SIG') ? upper : `SIG${upper}`) as keyof typeof osConstants.signals;
  const n = osConstants.signals[name];
  if (n === undefined) throw invalidArgument(`unknown signal ${signal}`);
  return n;
}

/** runc's words for a command that cannot be started (as the shim relays them): the exit code a shell gives. */
export function commandNotRunnable(message: string): { exitCode: number; message: string } | undefined {
  const execOf = /exec: "(?:[^"\\]|\\.)*": ([^:]*(?::[^:]*)?)/.exec(message)?.[1];
  if (execOf === undefined) return undefined;
  if (/executable file not found|no such file or directory/i.test(execOf)) return { exitCode: 127, message };
  if (/permission denied|exec format error|is a directory|not a directory/i.test(execOf)) return { exitCode: 126, message };
  return undefined;
}

/** containerd.runc.v1.Options for the runc shim: the systemd cgroup driver and the runtime binary, when not the defaults. */
export function runcShimOptions(opts: { systemdCgroup: boolean; binaryName?: string }): { type_url: string; value: Buffer } | undefined {
  if (!opts.systemdCgroup && !opts.binaryName) return undefined;
  const w = protobuf.Writer.create();
  if (opts.binaryName) w.uint32((6 << 3) | 2).string(opts.binaryName); // binary_name = 6
  if (opts.systemdCgroup) w.uint32(9 << 3).bool(true); // systemd_cgroup = 9
  return { type_url: 'containerd.runc.v1.Options', value: Buffer.from(w.finish()) };
}

class CappedBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    const room = this.limit - this.size;
    if (room <= 0) return;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.chunks.push(kept);
    this.size += kept.length;
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

export interface ContainerdRuntimeOptions {
  /** The handler's shim type (containerd's runtime name), e.g. io.containerd.runc.v2. */
  runtimeType: string;
  /** For the runc shim: the OCI runtime binary when not runc (crun); empty: the shim's default. */
  runtimeBinary?: string;
  connection: ContainerdConnection;
}

export class ContainerdRuntime implements RuntimeBackend {
  readonly type = 'containerd';
  readonly runtimeType: string;
  readonly conn: ContainerdConnection;
  private readonly runtimeBinary: string | undefined;
  private readonly log = logger({ component: 'containerd-backend' });
  private recursiveReadOnly: Promise<boolean> | undefined;

  constructor(opts: ContainerdRuntimeOptions) {
    this.runtimeType = opts.runtimeType;
    this.runtimeBinary = opts.runtimeBinary || undefined;
    this.conn = opts.connection;
  }

  private async ready(): Promise<ContainerdConnection> {
    await this.conn.ready();
    return this.conn;
  }

  // ---- start-up ----

  async check(): Promise<string | undefined> {
    try {
      await this.ready();
      return undefined;
    } catch (err) {
      return `containerd is not usable: ${errorMessage(err)}`;
    }
  }

  async readiness(): Promise<string[]> {
    try {
      await this.ready();
      await this.conn.client.version(2000);
      return [];
    } catch (err) {
      return [`containerd at ${this.conn.address || '(not started)'} does not answer: ${errorMessage(err)}`];
    }
  }

  async cleanStale(): Promise<void> {
    await this.ready();
  }

  async features(): Promise<BackendFeatures> {
    // Tasks get the rootfs as mounts so any shim (Kata's too) can mount it where it runs the container.
    return { recursiveReadOnlyMounts: await this.supportsRecursiveReadOnly(), mountsRootfs: true };
  }

  /**
   * The runc shim hands the spec's mounts to its OCI runtime untouched: "rro" works when that runtime's
   * `features` lists it and the kernel has mount_setattr (5.12+). Other shims: not known, so no. Asked once.
   */
  private supportsRecursiveReadOnly(): Promise<boolean> {
    this.recursiveReadOnly ??= this.runtimeType.startsWith('io.containerd.runc.')
      ? ociRuntimeSupportsRecursiveReadOnly(this.runtimeBinary ?? 'runc')
      : Promise.resolve(false);
    return this.recursiveReadOnly;
  }

  // ---- lifecycle ----

  async create(opts: BackendCreateOptions): Promise<BackendCreated> {
    const id = checkId(opts.id);
    const conn = await this.ready();
    const log = this.log.child({ containerId: id });
    const mounted = (opts.rootfsMounts?.length ?? 0) > 0;
    // With rootfs mounts the shim mounts them at <bundle>/rootfs; without, the caller's mounted path is used as is.
    const spec: OciSpec = mounted ? { ...opts.spec, root: { ...opts.spec.root, path: 'rootfs' } } : opts.spec;
    const labels: Record<string, string> = {
      [LABEL_MANAGED]: 'true',
      [LABEL_LOG_PATH]: opts.logPath,
      [LABEL_TTY]: String(opts.tty),
      [LABEL_STDIN]: String(opts.stdin),
      [LABEL_STDIN_ONCE]: String(opts.stdinOnce),
    };
    const shimOptions =
      this.runtimeType.startsWith('io.containerd.runc.')
        ? runcShimOptions({ systemdCgroup: (spec.linux?.cgroupsPath ?? '').split(':').length === 3, binaryName: this.runtimeBinary })
        : undefined;
    const undo: Array<() => Promise<unknown>> = [];
    try {
      await conn.client.containers('Create', {
        container: {
          id,
          labels,
          runtime: { name: this.runtimeType, ...(shimOptions ? { options: shimOptions } : {}) },
          spec: jsonAny(SPEC_TYPE_URL, spec),
        },
      });
      undo.push(() => conn.client.containers('Delete', { id }));
      const io = await ProcessIO.open({ dir: conn.ioDir(id), tty: opts.tty, stdin: opts.stdin, logPath: opts.logPath }, true);
      undo.push(() => io.remove());
      conn.containerExits.delete(id);
      conn.oomKilled.delete(id);
      if (spec.linux?.cgroupsPath) conn.cgroupPaths.set(id, spec.linux.cgroupsPath);
      const res = await conn.client.tasks<CreateTaskResponse__Output>(
        'Create',
        {
          container_id: id,
          rootfs: (opts.rootfsMounts ?? []).map((m) => ({ type: m.type ?? 'bind', source: m.source ?? '', target: '', options: m.options ?? [] })),
          stdin: io.fifos.stdin,
          stdout: io.fifos.stdout,
          stderr: io.fifos.stderr,
          terminal: opts.tty,
          ...(shimOptions ? { options: shimOptions } : {}),
        },
        { timeoutMs: 120_000 },
      );
      io.releaseKeepers();
      conn.ios.set(id, io);
      log.debug({ pid: res.pid, shim: this.runtimeType }, 'task created');
      return { pid: res.pid };
    } catch (err) {
      for (const step of undo.reverse()) await step().catch((e: unknown) => log.warn({ err: errorMessage(e) }, 'undo of a failed create'));
      await conn.client.tasks('Delete', { container_id: id }).catch(() => undefined);
      if (isKind(err, 'AlreadyExists')) throw failedPrecondition(`container ${id} already exists in containerd namespace ${conn.namespace}`);
      throw err;
    }
  }

  async start(id: string): Promise<void> {
    const conn = await this.ready();
    try {
      await conn.client.tasks<StartResponse__Output>('Start', { container_id: checkId(id) }, { timeoutMs: 120_000 });
    } catch (err) {
      const cannot = commandNotRunnable(errorMessage(err));
      if (cannot) throw failedPrecondition(cannot.message);
      throw err;
    }
  }

  async kill(id: string, signal: string | number, all = false): Promise<void> {
    const conn = await this.ready();
    try {
      await conn.client.tasks('Kill', { container_id: checkId(id), signal: signalNumber(signal), all });
    } catch (err) {
      // A task that has already exited (or has none) is left alone.
      if (isKind(err, 'NotFound') || isKind(err, 'FailedPrecondition')) return;
      throw err;
    }
  }

  async stop(id: string, timeoutSec: number, stopSignal: string | number = 'SIGTERM', opts: BackendStopOptions = {}): Promise<void> {
    const conn = await this.ready();
    checkId(id);
    if (!(await conn.container(id))) throw notFound(`container ${id} not found in containerd`);
    if (await this.exitOf(id)) return;
    if (timeoutSec > 0) {
      await this.kill(id, stopSignal);
      const cutShort = new AbortController();
      void this.redeliverMissedSignal(id, stopSignal, cutShort.signal).catch((err: unknown) =>
        this.log.debug({ containerId: id, err: errorMessage(err) }, 'watching for a missed stop signal failed'),
      );
      const onEscalate = (): void => cutShort.abort();
      opts.escalate?.addEventListener('abort', onEscalate, { once: true });
      opts.signal?.addEventListener('abort', onEscalate, { once: true });
      try {
        if (await this.waitExit(id, timeoutSec * 1000, cutShort.signal)) return;
      } finally {
        cutShort.abort();
        opts.escalate?.removeEventListener('abort', onEscalate);
        opts.signal?.removeEventListener('abort', onEscalate);
      }
      if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : internal('stop cancelled');
    }
    await this.kill(id, 'SIGKILL', true);
    if (!(await this.waitExit(id, KILL_WAIT_MS, opts.signal))) {
      if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : internal('stop cancelled');
      throw new NodeletError('DeadlineExceeded', `container ${id} did not exit ${KILL_WAIT_MS / 1000} s after SIGKILL`);
    }
  }

  /** Sends the stop signal again if the task's init set its handler only after it came (missed-signal.ts). */
  private async redeliverMissedSignal(id: string, stopSignal: string | number, until: AbortSignal): Promise<void> {
    const number = signalNumber(stopSignal);
    if (number === osConstants.signals.SIGKILL) return;
    const state = await this.state(id);
    if (state?.status !== 'running' || !state.pid) return;
    const resent = await resendMissedSignal(state.pid, number, until, () => this.kill(id, stopSignal));
    if (resent) this.log.debug({ containerId: id, signal: stopSignal }, 'init set its handler after the stop signal; sent it again');
  }

  /** True once the container's exit is known; false when `timeoutMs` passed or `signal` aborted first. */
  private async waitExit(id: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const wake = new AbortController();
    const off = this.conn.onExit((e) => {
      if (e.id === id) wake.abort();
    });
    const onAbort = (): void => wake.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        if (await this.exitOf(id)) return true;
        if (signal?.aborted || Date.now() >= deadline) return false;
        await sleep(Math.min(EXIT_POLL_MS, deadline - Date.now()), wake.signal);
      }
    } finally {
      off();
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async delete(id: string): Promise<void> {
    const conn = await this.ready();
    checkId(id);
    const task = await conn.task(id);
    if (task && task.status !== 'STOPPED') {
      await this.kill(id, 'SIGKILL', true);
      await this.waitExit(id, KILL_WAIT_MS);
    }
    const io = conn.ios.get(id);
    if (io) await Promise.race([io.ended, sleep(OUTPUT_DRAIN_MS)]);
    if (task) {
      try {
        await conn.client.tasks('Delete', { container_id: id }, { timeoutMs: 60_000 });
      } catch (err) {
        if (!isKind(err, 'NotFound')) throw err;
      }
    }
    try {
      await conn.client.containers('Delete', { id });
    } catch (err) {
      if (!isKind(err, 'NotFound')) throw err;
    }
    conn.ios.delete(id);
    if (io) await io.remove();
    else await fsp.rm(conn.ioDir(id), { recursive: true, force: true });
    conn.containerExits.delete(id);
    conn.oomKilled.delete(id);
    conn.cgroupPaths.delete(id);
  }

  async state(id: string): Promise<BackendState | undefined> {
    const conn = await this.ready();
    const task = await conn.task(checkId(id));
    if (!task) {
      // A container record without a task: a create cut short; it is not running and can be removed.
      return (await conn.container(id)) ? { status: 'stopped', pid: 0 } : undefined;
    }
    switch (task.status) {
      case 'CREATED':
        return { status: 'created', pid: task.pid };
      case 'RUNNING':
        return { status: 'running', pid: task.pid };
      case 'PAUSED':
      case 'PAUSING':
        return { status: 'paused', pid: task.pid };
      default:
        return { status: 'stopped', pid: 0 };
    }
  }

  async exitOf(id: string): Promise<ContainerExit | undefined> {
    const conn = await this.ready();
    const known = conn.containerExits.get(id);
    if (known) return known;
    const task = await conn.task(id);
    if (!task) {
      if (!(await conn.container(id))) return undefined;
      return conn.recordExit(id, { exitCode: 255, exitedAt: new Date() });
    }
    if (task.status !== 'STOPPED') return undefined;
    return conn.recordExit(id, { exitCode: task.exit_status, exitedAt: timestampToDate(task.exited_at) ?? new Date() });
  }

  async *exits(signal: AbortSignal): AsyncIterable<ContainerExit> {
    const conn = await this.ready();
    const queue: ContainerExit[] = [];
    let wake: (() => void) | undefined;
    const off = conn.onExit((e) => {
      if (queue.length < 10_000) queue.push(e);
      wake?.();
    });
    const onAbort = (): void => wake?.();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal.aborted) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      off();
      signal.removeEventListener('abort', onAbort);
    }
  }

  async monitorPid(): Promise<number | undefined> {
    return undefined;
  }

  // ---- processes and stdio ----

  private async containerProcess(id: string): Promise<OciProcess> {
    const c = await this.conn.container(id);
    if (!c) throw notFound(`container ${id} not found in containerd`);
    const spec = JSON.parse(Buffer.from(c.spec?.value ?? '').toString('utf8') || '{}') as Partial<OciSpec>;
    if (!spec.process) throw internal(`container ${id} has no process in its spec`);
    return spec.process;
  }

  private async execProcess(id: string, args: string[], env: string[] | undefined, tty: boolean, size?: { width: number; height: number }): Promise<OciProcess & { consoleSize?: { width: number; height: number } }> {
    if (args.length === 0) throw invalidArgument('cmd: empty');
    const base = await this.containerProcess(id);
    const merged = new Map<string, string>();
    for (const e of [...(base.env ?? []), ...(env ?? [])]) {
      const eq = e.indexOf('=');
      merged.set(eq === -1 ? e : e.slice(0, eq), e);
    }
    return { ...base, args, env: [...merged.values()], terminal: tty, ...(tty && size ? { consoleSize: size } : {}) };
  }

  /** Exec + Start of a process with FIFOs; `exited` resolves with its exit code once its output is read. */
  private async startExec(
    id: string,
    args: string[],
    opts: { env?: string[]; tty: boolean; stdin: boolean; size?: { width: number; height: number }; onOutput: (stream: 'stdout' | 'stderr', chunk: Buffer) => void },
  ): Promise<{ execId: string; io: ProcessIO; exited: Promise<number>; message?: string }> {
    const conn = await this.ready();
    checkId(id);
    const task = await conn.task(id);
    if (!task || task.status !== 'RUNNING') throw failedPrecondition(`container ${id} is not running`);
    const execId = `exec-${randomBytes(8).toString('hex')}`;
    const process = await this.execProcess(id, args, opts.env, opts.tty, opts.size);
    const io = await ProcessIO.open({ dir: path.join(conn.ioDir(id), execId), tty: opts.tty, stdin: opts.stdin, onOutput: opts.onOutput }, true);
    const cleanup = async (): Promise<void> => {
      conn.forgetExec(execId);
      await conn.client.tasks('DeleteProcess', { container_id: id, exec_id: execId }).catch(() => undefined);
      await io.remove();
    };
    try {
      await conn.client.tasks('Exec', {
        container_id: id,
        exec_id: execId,
        stdin: io.fifos.stdin,
        stdout: io.fifos.stdout,
        stderr: io.fifos.stderr,
        terminal: opts.tty,
        spec: jsonAny(PROCESS_TYPE_URL, process),
      });
      const exitEvent = conn.waitExec(execId);
      try {
        // The shim opens an exec's FIFOs at Start (a container's at Create): our keepers stay until then.
        await conn.client.tasks<StartResponse__Output>('Start', { container_id: id, exec_id: execId }, { timeoutMs: 60_000 });
        io.releaseKeepers();
      } catch (err) {
        const cannot = commandNotRunnable(errorMessage(err));
        await cleanup();
        if (cannot) return { execId, io, exited: Promise.resolve(cannot.exitCode), message: cannot.message };
        throw err;
      }
      if (opts.tty && opts.size) {
        await conn.client.tasks('ResizePty', { container_id: id, exec_id: execId, width: opts.size.width, height: opts.size.height }).catch(() => undefined);
      }
      const exited = this.execExit(id, execId, exitEvent).then(async (code) => {
        await Promise.race([io.ended, sleep(OUTPUT_DRAIN_MS)]);
        return code;
      });
      return { execId, io, exited };
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  /** The exec's exit: from the event, or by polling Tasks.Get should the event be missed (containerd restarted). */
  private async execExit(id: string, execId: string, event: Promise<{ exitCode: number }>): Promise<number> {
    let done = false;
    const poll = (async () => {
      while (!done) {
        await sleep(2000);
        if (done) break;
        try {
          const res = await this.conn.client.tasks<{ process: { status: string; exit_status: number } | null }>('Get', { container_id: id, exec_id: execId });
          if (res.process?.status === 'STOPPED') return res.process.exit_status;
        } catch (err) {
          if (isKind(err, 'NotFound')) return 137;
        }
      }
      return -1;
    })();
    const code = await Promise.race([event.then((e) => e.exitCode), poll]);
    done = true;
    return code;
  }

  async exec(id: string, opts: ExecOptions): Promise<ExecSession> {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const size = opts.tty ? { width: opts.width ?? 80, height: opts.height ?? 24 } : undefined;
    const started = await this.startExec(id, opts.process.args, {
      env: opts.process.env,
      tty: opts.tty,
      stdin: opts.stdin,
      size,
      onOutput: (stream, chunk) => (stream === 'stdout' ? stdout : stderr).write(chunk),
    });
    const { execId, io } = started;
    void started.exited.finally(() => {
      stdout.end();
      stderr.end();
    });
    const conn = this.conn;
    let stdin: PassThrough | import('node:stream').Writable;
    if (opts.stdin && io.stdin) {
      const fifo = io.stdin;
      const sink = new PassThrough();
      sink.on('data', (chunk: Buffer) => {
        if (!fifo.write(chunk)) {
          sink.pause();
          fifo.once('drain', () => sink.resume());
        }
      });
      // The client closed stdin: the shim closes the process's stdin (our FIFO end alone would not do it).
      sink.on('end', () => {
        void io.closeStdin().then(() => conn.client.tasks('CloseIO', { container_id: id, exec_id: execId, stdin: true })).catch(() => undefined);
      });
      stdin = sink;
    } else {
      const sink = new PassThrough();
      sink.resume();
      stdin = sink;
    }
    if (started.message) {
      stdout.end();
      stderr.end();
    }
    return {
      stdout,
      stderr,
      stdin,
      exited: started.exited,
      message: started.message,
      resize: async (width, height) => {
        if (!opts.tty) return;
        await conn.client.tasks('ResizePty', { container_id: id, exec_id: execId, width, height }).catch((err: unknown) => {
          if (!isKind(err, 'NotFound')) throw err;
        });
      },
      kill: async () => {
        await conn.client.tasks('Kill', { container_id: id, exec_id: execId, signal: 9, all: false }).catch(() => undefined);
      },
      close: async () => {
        conn.forgetExec(execId);
        await conn.client.tasks('DeleteProcess', { container_id: id, exec_id: execId }).catch(() => undefined);
        await io.remove();
      },
    };
  }

  async execSync(id: string, cmd: string[], opts: ExecSyncOptions): Promise<ExecSyncResult> {
    const out = new CappedBuffer(EXEC_OUTPUT_LIMIT);
    const err = new CappedBuffer(EXEC_OUTPUT_LIMIT);
    const started = await this.startExec(id, cmd, {
      env: opts.env,
      tty: false,
      stdin: false,
      onOutput: (stream, chunk) => (stream === 'stdout' ? out : err).push(chunk),
    });
    if (started.message) return { stdout: Buffer.alloc(0), stderr: Buffer.from(started.message), exitCode: await started.exited, timedOut: false };
    const conn = this.conn;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      const exitCode = await new Promise<number>((resolve, reject) => {
        started.exited.then(resolve, reject);
        if (opts.timeoutSec > 0) {
          timer = setTimeout(() => {
            timedOut = true;
            void conn.client.tasks('Kill', { container_id: id, exec_id: started.execId, signal: 9, all: false }).catch(() => undefined);
          }, opts.timeoutSec * 1000);
        }
      });
      return { stdout: out.toBuffer(), stderr: err.toBuffer(), exitCode, timedOut };
    } finally {
      if (timer) clearTimeout(timer);
      conn.forgetExec(started.execId);
      await conn.client.tasks('DeleteProcess', { container_id: id, exec_id: started.execId }).catch(() => undefined);
      await started.io.remove();
    }
  }

  async attach(id: string): Promise<AttachSession> {
    const conn = await this.ready();
    const io = conn.ios.get(checkId(id));
    if (!io) throw failedPrecondition(`container ${id} has no running task to attach to`);
    const c = await conn.container(id);
    const labels = c?.labels ?? {};
    const withStdin = labels[LABEL_STDIN] === 'true';
    const once = labels[LABEL_STDIN_ONCE] === 'true';
    return io.attach({
      stdin: withStdin,
      onStdinEnd: once
        ? () => {
            void io.closeStdin().then(() => conn.client.tasks('CloseIO', { container_id: id, stdin: true })).catch(() => undefined);
          }
        : undefined,
    });
  }

  async resize(id: string, width: number, height: number): Promise<void> {
    for (const [name, v] of [['width', width], ['height', height]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 1000) throw invalidArgument(`${name}: ${v} is outside 0..1000`);
    }
    const conn = await this.ready();
    await conn.client.tasks('ResizePty', { container_id: checkId(id), width, height });
  }

  // ---- resources, logs, stats ----

  async updateResources(id: string, resources: OciResources): Promise<void> {
    const conn = await this.ready();
    await conn.client.tasks('Update', { container_id: checkId(id), resources: jsonAny(LINUX_RESOURCES_TYPE_URL, resources) });
  }

  async reopenLog(id: string): Promise<void> {
    const conn = await this.ready();
    const io = conn.ios.get(checkId(id));
    if (!io) throw failedPrecondition(`container ${id} is not running: no log to reopen`);
    await io.reopenLog();
  }

  cgroupOf(id: string, cgroupParent: string | undefined): string {
    // The runc shim hands linux.cgroupsPath (set by the spec builders from cgroupsPathFor) to runc, which lays it out as for the runc backend.
    return cgroupDirFor(cgroupsPathFor(cgroupParent, id));
  }
}

/** The containerd backend of a handler (`NAME=containerd:RUNTIME_TYPE`): one shared connection per containerd. */
export function containerdBackendFor(env: BackendEnvironment): ContainerdRuntime {
  const cd = env.config.runtime.containerd;
  const connection = connectionFor({
    // No address: nodelet-cri runs its own containerd.
    address: cd?.address || undefined,
    namespace: cd?.namespace || DEFAULT_CONTAINERD_NAMESPACE,
    root: env.config.root,
    runRoot: env.config.runRoot,
  });
  return new ContainerdRuntime({ runtimeType: env.handler.runtimeType || DEFAULT_SHIM, runtimeBinary: env.handler.path, connection });
}
