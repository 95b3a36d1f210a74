// Every child process goes through here: argv arrays (no shell), a timeout,
// a structured debug log of the command, and stderr kept in the error.
import { execa, type Options, type ResultPromise } from 'execa';
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

export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const options: Options = {
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    input: opts.input,
    env: opts.env,
    extendEnv: opts.extendEnv ?? true,
    cwd: opts.cwd,
    reject: false,
    stripFinalNewline: false,
    encoding: 'utf8',
  };
  const res = await execa(file, args, options);
  const result: RunResult = {
    stdout: String(res.stdout ?? ''),
    stderr: String(res.stderr ?? ''),
    exitCode: res.exitCode ?? -1,
    timedOut: Boolean(res.timedOut),
  };
  logger().debug({ cmd: file, args, exitCode: result.exitCode, ms: Date.now() - started }, 'exec');
  if ((res.failed || result.exitCode !== 0) && opts.reject !== false) {
    if (res.failed && res.exitCode === undefined && !res.timedOut) {
      // Spawn failure (binary missing and the like).
      throw new CommandError(file, args, undefined, String(res.stderr || res.message), false);
    }
    throw new CommandError(file, args, res.exitCode, result.stderr, result.timedOut);
  }
  return result;
}

/** Starts a long-running child and returns the execa handle (streams the caller wires). */
export function spawnChild(file: string, args: readonly string[], options: Options = {}): ResultPromise {
  logger().debug({ cmd: file, args }, 'spawn');
  return execa(file, args, { reject: false, ...options });
}
