// Exec and attach behind the streaming server: the container side of a RemoteCommandStreams session.
import { promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { RuncBackend, TerminalExec } from '../runtime/runc/backend.js';
import { spawnChild } from '../common/exec.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { RemoteCommandStreams } from './channels.js';
import { relay } from './flow.js';

/** The largest message conmon reads from an attach socket (its CONN_SOCK_BUF_SIZE; CRI-O's io.Copy writes 32 KiB). */
const CONMON_ATTACH_MESSAGE = 32 * 1024;

export interface ExecTarget {
  backend: RuncBackend;
  containerId: string;
  cmd: string[];
  tty: boolean;
}

export interface AttachTarget {
  backend: RuncBackend;
  containerId: string;
  tty: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function ended(stream: Readable | null | undefined): Promise<void> {
  if (!stream || stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}

/** Waits for the pid file the runtime writes once the process runs, then kills it. */
async function killExec(target: ExecTarget, pidFile: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if (await target.backend.killStreamingExec(pidFile)) return;
    if (!(await fsp.stat(pidFile).catch(() => undefined)) && i > 10) return;
    await sleep(20);
  }
}

/** Runs the command in the container (`runtime exec`): on pipes, or on a terminal under conmon; reports its exit. */
export async function serveExec(streams: RemoteCommandStreams, target: ExecTarget, log: Logger): Promise<void> {
  if (target.tty) {
    await serveTerminalExec(streams, target, log);
    return;
  }
  let prepared: Awaited<ReturnType<RuncBackend['prepareStreamingExec']>>;
  try {
    prepared = await target.backend.prepareStreamingExec(target.containerId, target.cmd, false);
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
    return;
  }
  let clientGone = false;
  void streams.gone.then(() => {
    clientGone = true;
  });
  try {
    const exitCode = await execWithPipes(streams, target, prepared, log);
    if (clientGone) log.info({ containerId: target.containerId }, 'exec client went away; process killed');
    await streams.finish({ exitCode });
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
  } finally {
    await prepared.cleanup();
  }
}

async function execWithPipes(
  streams: RemoteCommandStreams,
  target: ExecTarget,
  prepared: { file: string; args: string[]; pidFile: string },
  log: Logger,
): Promise<number> {
  const child = spawnChild(prepared.file, prepared.args, {
    stdin: streams.stdin ? 'pipe' : 'ignore',
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
  relay(child.stdout, streams.stdout);
  relay(child.stderr, streams.stderr);
  if (streams.stdin && child.stdin) {
    child.stdin.on('error', () => undefined); // the process may exit without reading its input
    relay(streams.stdin, child.stdin, { end: true });
  }
  void streams.gone.then(async () => {
    if (child.exitCode !== null) return;
    await killExec(target, prepared.pidFile);
    child.kill('SIGKILL');
  });
  const exitCode = await exited;
  // A background child of the command may keep the pipes open: give the output a moment, no more.
  await Promise.race([Promise.all([ended(child.stdout), ended(child.stderr)]), sleep(1000)]);
  log.debug({ containerId: target.containerId, exitCode }, 'exec finished');
  return exitCode;
}

/**
 * A command on a terminal: one pty, made by runc inside the container and held by the exec's own
 * conmon; we talk to it through conmon's attach socket. Its line discipline is the only one, so
 * output is translated (LF to CR LF) exactly once, and its size is set before the command starts.
 */
async function serveTerminalExec(streams: RemoteCommandStreams, target: ExecTarget, log: Logger): Promise<void> {
  // Sizes sent before the command starts decide its first size; later ones go to conmon.
  let size = { width: 80, height: 24 };
  let apply: ((width: number, height: number) => void) | undefined;
  streams.onResize((next) => {
    if (next.width <= 0 || next.height <= 0) return;
    size = { width: next.width, height: next.height };
    apply?.(next.width, next.height);
  });
  const started = { ...size };
  let exec: TerminalExec;
  try {
    exec = await target.backend.startTerminalExec(target.containerId, target.cmd, { stdin: Boolean(streams.stdin), ...started });
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
    return;
  }
  try {
    if (exec.message !== undefined && streams.stdout && !streams.stdout.destroyed) streams.stdout.write(`${exec.message}\r\n`);
    let done = false;
    apply = (width, height) => {
      if (done) return;
      exec.resize(width, height).catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'exec resize failed'));
    };
    // A size that came while the command was being started.
    if (size.width !== started.width || size.height !== started.height) apply(size.width, size.height);
    relay(exec.session.stdout, streams.stdout);
    exec.session.stderr.resume();
    exec.session.stdin.on('error', () => undefined);
    // Each write is one SOCK_SEQPACKET message and conmon reads at most 32 KiB of one: more is cut off.
    if (streams.stdin) relay(streams.stdin, exec.session.stdin, { maxChunk: CONMON_ATTACH_MESSAGE });
    let clientGone = false;
    void streams.gone.then(async () => {
      if (done) return;
      clientGone = true;
      await exec.kill();
    });
    const exitCode = await exec.exited;
    done = true;
    // conmon sends the terminal's last output before it reports the exit; what is still in flight ends with the socket.
    await Promise.race([exec.session.closed, sleep(1000)]);
    await Promise.race([ended(exec.session.stdout), sleep(1000)]);
    if (clientGone) log.info({ containerId: target.containerId }, 'exec client went away; process killed');
    log.debug({ containerId: target.containerId, exitCode }, 'exec finished');
    await streams.finish({ exitCode });
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
  } finally {
    await exec.cleanup();
  }
}

/** Connects the client to the container's stdio through its monitor; detaching leaves the container running. */
export async function serveAttach(streams: RemoteCommandStreams, target: AttachTarget, log: Logger): Promise<void> {
  let session: Awaited<ReturnType<RuncBackend['attach']>>;
  try {
    session = await target.backend.attach(target.containerId);
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
    return;
  }
  relay(session.stdout, streams.stdout);
  relay(session.stderr, target.tty ? streams.stdout : streams.stderr);
  session.stdin.on('error', () => undefined);
  // Each write is one SOCK_SEQPACKET message and conmon reads at most 32 KiB of one: more is cut off.
  if (streams.stdin) relay(streams.stdin, session.stdin, { end: true, maxChunk: CONMON_ATTACH_MESSAGE });
  if (target.tty) {
    streams.onResize((size) => {
      target.backend.resizeTerminal(target.containerId, size.width, size.height).catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'attach resize failed'));
    });
  }
  const which = await Promise.race([session.closed.then(() => 'container' as const), streams.gone.then(() => 'client' as const)]);
  if (which === 'client') {
    session.close();
    return;
  }
  await streams.finish({ exitCode: 0 });
}
