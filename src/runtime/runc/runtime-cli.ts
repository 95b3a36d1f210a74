// The OCI runtime's command line (runc or crun, same verbs): every call under our own --root so that
// several daemons never see each other's containers.
import fs, { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { run } from '../../common/exec.js';
import { ociRuntimeSupportsRecursiveReadOnly } from '../oci-runtime-features.js';
import { errorMessage, failedPrecondition, hasCode, internal, notFound } from '../../common/errors.js';
import { pathExists } from '../../common/fsutil.js';
import { checkId } from './paths.js';

export type RuncStatus = 'created' | 'running' | 'paused' | 'stopped';

export interface RuncState {
  status: RuncStatus;
  pid: number;
  bundle?: string;
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

export function isUnknownContainer(stderr: string): boolean {
  return /does not exist|not exist|No such file or directory|not found/i.test(stderr);
}

function isNotRunning(stderr: string): boolean {
  return /not running|process already finished|no such process|container is stopped/i.test(stderr);
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

export class RuntimeCli {
  private resolved: string | undefined;
  private recursiveReadOnly: Promise<boolean> | undefined;

  constructor(
    /** runc or crun: an absolute path or a name looked up in PATH. */
    readonly path: string,
    /** The runtime's --root. */
    readonly root: string,
  ) {}

  async binary(): Promise<string> {
    this.resolved ??= await resolveExecutable(this.path);
    return this.resolved;
  }

  async run(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    return run(await this.binary(), ['--root', this.root, ...args], { reject: false, timeoutMs: opts.timeoutMs ?? 60_000, input: opts.input });
  }

  /** Whether the runtime keeps a directory for the id: none means it does not know it (spares a runtime exec). */
  knows(id: string): Promise<boolean> {
    return pathExists(path.join(this.root, checkId(id)));
  }

  async start(id: string): Promise<void> {
    if (path.basename(await this.binary()) === 'runc' && (await startThroughExecFifo(path.join(this.root, checkId(id), 'exec.fifo')))) return;
    const res = await this.run(['start', checkId(id)]);
    if (res.exitCode !== 0) {
      if (isUnknownContainer(res.stderr)) throw notFound(`container ${id} not found in runtime`);
      throw failedPrecondition(`cannot start container ${id}: ${res.stderr.trim()}`);
    }
  }

  /** The runtime's view of the container, undefined when the runtime does not know it. */
  async state(id: string): Promise<RuncState | undefined> {
    if (!(await this.knows(id))) return undefined;
    const res = await this.run(['state', id]);
    if (res.exitCode !== 0) {
      if (isUnknownContainer(res.stderr)) return undefined;
      throw internal(`runtime state ${id}: ${res.stderr.trim()}`);
    }
    const parsed = JSON.parse(res.stdout) as { status?: string; pid?: number; bundle?: string };
    const status = parsed.status as RuncStatus;
    if (!['created', 'running', 'paused', 'stopped'].includes(status)) {
      throw internal(`runtime state ${id}: unknown status ${String(parsed.status)}`);
    }
    return { status, pid: parsed.pid ?? 0, bundle: parsed.bundle };
  }

  /** Ids and states of every container under our root. */
  async list(): Promise<Array<{ id: string } & RuncState>> {
    const res = await this.run(['list', '--format', 'json']);
    if (res.exitCode !== 0) throw internal(`runtime list: ${res.stderr.trim()}`);
    const parsed = JSON.parse(res.stdout || 'null') as Array<{ id: string; status: RuncStatus; pid: number; bundle?: string }> | null;
    return (parsed ?? []).map((c) => ({ id: c.id, status: c.status, pid: c.pid, bundle: c.bundle }));
  }

  /** Sends a signal; a container that already stopped is left alone. */
  async kill(id: string, signal: string | number, all = false): Promise<void> {
    const args = ['kill'];
    if (all) args.push('--all');
    args.push(checkId(id), String(signal));
    const res = await this.run(args);
    if (res.exitCode === 0) return;
    if (isUnknownContainer(res.stderr)) throw notFound(`container ${id} not found in runtime`);
    if (isNotRunning(res.stderr)) return;
    throw internal(`cannot signal container ${id} with ${signal}: ${res.stderr.trim()}`);
  }

  async resume(id: string): Promise<void> {
    await this.run(['resume', checkId(id)]);
  }

  /** `delete --force` (kills what it knows); true when the runtime knew the container and deleted it. */
  async forceDelete(id: string): Promise<boolean> {
    if (!(await this.knows(id))) return false;
    const res = await this.run(['delete', '--force', id]);
    if (res.exitCode !== 0 && !isUnknownContainer(res.stderr)) {
      throw internal(`cannot delete container ${id}: ${res.stderr.trim()}`);
    }
    return res.exitCode === 0;
  }

  /** Applies new cgroup limits to a live container (`update --resources -`, OCI LinuxResources JSON). */
  async update(id: string, resources: object): Promise<void> {
    const res = await this.run(['update', '--resources', '-', checkId(id)], { input: JSON.stringify(resources), timeoutMs: 30_000 });
    if (res.exitCode !== 0) {
      if (!(await this.state(id))) throw notFound(`container ${id} not found in runtime`);
      throw internal(`runc update of ${id} failed: ${res.stderr.trim()}`);
    }
  }

  /** `exec` arguments (with --root) for a process spec file; the runtime writes the process's pid to pidFile. */
  async execArgs(id: string, processFile: string, pidFile: string, tty: boolean): Promise<string[]> {
    const args = ['--root', this.root, 'exec', '--process', processFile, '--pid-file', pidFile];
    if (tty) args.push('--tty');
    args.push(checkId(id));
    return args;
  }

  /**
   * Whether this runtime applies the "rro" mount option (recursive read-only, `runc features`
   * lists it) on a kernel with mount_setattr (5.12+). Asked once.
   */
  supportsRecursiveReadOnly(): Promise<boolean> {
    this.recursiveReadOnly ??= this.binary().then(ociRuntimeSupportsRecursiveReadOnly);
    return this.recursiveReadOnly;
  }

  /** Why the runtime binary cannot be used (missing, not executable, `--version` fails), or undefined when it can. */
  async check(): Promise<string | undefined> {
    let binary: string;
    try {
      binary = await resolveExecutable(this.path);
      const st = await fsp.stat(binary);
      if (!st.isFile()) return `${binary} is not a file`;
      await fsp.access(binary, fsp.constants.X_OK);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return `${this.path} does not exist`;
      if (hasCode(err, 'EACCES')) return `${this.path} is not executable`;
      return errorMessage(err);
    }
    const res = await run(binary, ['--version'], { reject: false, timeoutMs: 10_000 }).catch((err: unknown) => ({ exitCode: -1, stderr: errorMessage(err) }));
    if (res.exitCode !== 0) return `${binary} --version failed: ${String(res.stderr).trim().slice(0, 200) || `exit code ${res.exitCode}`}`;
    return undefined;
  }
}

/** How long a created container's init may take to answer on its exec fifo. */
const EXEC_FIFO_TIMEOUT_MS = 30_000;

/**
 * What `runc start` does for a created container, without forking the daemon for it: runc's init waits
 * in open() of `<root>/<id>/exec.fifo` for a reader, writes "0" and execs the command once one comes; the
 * reader then removes the fifo (runc's libcontainer exec() and handleFifoResult). False when there is no
 * fifo (the caller falls back to the runtime's own start); throws when the init died instead of answering.
 */
export async function startThroughExecFifo(fifo: string, timeoutMs = EXEC_FIFO_TIMEOUT_MS): Promise<boolean> {
  let fd: number;
  try {
    // Non-blocking: an open must never hang a thread-pool thread; the init has its end open already.
    fd = await new Promise<number>((resolve, reject) => fs.open(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, (err, got) => (err ? reject(err) : resolve(got))));
  } catch (err) {
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ENOTDIR')) return false;
    throw err;
  }
  const reader = new net.Socket({ fd, readable: true, writable: false });
  const answer = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(internal(`the container's init did not answer on ${fifo} within ${timeoutMs} ms`)), timeoutMs);
    // The init writes its "0" before it execs: that byte is the answer, EOF need not be waited for.
    reader.on('data', (chunk: Buffer) => resolve(chunk.toString('latin1', 0, 16)));
    reader.once('end', () => resolve(''));
    reader.once('error', reject);
    reader.once('close', () => clearTimeout(timer));
  }).finally(() => reader.destroy());
  await fsp.rm(fifo, { force: true });
  if (answer !== '0') throw failedPrecondition(`cannot start container: its init ended before it could run the command (exec fifo said ${JSON.stringify(answer)})`);
  return true;
}
