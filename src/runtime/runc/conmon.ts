// conmon, the per-container monitor: started once per container, it runs `runtime create`, forks away
// (so the container outlives the daemon), holds the container's stdio, writes its CRI log, exit file
// and oom marker, and serves attach and the control fifo.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { spawnChild } from '../../common/exec.js';
import { deadlineExceeded, errorMessage, hasCode, internal } from '../../common/errors.js';
import { readJsonIfExists, writeJsonAtomic } from '../../common/fsutil.js';
import { crashPoint } from '../../common/crash-point.js';
import type { RuncPaths } from './paths.js';
import { grace, procStat, sleep } from './processes.js';

export interface ConmonOptions {
  conmonPath: string;
  paths: RuncPaths;
  /** conmon --log-level (error, warn, info, debug, trace). */
  logLevel: string;
  /** How long a create may take before it is abandoned. */
  createTimeoutMs: number;
}

export interface ConmonCreateOptions {
  tty: boolean;
  stdin: boolean;
  stdinOnce: boolean;
  /** Bytes; conmon truncates the log when it grows beyond this. */
  logMaxSize?: number;
}

/** What we remember about a container's monitor, beside conmon's own files. */
export interface MonitorRecord {
  id: string;
  bundleDir: string;
  logPath: string;
  conmonPid: number;
  pid: number;
  createdAt: string;
}

export class Conmon {
  /**
   * conmon processes verified for an id (pid and start time, and when last seen alive), so status calls need not
   * re-read monitor.json and cmdline.
   */
  private readonly known = new Map<string, { pid: number; startTime: string; seenAt: number }>();

  constructor(readonly opts: ConmonOptions) {}

  /** The conmon argv for a create (without the binary), exposed for logs and tests. */
  args(opts: ConmonCreateOptions, id: string, runtime: string, bundleDir: string, logPath: string, persistDir: string): string[] {
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
      '--exit-dir', this.opts.paths.exitDir,
      '--persist-dir', persistDir,
      '--socket-dir-path', this.opts.paths.socketDir,
      '--log-level', this.opts.logLevel,
      '--runtime-arg', `--root=${this.opts.paths.runtimeRoot}`,
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
  async launch(id: string, args: string[], persistDir: string): Promise<number> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      _OCI_SYNCPIPE: '3',
    };
    if (process.env.XDG_RUNTIME_DIR) env.XDG_RUNTIME_DIR = process.env.XDG_RUNTIME_DIR;
    const child = spawnChild(this.opts.conmonPath, args, {
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
        () => settle(deadlineExceeded(`conmon did not report container ${id} within ${this.opts.createTimeoutMs} ms`)),
        this.opts.createTimeoutMs,
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

  /** The daemonised conmon's pid, from the pid file its first process writes. */
  async readPid(id: string): Promise<number> {
    const file = path.join(this.opts.paths.persistDir(id), 'conmon.pid');
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
  async pidOf(id: string): Promise<number | undefined> {
    // Seen before: the same pid with the same start time is the same process, so one /proc read answers.
    const known = this.known.get(id);
    if (known) {
      const stat = procStat(known.pid);
      if (stat?.startTime === known.startTime) {
        if (stat.state === 'Z') return undefined;
        known.seenAt = performance.now();
        return known.pid;
      }
      this.known.delete(id);
    }
    const record = await this.readRecord(id);
    let pid = record?.conmonPid;
    if (!pid) {
      const text = await fsp.readFile(path.join(this.opts.paths.persistDir(id), 'conmon.pid'), 'utf8').catch(() => '');
      pid = Number.parseInt(text, 10) || undefined;
    }
    const stat = pid ? procStat(pid) : undefined;
    if (!pid || !stat || stat.state === 'Z') return undefined;
    // Guard against pid reuse: the process must still be conmon for this id.
    const cmdline = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const argv = cmdline.split('\0');
    if (!argv[0]?.endsWith('conmon') || !argv.includes(id)) return undefined;
    this.known.set(id, { pid, startTime: stat.startTime, seenAt: performance.now() });
    return pid;
  }

  /**
   * Whether the container's conmon runs, taking a sighting of the last maxAgeMs as still true: a status call then
   * needs no /proc read (~40 µs, more on a busy node). Only for noticing a conmon killed out of band, which
   * nothing else reports; an exit conmon saw is in its exit file, read before this.
   */
  async runningWithin(id: string, maxAgeMs: number): Promise<boolean> {
    const known = this.known.get(id);
    if (known && performance.now() - known.seenAt < maxAgeMs) return true;
    return (await this.pidOf(id)) !== undefined;
  }

  /** Takes the conmon just started for id as verified: the first status calls then need one /proc read, not three files. */
  remember(id: string, pid: number): void {
    const stat = procStat(pid);
    if (stat && stat.state !== 'Z') this.known.set(id, { pid, startTime: stat.startTime, seenAt: performance.now() });
  }

  forget(id: string): void {
    this.known.delete(id);
  }

  async readRecord(id: string): Promise<MonitorRecord | undefined> {
    return readJsonIfExists<MonitorRecord>(this.opts.paths.monitorRecord(id)).catch(() => undefined);
  }

  async writeRecord(record: MonitorRecord): Promise<void> {
    await writeJsonAtomic(this.opts.paths.monitorRecord(record.id), record);
  }
}

export /** The `{"data": n, "message": "..."}` lines conmon writes on a sync pipe, one at a time; undefined once it closes. */
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

