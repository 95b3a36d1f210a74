// The stdio of one exec/attach session as the runtime side sees it, whichever protocol family
// carries it: SPDY streams named by `streamType`, or WebSocket channels named by a prefix byte.
import { PassThrough, Writable, type Readable } from 'node:stream';
import type { WebSocket } from 'ws';
import type { SpdySession, SpdyStream } from './spdy.js';
import {
  CHANNEL_CLOSE,
  CHANNEL_ERROR,
  CHANNEL_RESIZE,
  CHANNEL_STDERR,
  CHANNEL_STDIN,
  CHANNEL_STDOUT,
  ResizeDecoder,
  STREAM_ERROR,
  STREAM_RESIZE,
  STREAM_STDERR,
  STREAM_STDIN,
  STREAM_STDOUT,
  exitStatus,
  exitText,
  protocolVersion,
  usesStatusObject,
  type TerminalSize,
} from './protocol.js';
import { invalidArgument } from '../common/errors.js';

export interface StdioOptions {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

export interface ExitResult {
  exitCode?: number;
  /** A failure that is not the command's exit (the runtime could not run it). */
  error?: string;
}

export interface RemoteCommandStreams {
  protocol: string;
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  /** Terminal sizes in arrival order; sizes sent before a listener was set are replayed to it. */
  onResize(listener: (size: TerminalSize) => void): void;
  /** Resolves when the client has gone away (or the session was finished). */
  gone: Promise<void>;
  /** Ends the output streams, writes the exit status to the error stream and closes the connection. */
  finish(result: ExitResult): Promise<void>;
}

class ResizeFeed {
  private listener: ((size: TerminalSize) => void) | undefined;
  private pending: TerminalSize[] = [];
  push(size: TerminalSize): void {
    if (this.listener) this.listener(size);
    else this.pending.push(size);
  }
  on(listener: (size: TerminalSize) => void): void {
    this.listener = listener;
    for (const size of this.pending.splice(0)) listener(size);
  }
}

function endWritable(w: Writable | undefined): Promise<void> {
  if (!w || w.writableFinished || w.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    w.once('finish', resolve);
    w.once('close', resolve);
    w.once('error', () => resolve());
    w.end();
  });
}

/** How long a client may take to open the streams of a session (the kubelet's streamCreationTimeout). */
export const STREAM_CREATION_TIMEOUT_MS = 30_000;
/** What a WebSocket session buffers for the process's stdin before it stops reading the connection. */
const WS_STDIN_BUFFER = 64 * 1024;

/** Waits for the streams the options call for (error always; resize with a tty from v3 on). */
export async function spdyRemoteCommand(session: SpdySession, protocol: string, opts: StdioOptions, timeoutMs = STREAM_CREATION_TIMEOUT_MS): Promise<RemoteCommandStreams> {
  const wanted = new Set<string>([STREAM_ERROR]);
  if (opts.stdin) wanted.add(STREAM_STDIN);
  if (opts.stdout) wanted.add(STREAM_STDOUT);
  if (opts.stderr && !opts.tty) wanted.add(STREAM_STDERR);
  if (opts.tty && protocolVersion(protocol) >= 3) wanted.add(STREAM_RESIZE);
  const got = new Map<string, SpdyStream>();
  const resize = new ResizeFeed();
  const decoder = new ResizeDecoder();

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(invalidArgument(`timed out waiting for client streams: got [${[...got.keys()].join(', ')}], want [${[...wanted].join(', ')}]`));
    }, timeoutMs);
    const onClose = (): void => {
      cleanup();
      reject(invalidArgument('client closed the connection before creating its streams'));
    };
    const onStream = (stream: SpdyStream): void => {
      stream.respond();
      const type = stream.headers.streamtype ?? '';
      if (got.has(type) || ![STREAM_ERROR, STREAM_STDIN, STREAM_STDOUT, STREAM_STDERR, STREAM_RESIZE].includes(type)) {
        stream.reset();
        return;
      }
      got.set(type, stream);
      if (type === STREAM_RESIZE) stream.on('data', (chunk: Buffer) => decoder.push(chunk).forEach((s) => resize.push(s)));
      else if (type !== STREAM_STDIN) stream.resume(); // the client writes nothing on output streams; drain its FIN
      if ([...wanted].every((w) => got.has(w))) {
        cleanup();
        resolve();
      }
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      session.off('stream', onStream);
      session.off('close', onClose);
    };
    session.on('stream', onStream);
    session.on('close', onClose);
  });
  // Streams the options didn't ask for but the client opened anyway are still served.
  session.on('stream', (stream) => {
    stream.respond();
    stream.resume();
  });

  let finished = false;
  return {
    protocol,
    stdin: got.get(STREAM_STDIN),
    stdout: got.get(STREAM_STDOUT),
    stderr: got.get(STREAM_STDERR),
    onResize: (listener) => resize.on(listener),
    gone: session.closed,
    async finish(result) {
      if (finished) return;
      finished = true;
      await Promise.all([endWritable(got.get(STREAM_STDOUT)), endWritable(got.get(STREAM_STDERR))]);
      const errorStream = got.get(STREAM_ERROR)!;
      const message = usesStatusObject(protocol) ? exitStatus(result) : exitText(result);
      if (message && !errorStream.destroyed && !errorStream.localClosed) errorStream.write(message);
      await endWritable(errorStream);
      got.get(STREAM_STDIN)?.destroy();
      got.get(STREAM_RESIZE)?.destroy();
      await session.close();
    },
  };
}

