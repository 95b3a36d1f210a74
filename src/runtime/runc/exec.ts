// Commands run in a running container: `runtime exec` with the container's own process spec and
// another command. ExecSync collects the output; streaming execs get stdio of their own, on pipes
// (runtime exec as our child) or on a terminal under an exec conmon of their own.
import { promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { spawnChild } from '../../common/exec.js';
import { ensureDir, pathExists, readJsonIfExists } from '../../common/fsutil.js';
import { failedPrecondition, internal, invalidArgument, notFound, errorMessage } from '../../common/errors.js';
import type { ExecSession, ExecSyncResult } from '../backend.js';
import type { AttachSession } from './attach.js';
import type { Conmon } from './conmon.js';
import { jsonLines } from './conmon.js';
import { connectAttach, resizeMessage, writeControl } from './control.js';
import { checkId, type RuncPaths } from './paths.js';
import { grace, sleep } from './processes.js';
import { commandNotRunnable, isUnknownContainer, type RuntimeCli } from './runtime-cli.js';

/** Each of stdout and stderr of an ExecSync is cut at this size so a chatty command can't exhaust memory. */
export const EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024;

export interface ExecDeps {
  paths: RuncPaths;
  cli: RuntimeCli;
  conmon: Conmon;
  /** The container's bundle (its config.json holds the process spec execs start from). */
  bundleOf(id: string): Promise<string>;
}

export class RuncExec {
  constructor(private readonly deps: ExecDeps) {}

  /** The container's own process spec (env, cwd, user, capabilities) with another command, for `runc exec --process`. */
  private async writeProcess(
    id: string,
    cmd: string[],
    terminal: boolean,
    extraEnv: string[],
    consoleSize?: { width: number; height: number },
  ): Promise<{ processFile: string; pidFile: string }> {
    checkId(id);
    if (cmd.length === 0) throw invalidArgument('cmd must not be empty');
    const bundleDir = await this.deps.bundleOf(id);
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
    const persistDir = this.deps.paths.persistDir(id);
    await ensureDir(persistDir, 0o700);
    const tag = randomBytes(6).toString('hex');
    const processFile = path.join(persistDir, `exec-${tag}.json`);
    const pidFile = path.join(persistDir, `exec-${tag}.pid`);
    await fsp.writeFile(processFile, JSON.stringify(processSpec));
    return { processFile, pidFile };
  }

  /** Runs a command in the container and collects its output; kills it when timeoutSec (>0) passes. */
  async execSync(id: string, cmd: string[], timeoutSec: number, env: string[] = []): Promise<ExecSyncResult> {
    const { processFile, pidFile } = await this.writeProcess(id, cmd, false, env);

    const stdout = new CappedBuffer(EXEC_OUTPUT_LIMIT);
    const stderr = new CappedBuffer(EXEC_OUTPUT_LIMIT);
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    let escalateTimer: NodeJS.Timeout | undefined;
    try {
      const child = spawnChild(
        await this.deps.cli.binary(),
        await this.deps.cli.execArgs(id, processFile, pidFile, false),
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
          void killByPidFile(pidFile).then((killed) => {
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
        if (isUnknownContainer(why) && !(await this.deps.cli.state(id))) throw notFound(`container ${id} not found in runtime`);
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

  /** `runtime exec` as our child, its stdio on pipes; kill() finds the process by the pid file the runtime writes. */
  async pipeExec(id: string, cmd: string[], env: string[], withStdin: boolean): Promise<ExecSession> {
    const { processFile, pidFile } = await this.writeProcess(id, cmd, false, env);
    const child = spawnChild(await this.deps.cli.binary(), await this.deps.cli.execArgs(id, processFile, pidFile, false), {
      stdin: withStdin ? 'pipe' : 'ignore',
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
    return {
      stdout: child.stdout!,
      stderr: child.stderr!,
      stdin,
      exited,
      resize: async () => undefined,
      kill: async () => {
        if (child.exitCode !== null) return;
        // Waits for the pid file the runtime writes once the process runs, then kills the process itself.
        for (let i = 0; i < 50; i++) {
          if (await killByPidFile(pidFile)) break;
          if (!(await fsp.stat(pidFile).catch(() => undefined)) && i > 10) break;
          await sleep(20);
        }
        child.kill('SIGKILL');
      },
      close: async () => {
        await Promise.all([fsp.rm(processFile, { force: true }), fsp.rm(pidFile, { force: true })]);
      },
    };
  }

  /**
   * Runs a command on a terminal under its own conmon (`conmon --exec --exec-attach -t`),
   * as CRI-O does. runc makes the one pty inside the container, sized from the process spec before
   * the command runs, and hands its master to conmon; the caller talks to it through conmon's
   * attach socket. (Under `runc exec -t` with a pty of ours there were two ptys, and runc clears
   * ONLCR on the inner one and sizes it only after its init may already have exec'd the command:
   * early output came out CR CR LF and `stty size` could read 0x0.)
   */
  async terminalExec(id: string, cmd: string[], opts: { stdin: boolean; width: number; height: number; env?: string[] }): Promise<ExecSession> {
    const { processFile } = await this.writeProcess(id, cmd, true, opts.env ?? [], { width: opts.width, height: opts.height });
    const tag = randomBytes(6).toString('hex');
    const sessionId = `exec-${tag}`;
    const sessionDir = path.join(this.deps.paths.persistDir(id), sessionId);
    const pidFile = path.join(sessionDir, 'pid');
    const link = path.join(this.deps.paths.socketDir, sessionId);
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
      '-r', await this.deps.cli.binary(),
      '-b', sessionDir,
      '-p', pidFile,
      '-l', 'none:',
      '--exit-dir', sessionDir,
      '--socket-dir-path', this.deps.paths.socketDir,
      '--log-level', 'error',
      '--runtime-arg', `--root=${this.deps.paths.runtimeRoot}`,
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
    const child = spawnChild(this.deps.conmon.opts.conmonPath, args, {
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
        grace(this.deps.conmon.opts.createTimeoutMs).then(() => new Error(`conmon did not report ${what} within ${this.deps.conmon.opts.createTimeoutMs} ms`)),
      ]);

    // conmon waits for a start byte, makes the attach socket, says so, then waits for another before running the runtime.
    start.write('\0');
    const ready = await within(attachReady.next(), 'its attach socket');
    if (ready instanceof Error) return fail(ready.message);
    let session: AttachSession & { maxStdinChunk: number };
    try {
      session = await connectAttach(path.join(link, 'attach'));
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
      if (notRunnable) return { ...emptyStdio(), exited: Promise.resolve(notRunnable.exitCode), message: notRunnable.message, resize: async () => {}, kill: async () => {}, close: async () => {} };
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
      stdout: session.stdout,
      stderr: session.stderr,
      stdin: session.stdin,
      maxStdinChunk: session.maxStdinChunk,
      exited,
      resize: async (width: number, height: number) => {
        await writeControl(path.join(sessionDir, 'ctl'), resizeMessage(width, height), `exec session ${sessionId} of container ${id}`);
      },
      kill: async () => {
        if (!(await killByPidFile(pidFile))) child.kill('SIGKILL');
      },
      close: async () => {
        session.close();
        // The process is gone; conmon follows at once. Don't leave it behind if it doesn't.
        if ((await Promise.race([conmonExited.then(() => true), grace(2000).then(() => false)])) === false) child.kill('SIGKILL');
        await cleanup();
      },
    };
  }

}

/** SIGKILLs the process whose pid the runtime wrote to pidFile; false when it never started or is gone. */
async function killByPidFile(pidFile: string): Promise<boolean> {
  const pid = Number.parseInt(await fsp.readFile(pidFile, 'utf8').catch(() => ''), 10);
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
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

/** Stdio with nothing to say and nobody listening: for a command that never ran. */
function emptyStdio(): Pick<ExecSession, 'stdout' | 'stderr' | 'stdin'> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.end();
  stderr.end();
  const stdin = new PassThrough();
  stdin.resume();
  return { stdout, stderr, stdin };
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
