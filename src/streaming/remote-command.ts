// Exec and attach behind the streaming server: the container side of a RemoteCommandStreams session.
import { promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { RuncBackend } from '../runtime/runc/backend.js';
import { spawnChild } from '../common/exec.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { RemoteCommandStreams } from './channels.js';
import { ptyQueuedBytes, relay, relayToPty } from './flow.js';

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

/** Runs the command in the container (`runtime exec`), with a pty when tty is set, and reports its exit. */
export async function serveExec(streams: RemoteCommandStreams, target: ExecTarget, log: Logger): Promise<void> {
  let prepared: Awaited<ReturnType<RuncBackend['prepareStreamingExec']>>;
  try {
    prepared = await target.backend.prepareStreamingExec(target.containerId, target.cmd, target.tty);
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
    return;
  }
  let clientGone = false;
  void streams.gone.then(() => {
    clientGone = true;
  });
  try {
    const exitCode = target.tty ? await execWithTerminal(streams, target, prepared, log) : await execWithPipes(streams, target, prepared, log);
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

async function execWithTerminal(
  streams: RemoteCommandStreams,
  target: ExecTarget,
  prepared: { file: string; args: string[]; pidFile: string },
  log: Logger,
): Promise<number> {
  log.debug({ cmd: prepared.file, args: prepared.args }, 'spawn with pty');
  // The runtime is given a pty as its stdio; with a terminal process it makes the container's own pty
  // and relays it, following our pty's size on SIGWINCH.
  const pty = await import('node-pty'); // native, loaded on the first TTY exec only
  const term = pty.spawn(prepared.file, prepared.args, {
    name: 'xterm',
    cols: 80,
    rows: 24,
    env: process.env as Record<string, string>,
  });
  let lastOutput = Date.now();
  let outputPaused = false;
  term.onData((data: string) => {
    lastOutput = Date.now();
    const out = streams.stdout;
    if (!out || out.destroyed || out.writableEnded) return;
    // A client that reads slower than the command writes holds the command back, not our memory.
    if (!out.write(Buffer.from(data, 'binary')) && !outputPaused) {
      outputPaused = true;
      term.pause();
      const goOn = (): void => {
        out.off('drain', goOn);
        out.off('close', goOn);
        outputPaused = false;
        term.resume();
      };
      out.on('drain', goOn);
      out.on('close', goOn);
    }
  });
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode, signal }) => resolve(signal ? 128 + signal : exitCode)));
  let done = false;
  streams.onResize((size) => {
    if (done || size.width <= 0 || size.height <= 0) return;
    try {
      term.resize(size.width, size.height);
    } catch (err) {
      log.debug({ err: errorMessage(err) }, 'pty resize failed');
    }
  });
  if (streams.stdin) {
    relayToPty(streams.stdin, (chunk) => term.write(chunk.toString('binary')), () => ptyQueuedBytes(term), () => done);
  }
  void streams.gone.then(async () => {
    if (done) return;
    await killExec(target, prepared.pidFile);
    try {
      term.kill('SIGKILL');
    } catch {
      // already gone
    }
  });
  const exitCode = await exited;
  done = true;
  // node-pty can report the exit before the last output was read; wait for it to go quiet.
  const deadline = Date.now() + 500;
  while (Date.now() < deadline && Date.now() - lastOutput < 100) await sleep(25);
  return exitCode;
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