/** Frames outgoing data on a channel; base64 protocols send the channel as an ASCII digit and base64 text. */
export function wsChannelWriter(ws: WebSocket, base64: boolean): (channel: number, data: Buffer) => Promise<void> {
  return (channel, data) =>
    new Promise((resolve) => {
      if (ws.readyState !== ws.OPEN) return resolve();
      const message = base64 ? String.fromCharCode(48 + channel) + data.toString('base64') : Buffer.concat([Buffer.from([channel]), data]);
      ws.send(message, { binary: !base64 }, () => resolve());
    });
}

/** Pauses the WebSocket (its socket) until `target` drains or goes away. */
export function pauseUntilDrained(ws: WebSocket, target: Writable): void {
  if (ws.isPaused) return;
  ws.pause();
  const goOn = (): void => {
    target.off('drain', goOn);
    target.off('close', goOn);
    ws.resume();
  };
  target.on('drain', goOn);
  target.on('close', goOn);
}

export function wsClosed(ws: WebSocket): Promise<void> {
  if (ws.readyState === ws.CLOSED) return Promise.resolve();
  return new Promise((resolve) => ws.once('close', () => resolve()));
}

export function wsRemoteCommand(ws: WebSocket, protocol: string, opts: StdioOptions): RemoteCommandStreams {
  const base64 = protocol.includes('base64');
  const closeSignal = protocolVersion(protocol) >= 5;
  const send = wsChannelWriter(ws, base64);
  const resize = new ResizeFeed();
  const decoder = new ResizeDecoder();
  const stdin = opts.stdin ? new PassThrough({ highWaterMark: WS_STDIN_BUFFER }) : undefined;
  const writer = (channel: number): Writable =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        send(channel, chunk).then(() => cb());
      },
    });
  const stdout = opts.stdout ? writer(CHANNEL_STDOUT) : undefined;
  const stderr = opts.stderr && !opts.tty ? writer(CHANNEL_STDERR) : undefined;

  ws.on('message', (raw: Buffer | ArrayBuffer | Buffer[]) => {
    let data = Buffer.isBuffer(raw) ? raw : Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw);
    if (data.length === 0) return;
    let channel = data[0]!;
    if (closeSignal && channel === CHANNEL_CLOSE) {
      if (data[1] === CHANNEL_STDIN) stdin?.end();
      return;
    }
    data = data.subarray(1);
    if (base64) {
      channel -= 48;
      data = Buffer.from(data.toString('latin1'), 'base64');
    }
    if (channel === CHANNEL_STDIN) {
      // Stop reading the connection until the process has taken what is buffered.
      if (stdin && !stdin.writableEnded && !stdin.destroyed && !stdin.write(data)) pauseUntilDrained(ws, stdin);
    } else if (channel === CHANNEL_RESIZE) {
      decoder.push(data).forEach((s) => resize.push(s));
    }
  });
  const gone = wsClosed(ws);
  void gone.then(() => {
    if (stdin && !stdin.writableEnded) stdin.end();
  });
  // The kubelet tells the client the session is up with an empty message on the lowest writable channel.
  void send(stdout ? CHANNEL_STDOUT : stderr ? CHANNEL_STDERR : CHANNEL_ERROR, Buffer.alloc(0));

  let finished = false;
  return {
    protocol,
    stdin,
    stdout,
    stderr,
    onResize: (listener) => resize.on(listener),
    gone,
    async finish(result) {
      if (finished) return;
      finished = true;
      await Promise.all([endWritable(stdout), endWritable(stderr)]);
      const message = usesStatusObject(protocol) ? exitStatus(result) : exitText(result);
      if (message) await send(CHANNEL_ERROR, Buffer.from(message));
      if (ws.readyState === ws.OPEN) ws.close(1000);
      const timer = setTimeout(() => ws.terminate(), 5000);
      timer.unref();
      await gone;
      clearTimeout(timer);
    },
  };
}
