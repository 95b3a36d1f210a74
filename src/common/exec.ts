// Every child process goes through here: argv arrays (no shell), a timeout,
// a structured debug log of the command, and stderr kept in the error.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { logger } from './log.js';
import { NodeletError } from './errors.js';

export interface RunOptions {
  timeoutMs?: number;
  input?: string | Buffer;
  env?: Record<string, string | undefined>;
  /** Keep the parent's environment (default true). */
  extendEnv?: boolean;
  cwd?: string;
  /** Do not throw on a non-zero exit; the caller reads exitCode. */
  reject?: boolean;
  /** Child outlives the daemon and is not waited for (monitors). */
  detached?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  timedOut: boolean;
}

export class CommandError extends NodeletError {
  readonly exitCode: number | undefined;
  readonly stderr: string;
  constructor(file: string, args: readonly string[], exitCode: number | undefined, stderr: string, timedOut: boolean) {
    const what = timedOut ? 'timed out' : `exited with ${exitCode ?? 'signal'}`;
    super('Internal', `${file} ${args.slice(0, 4).join(' ')}${args.length > 4 ? ' …' : ''} ${what}: ${stderr.trim().slice(0, 2000)}`);
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

const DEFAULT_TIMEOUT_MS = 60_000;
/** A run child still alive this long after SIGTERM (its timeout) gets SIGKILL. */
const KILL_GRACE_MS = 5_000;
/** Output kept per stream; a child writing more is killed and the run fails (no command we run comes near). */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/**
 * Runs a short command to completion. Built on child_process directly rather than execa: execa's
 * option normalisation, env copy, abort signals and stream plumbing cost more main-thread CPU per
 * call than the spawn itself (CPU profile of critest -benchmark: execa 44 % of the daemon's busy
 * time, of which 16 points outside spawn), and every container and pod operation runs several.
 */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise<RunResult>((resolve, reject) => {
    const env = opts.extendEnv === false ? opts.env : opts.env ? { ...process.env, ...opts.env } : undefined;
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let timedOut = false;
    let overflow = false;
    let spawnError: Error | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let child: ChildProcess;
    let spawnMs = 0;
    try {
      const t0 = performance.now();
      child = spawn(file, args, {
        cwd: opts.cwd,
        env,
        detached: opts.detached,
        stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      });
      // fork + exec block the event loop for this long; it grows with the daemon's anonymous memory.
      spawnMs = performance.now() - t0;
    } catch (err) {
      // Invalid arguments (a NUL in argv and the like) throw synchronously.
      spawnError = err instanceof Error ? err : new Error(String(err));
      finish(null, null);
      return;
    }
    const stop = (signal: NodeJS.Signals) => {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop('SIGTERM');
      killTimer = setTimeout(() => stop('SIGKILL'), KILL_GRACE_MS);
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.stdout!.on('data', (b: Buffer) => {
      outBytes += b.length;
      if (outBytes <= MAX_OUTPUT_BYTES) stdout.push(b);
      else if (!overflow) ((overflow = true), stop('SIGKILL'));
    });
    child.stderr!.on('data', (b: Buffer) => {
      errBytes += b.length;
      if (errBytes <= MAX_OUTPUT_BYTES) stderr.push(b);
      else if (!overflow) ((overflow = true), stop('SIGKILL'));
    });
    if (opts.input !== undefined) {
      // A child that exits without reading its stdin makes the write fail with EPIPE: not our error.
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(opts.input);
    }
    child.once('error', (err) => {
      spawnError = err;
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      finish(code, signal);
    });

    function finish(code: number | null, signal: NodeJS.Signals | null): void {
      // A spawn failure (ENOENT and the like) closes with the errno as its "code": not an exit status.
      const notStarted = spawnError !== undefined;
      if (notStarted) code = null;
      let errText = Buffer.concat(stderr).toString('utf8');
      if (overflow) errText += `\n(output beyond ${MAX_OUTPUT_BYTES} bytes: killed)`;
      const result: RunResult = {
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: notStarted ? spawnError!.message : errText,
        exitCode: code ?? -1,
        timedOut,
      };
      logger().debug({ cmd: file, args, exitCode: result.exitCode, ms: Date.now() - started, spawnMs: Math.round(spawnMs * 100) / 100 }, 'exec');
      if ((result.exitCode !== 0 || overflow) && opts.reject !== false) {
        if (notStarted) {
          // Spawn failure (binary missing and the like).
          reject(new CommandError(file, args, undefined, spawnError?.message ?? 'could not start', false));
          return;
        }
        const why = code === null && signal && !result.stderr.trim() ? `killed by ${signal}` : result.stderr;
        reject(new CommandError(file, args, code ?? undefined, why, timedOut));
        return;
      }
      resolve(result);
    }
  });
}

type StdioSpec = 'pipe' | 'ignore' | 'inherit';

export interface ChildOptions {
  /** All descriptors at once (extra ones become fds 3, 4, …); otherwise stdin/stdout/stderr. */
  stdio?: StdioSpec[];
  stdin?: StdioSpec;
  stdout?: StdioSpec;
  stderr?: StdioSpec;
  /** A file opened as the child's stdin. */
  inputFile?: string;
  /** A file opened for appending as the child's stdout and stderr (a daemon's log that outlives us). */
  outputFile?: string;
  env?: Record<string, string | undefined>;
  /** Keep the parent's environment under `env` (default true). */
  extendEnv?: boolean;
  cwd?: string;
  /** New session: the child outlives the daemon (monitors). */
  detached?: boolean;
  /** Killed when the daemon exits (default: unless detached). */
  cleanup?: boolean;
  /** Piped stdout/stderr kept in the result (default both); false: the caller reads the streams. */
  buffer?: boolean | { stdout?: boolean; stderr?: boolean };
  /** Accepted for symmetry with run(): the result never rejects, the caller reads exitCode. */
  reject?: false;
}

export interface ChildResult {
  /** undefined when it was killed by a signal or never started. */
  exitCode: number | undefined;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Not started, killed or non-zero exit. */
  failed: boolean;
}

/** A child process that is also a promise of its result (settles once it exited and its pipes closed). */
export type Child = ChildProcess & PromiseLike<ChildResult>;

const exitCleanup = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Starts a long-running child whose streams the caller wires. Plain child_process, like run(): execa
 * alone was 9 MiB of anonymous memory in the daemon, and every fork copies the page tables of it.
 */
export function spawnChild(file: string, args: readonly string[], options: ChildOptions = {}): Child {
  logger().debug({ cmd: file, args }, 'spawn');
  const stdio: (StdioSpec | number)[] = options.stdio ? [...options.stdio] : [options.stdin ?? 'pipe', options.stdout ?? 'pipe', options.stderr ?? 'pipe'];
  let inputFd: number | undefined;
  if (options.inputFile !== undefined) stdio[0] = inputFd = openSync(options.inputFile, 'r');
  let outputFd: number | undefined;
  if (options.outputFile !== undefined) stdio[1] = stdio[2] = outputFd = openSync(options.outputFile, 'a');
  const env = options.extendEnv === false ? options.env : options.env ? { ...process.env, ...options.env } : undefined;
  let child: ChildProcess;
  try {
    child = spawn(file, args, { cwd: options.cwd, env, detached: options.detached, stdio });
  } finally {
    if (inputFd !== undefined) closeSync(inputFd);
    if (outputFd !== undefined) closeSync(outputFd);
  }
  const keep = (which: 'stdout' | 'stderr') =>
    typeof options.buffer === 'object' ? options.buffer[which] !== false : options.buffer !== false;
  const collect = (stream: Readable | null, on: boolean): (() => string) => {
    if (!stream || !on) return () => '';
    const chunks: Buffer[] = [];
    let bytes = 0;
    stream.on('data', (b: Buffer) => {
      if (bytes >= MAX_OUTPUT_BYTES) return;
      bytes += b.length;
      chunks.push(b);
    });
    return () => Buffer.concat(chunks).toString('utf8');
  };
  const stdoutText = collect(child.stdout, keep('stdout'));
  const stderrText = collect(child.stderr, keep('stderr'));
  const cleanup = options.cleanup ?? !options.detached;
  if (cleanup) {
    exitCleanup.add(child);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.once('exit', () => {
        for (const c of exitCleanup) c.kill('SIGTERM');
      });
    }
  }
  let startError: Error | undefined;
  const result = new Promise<ChildResult>((resolve) => {
    child.once('error', (err) => {
      startError = err;
      // A child that never started emits no 'close' when it has no pipes.
      if (child.pid === undefined) setImmediate(() => child.emit('close', null, null));
    });
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      exitCleanup.delete(child);
      const notStarted = startError !== undefined && child.pid === undefined;
      const exitCode = notStarted ? undefined : (code ?? undefined);
      resolve({
        exitCode,
        signal,
        stdout: stdoutText(),
        stderr: notStarted ? startError!.message : stderrText(),
        failed: exitCode !== 0,
      });
    });
  });
  return Object.assign(child, { then: result.then.bind(result) }) as Child;
}
