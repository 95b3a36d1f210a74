// The runc backend seen through RuntimeBackend: conmon + an OCI runtime binary (runc, crun), one conmon
// per container. This adapter maps the backend-neutral calls onto the conmon/runc operations.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { constants as osConstants } from 'node:os';
import { PassThrough, type Writable } from 'node:stream';
import { run, spawnChild } from '../../common/exec.js';
import { errorMessage } from '../../common/errors.js';
import { cgroupDirFor } from '../../stats/cgroup.js';
import { cgroupsPathFor } from '../../oci/container-spec.js';
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
import type { OciResources } from '../../oci/types.js';
import { RuncBackend, type RuncBackendOptions } from './backend.js';

/** The largest message conmon reads from an attach socket (its CONN_SOCK_BUF_SIZE; CRI-O's io.Copy writes 32 KiB). */
export const CONMON_ATTACH_MESSAGE = 32 * 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class RuncRuntime implements RuntimeBackend {
  readonly type = 'runc';
  readonly runc: RuncBackend;

  constructor(opts: RuncBackendOptions) {
    this.runc = new RuncBackend(opts);
  }

  check(): Promise<string | undefined> {
    return this.runc.checkRuntime();
  }

  async readiness(): Promise<string[]> {
    const problems: string[] = [];
    for (const bin of [this.runc.conmonPath, this.runc.runtimePath]) {
      const res = await run(bin, ['--version'], { reject: false, timeoutMs: 5000 }).catch((e: unknown) => ({ exitCode: -1, stderr: errorMessage(e) }));
      if (res.exitCode !== 0) problems.push(`${bin} is not usable`);
    }
    return problems;
  }

  cleanStale(): Promise<void> {
    return this.runc.cleanStale();
  }

  async features(): Promise<BackendFeatures> {
    return { recursiveReadOnlyMounts: await this.runc.supportsRecursiveReadOnly() };
  }

  async create(opts: BackendCreateOptions): Promise<BackendCreated> {
    const { pid } = await this.runc.create(opts);
    return { pid };
  }

  start(id: string): Promise<void> {
    return this.runc.start(id);
  }

  kill(id: string, signal: string | number, all = false): Promise<void> {
    return this.runc.kill(id, signal, all);
  }

  stop(id: string, timeoutSec: number, stopSignal?: string | number, opts?: BackendStopOptions): Promise<void> {
    return this.runc.stop(id, timeoutSec, stopSignal, opts);
  }

  delete(id: string): Promise<void> {
    return this.runc.delete(id);
  }

  async state(id: string): Promise<BackendState | undefined> {
    const state = await this.runc.state(id);
    if (state) return { status: state.status, pid: state.pid };
    // runc forgot it (its --root was wiped) but the kernel did not: what runs in its cgroup is still the container.
    if ((await this.runc.cgroupProcesses(id)).length > 0) return { status: 'running', pid: 0, untracked: true };
    return undefined;
  }

  async exitOf(id: string): Promise<ContainerExit | undefined> {
    const exit = await this.runc.readExit(id);
    if (exit) return { id, exitCode: exit.exitCode, exitedAt: exit.finishedAt, oomKilled: await this.runc.wasOomKilled(id).catch(() => false) };
    // No exit file: conmon may have been killed with (or after) the container, and nobody will ever write one.
    const unmonitored = await this.runc.unmonitoredExit(id);
    if (!unmonitored) return undefined;
    return { id, exitCode: unmonitored.exitCode, exitedAt: new Date(), reason: unmonitored.message, lost: unmonitored.lost, oomKilled: await this.runc.wasOomKilled(id).catch(() => false) };
  }

  async *exits(signal: AbortSignal): AsyncIterable<ContainerExit> {
    for await (const exit of this.runc.exitFiles(signal)) {
      yield { id: exit.id, exitCode: exit.exitCode, exitedAt: exit.finishedAt, oomKilled: await this.runc.wasOomKilled(exit.id).catch(() => false) };
    }
  }

  monitorPid(id: string): Promise<number | undefined> {
    return this.runc.conmonPid(id);
  }

  async exec(id: string, opts: ExecOptions): Promise<ExecSession> {
    if (opts.tty) {
      const exec = await this.runc.startTerminalExec(id, opts.process.args, {
        stdin: opts.stdin,
        width: opts.width ?? 80,
        height: opts.height ?? 24,
        env: opts.process.env ?? [],
      });
      return {
        stdout: exec.session.stdout,
        stderr: exec.session.stderr,
        stdin: exec.session.stdin,
        // Each write is one SOCK_SEQPACKET message and conmon reads at most 32 KiB of one: more is cut off.
        maxStdinChunk: CONMON_ATTACH_MESSAGE,
        exited: exec.exited,
        message: exec.message,
        resize: (width, height) => exec.resize(width, height),
        kill: () => exec.kill(),
        close: () => exec.cleanup(),
      };
    }
    return this.execOnPipes(id, opts);
  }

  /** `runtime exec` as our child, its stdio on pipes. */
  private async execOnPipes(id: string, opts: ExecOptions): Promise<ExecSession> {
    const prepared = await this.runc.prepareStreamingExec(id, opts.process.args, false, opts.process.env ?? []);
    const child = spawnChild(prepared.file, prepared.args, {
      stdin: opts.stdin ? 'pipe' : 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
      buffer: false,
      reject: false,
    });
    void child.then(undefined, () => undefined);
    const exited = new Promise<number>((resolve) => {
      child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : -1)));
      child.once('error', () => resolve(-1));
    });
    let stdin: Writable;
    if (child.stdin) {
      stdin = child.stdin;
      stdin.on('error', () => undefined); // the process may exit without reading its input
    } else {
      const sink = new PassThrough();
      sink.resume();
      stdin = sink;
    }
    const runc = this.runc;
    return {
      stdout: child.stdout!,
      stderr: child.stderr!,
      stdin,
      exited,
      resize: async () => undefined,
      kill: async () => {
        if (child.exitCode !== null) return;
        // Waits for the pid file runc writes once the process runs, then kills the process itself.
        for (let i = 0; i < 50; i++) {
          if (await runc.killStreamingExec(prepared.pidFile)) break;
          if (!(await fsp.stat(prepared.pidFile).catch(() => undefined)) && i > 10) break;
          await sleep(20);
        }
        child.kill('SIGKILL');
      },
      close: () => prepared.cleanup(),
    };
  }

  execSync(id: string, cmd: string[], opts: ExecSyncOptions): Promise<ExecSyncResult> {
    return this.runc.execSync(id, cmd, opts.timeoutSec, { env: opts.env });
  }

  async attach(id: string): Promise<AttachSession> {
    const session = await this.runc.attach(id);
    return Object.assign(session, { maxStdinChunk: CONMON_ATTACH_MESSAGE });
  }

  resize(id: string, width: number, height: number): Promise<void> {
    return this.runc.resizeTerminal(id, width, height);
  }

  updateResources(id: string, resources: OciResources): Promise<void> {
    return this.runc.updateResources(id, resources);
  }

  reopenLog(id: string): Promise<void> {
    return this.runc.reopenLog(id);
  }

  cgroupOf(id: string, cgroupParent: string | undefined): string {
    // The spec builders set linux.cgroupsPath from cgroupsPathFor; runc's cgroup drivers lay it out as cgroupDirFor reads it.
    return cgroupDirFor(cgroupsPathFor(cgroupParent, id));
  }
}

/** The runc backend of a handler: its runtime binary under conmon, state under the run root. */
export function runcBackendFor(env: BackendEnvironment): RuncRuntime {
  const runDir = env.config.runRoot;
  return new RuncRuntime({
    conmonPath: env.config.runtime.conmonPath,
    runtimePath: env.handler.path,
    runtimeRoot: env.handler.root ?? path.join(runDir, 'runtime', env.name),
    exitDir: path.join(runDir, 'exits'),
    socketDir: path.join(runDir, 's'),
  });
}
