// Exec and attach behind the streaming server: the container side of a RemoteCommandStreams session.
import type { Readable } from 'node:stream';
import type { AttachSession, ExecSession, RuntimeBackend } from '../runtime/backend.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { RemoteCommandStreams } from './channels.js';
import { relay } from './flow.js';

export interface ExecTarget {
  backend: RuntimeBackend;
  containerId: string;
  cmd: string[];
  tty: boolean;
}

export interface AttachTarget {
  backend: RuntimeBackend;
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

/**
 * Runs the command in the container with stdio of its own (on a terminal when tty: one pty, inside the
 * container, whose line discipline is the only one, sized before the command starts); reports its exit.
 */
export async function serveExec(streams: RemoteCommandStreams, target: ExecTarget, log: Logger): Promise<void> {
  // Sizes sent before the command starts decide its first size; later ones go to the session.
  let size = { width: 80, height: 24 };
  let apply: ((width: number, height: number) => void) | undefined;
  if (target.tty) {
    streams.onResize((next) => {
      if (next.width <= 0 || next.height <= 0) return;
      size = { width: next.width, height: next.height };
      apply?.(next.width, next.height);
    });
  }
  const started = { ...size };
  let exec: ExecSession;
  try {
    exec = await target.backend.exec(target.containerId, {
      process: { args: target.cmd },
      tty: target.tty,
      stdin: Boolean(streams.stdin),
      ...(target.tty ? started : {}),
    });
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
    return;
  }
  try {
    if (exec.message !== undefined && streams.stdout && !streams.stdout.destroyed) streams.stdout.write(`${exec.message}\r\n`);
    let done = false;
    const resizeExec = inOrder((width, height) => exec.resize(width, height), (err) => log.debug({ err: errorMessage(err) }, 'exec resize failed'));
    if (target.tty) {
      apply = (width, height) => {
        if (done) return;
        resizeExec(width, height);
      };
      // A size that came while the command was being started.
      if (size.width !== started.width || size.height !== started.height) apply(size.width, size.height);
    }
    relay(exec.stdout, streams.stdout);
    if (target.tty) exec.stderr.resume();
    else relay(exec.stderr, streams.stderr);
    exec.stdin.on('error', () => undefined); // the process may exit without reading its input
    if (streams.stdin) relay(streams.stdin, exec.stdin, { end: !target.tty, maxChunk: exec.maxStdinChunk });
    let clientGone = false;
    void streams.gone.then(async () => {
      if (done) return;
      clientGone = true;
      await exec.kill();
    });
    const exitCode = await exec.exited;
    done = true;
    // A background child of the command may keep the output open: give it a moment, no more.
    await Promise.race([Promise.all([ended(exec.stdout), ended(exec.stderr)]), sleep(target.tty ? 2000 : 1000)]);
    if (clientGone) log.info({ containerId: target.containerId }, 'exec client went away; process killed');
    log.debug({ containerId: target.containerId, exitCode }, 'exec finished');
    await streams.finish({ exitCode });
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
  } finally {
    await exec.close();
  }
}

/** Connects the client to the container's stdio through its monitor; detaching leaves the container running. */
export async function serveAttach(streams: RemoteCommandStreams, target: AttachTarget, log: Logger): Promise<void> {
  let session: AttachSession;
  try {
    session = await target.backend.attach(target.containerId);
  } catch (err) {
    await streams.finish({ error: errorMessage(err) });
    return;
  }
  relay(session.stdout, streams.stdout);
  relay(session.stderr, target.tty ? streams.stdout : streams.stderr);
  session.stdin.on('error', () => undefined);
  if (streams.stdin) relay(streams.stdin, session.stdin, { end: true, maxChunk: session.maxStdinChunk });
  if (target.tty) {
    const resizeAttached = inOrder(
      (width, height) => target.backend.resize(target.containerId, width, height),
      (err) => log.debug({ err: errorMessage(err) }, 'attach resize failed'),
    );
    streams.onResize((size) => resizeAttached(size.width, size.height));
  }
  const which = await Promise.race([session.closed.then(() => 'container' as const), streams.gone.then(() => 'client' as const)]);
  if (which === 'client') {
    session.close();
    return;
  }
  await streams.finish({ exitCode: 0 });
}

/**
 * Applies terminal sizes one at a time, the latest winning: two resizes sent back to back (`stty cols 77 rows 22`)
 * must not reach the terminal out of order, and sizes that queued up meanwhile collapse into the last one.
 */
function inOrder(resize: (width: number, height: number) => Promise<void>, onError: (err: unknown) => void): (width: number, height: number) => void {
  let running = false;
  let pending: { width: number; height: number } | undefined;
  const next = async (): Promise<void> => {
    running = true;
    while (pending) {
      const { width, height } = pending;
      pending = undefined;
      await resize(width, height).catch(onError);
    }
    running = false;
  };
  return (width, height) => {
    pending = { width, height };
    if (!running) void next();
  };
}
