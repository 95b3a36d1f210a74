// The client side of the streaming protocols, for `nodelet exec/attach/port-forward` and the tests:
// SPDY/3.1 (HTTP upgrade, a stream per stdio) or WebSocket (a channel byte per message).
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { Duplex, PassThrough, Writable, type Readable } from 'node:stream';
import { WebSocket } from 'ws';
import { SpdySession, type SpdyStream } from './spdy.js';
import {
  CHANNEL_CLOSE,
  CHANNEL_ERROR,
  CHANNEL_RESIZE,
  CHANNEL_STDERR,
  CHANNEL_STDIN,
  CHANNEL_STDOUT,
  HEADER_STREAM_PROTOCOL,
  SPDY_PORTFORWARD_PROTOCOLS,
  SPDY_REMOTECOMMAND_PROTOCOLS,
  STREAM_DATA,
  STREAM_ERROR,
  STREAM_RESIZE,
  STREAM_STDERR,
  STREAM_STDIN,
  STREAM_STDOUT,
  parseExitStatus,
  protocolVersion,
  resizeMessage,
  type TerminalSize,
} from './protocol.js';

export type StreamFamily = 'spdy' | 'websocket';

export interface RemoteCommandOptions {
  /** The URL the Exec or Attach RPC returned. */
  url: string;
  family?: StreamFamily;
  /** Subprotocols offered, most preferred first (default: all the family has). */
  protocols?: string[];
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
  /** Accept any TLS certificate (the streaming server's is usually self-signed). */
  insecure?: boolean;
}

export interface ExitOutcome {
  /** 0 on success, the command's code on a non-zero exit, -1 when it failed otherwise. */
  exitCode: number;
  message?: string;
}

export interface RemoteCommandSession {
  protocol: string;
  /** Write the command's input here; end() closes it (SPDY FIN, v5 close signal). */
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  resize(size: TerminalSize): void;
  /** Resolves once the server reported the exit and closed the connection. */
  done: Promise<ExitOutcome>;
  /** Drops the connection (the server then kills an exec). */
  close(): void;
}

/** An HTTP status the server refused the upgrade with (404 for an unknown token). */
export class StreamUpgradeError extends Error {
  constructor(
    readonly statusCode: number,
    readonly body: string,
  ) {
    super(`streaming upgrade refused: HTTP ${statusCode}: ${body.trim()}`);
    this.name = 'StreamUpgradeError';
  }
}

export const WS_CLIENT_REMOTECOMMAND_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];
export const WS_CLIENT_PORTFORWARD_PROTOCOLS = ['v2.portforward.k8s.io', 'portforward.k8s.io'];

/** Upgrades an HTTP connection to SPDY/3.1 and returns the client session and the chosen protocol. */
export function upgradeToSpdy(url: string, protocols: readonly string[], insecure = false): Promise<{ session: SpdySession; protocol: string }> {
  const target = new URL(url);
  const lib = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(target, {
      method: 'POST',
      headers: { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', [HEADER_STREAM_PROTOCOL]: [...protocols] },
      ...(target.protocol === 'https:' ? { rejectUnauthorized: !insecure } : {}),
    });
    req.once('upgrade', (res, socket, head) => {
      if (head.length) socket.unshift(head);
      const protocol = String(res.headers[HEADER_STREAM_PROTOCOL] ?? '');
      resolve({ session: new SpdySession(socket, 'client'), protocol });
    });
    req.once('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(new StreamUpgradeError(res.statusCode ?? 0, body)));
      res.on('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

/**
 * Opens a WebSocket with the given subprotocols; rejects with StreamUpgradeError on an HTTP refusal.
 * onMessage is attached before the handshake ends: messages can arrive in the same read as it.
 */
export function connectWebSocket(url: string, protocols: readonly string[], insecure: boolean | undefined, onMessage: (data: Buffer) => void): Promise<WebSocket> {
  const wsUrl = url.replace(/^http/, 'ws');
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, [...protocols], { perMessageDeflate: false, rejectUnauthorized: !insecure });
    ws.on('message', (raw: Buffer | ArrayBuffer | Buffer[]) => onMessage(Buffer.isBuffer(raw) ? raw : Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw)));
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(new StreamUpgradeError(res.statusCode ?? 0, body)));
    });
    ws.once('error', reject);
  });
}

function readAll(stream: Readable): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    stream.on('data', (c: Buffer) => (text += c.toString()));
    stream.once('end', () => resolve(text));
    stream.once('close', () => resolve(text));
    stream.once('error', () => resolve(text));
  });
}

function endedOrClosed(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}

/** Connects to an exec or attach URL. */
export async function openRemoteCommand(opts: RemoteCommandOptions): Promise<RemoteCommandSession> {
  return (opts.family ?? 'spdy') === 'spdy' ? openSpdyRemoteCommand(opts) : openWsRemoteCommand(opts);
}

async function openSpdyRemoteCommand(opts: RemoteCommandOptions): Promise<RemoteCommandSession> {
  const { session, protocol } = await upgradeToSpdy(opts.url, opts.protocols ?? SPDY_REMOTECOMMAND_PROTOCOLS, opts.insecure);
  const open = (type: string): SpdyStream => session.openStream({ streamtype: type });
  // As kubectl: the error stream first; the client never writes to error or output streams.
  const errorStream = open(STREAM_ERROR);
  errorStream.end();
  const stdinStream = opts.stdin ? open(STREAM_STDIN) : undefined;
  const stdout = opts.stdout ? open(STREAM_STDOUT) : undefined;
  const stderr = opts.stderr && !opts.tty ? open(STREAM_STDERR) : undefined;
  const resizeStream = opts.tty && protocolVersion(protocol) >= 3 ? open(STREAM_RESIZE) : undefined;
  stdout?.end();
  stderr?.end();
  const errorText = readAll(errorStream);
  const done = (async (): Promise<ExitOutcome> => {
    const text = await errorText;
    await Promise.all([stdout ? endedOrClosed(stdout) : undefined, stderr ? endedOrClosed(stderr) : undefined]);
    session.destroy();
    if (session.isClosed && !text && !errorStream.remoteClosed) return { exitCode: -1, message: 'connection closed before the exit status arrived' };
    return parseExitStatus(text);
  })();
  const none = (): PassThrough => {
    const p = new PassThrough();
    p.end();
    return p;
  };
  return {
    protocol,
    stdin: stdinStream ?? new Writable({ write: (_c, _e, cb) => cb() }),
    stdout: stdout ?? none(),
    stderr: stderr ?? none(),
    resize: (size) => {
      if (resizeStream && !resizeStream.writableEnded && !resizeStream.destroyed) resizeStream.write(resizeMessage(size));
    },
    done,
    close: () => session.destroy(),
  };
}

async function openWsRemoteCommand(opts: RemoteCommandOptions): Promise<RemoteCommandSession> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let errorText = '';
  const ws = await connectWebSocket(opts.url, opts.protocols ?? WS_CLIENT_REMOTECOMMAND_PROTOCOLS, opts.insecure, (data) => {
    if (data.length === 0) return;
    const payload = data.subarray(1);
    if (data[0] === CHANNEL_STDOUT) stdout.write(payload);
    else if (data[0] === CHANNEL_STDERR) stderr.write(payload);
    else if (data[0] === CHANNEL_ERROR) errorText += payload.toString();
  });
  const protocol = ws.protocol;
  const send = (channel: number, data: Buffer): void => {
    if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([channel]), data]));
  };
  const done = new Promise<ExitOutcome>((resolve) => {
    ws.once('close', () => {
      stdout.end();
      stderr.end();
      resolve(parseExitStatus(errorText));
    });
  });
  const stdin = new Writable({
    write(chunk: Buffer, _enc, cb) {
      // Done once the socket took it, so a writer that waits for drain is held to the connection's pace.
      if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([CHANNEL_STDIN]), chunk]), () => cb());
      else cb();
    },
    final(cb) {
      if (protocolVersion(protocol) >= 5) send(CHANNEL_CLOSE, Buffer.from([CHANNEL_STDIN]));
      cb();
    },
  });
  return {
    protocol,
    stdin,
    stdout,
    stderr,
    resize: (size) => send(CHANNEL_RESIZE, Buffer.from(resizeMessage(size))),
    done,
    close: () => ws.terminate(),
  };
}

export interface PortForwardStream {
  /** Bytes to and from the port in the pod. */
  data: Duplex;
  /** What the server reported on the error stream ('' when the connection went well). */
  error: Promise<string>;
}

export interface PortForwardSession {
  protocol: string;
  /** A new connection to the port (SPDY: any number; WebSocket: one per port given at open). */
  dial(port: number): PortForwardStream;
  close(): void;
  closed: Promise<void>;
}

export interface PortForwardOptions {
  url: string;
  family?: StreamFamily;
  /** WebSocket only: the ports to open channels for (sent as the `ports` query). */
  ports?: number[];
  protocols?: string[];
  insecure?: boolean;
}

export async function openPortForward(opts: PortForwardOptions): Promise<PortForwardSession> {
  if ((opts.family ?? 'spdy') === 'spdy') {
    const { session, protocol } = await upgradeToSpdy(opts.url, opts.protocols ?? SPDY_PORTFORWARD_PROTOCOLS, opts.insecure);
    let requestId = 0;
    return {
      protocol,
      dial(port) {
        const id = String(requestId++);
        const errorStream = session.openStream({ streamtype: STREAM_ERROR, port: String(port), requestid: id });
        errorStream.end();
        const data = session.openStream({ streamtype: STREAM_DATA, port: String(port), requestid: id });
        return { data, error: readAll(errorStream) };
      },
      close: () => void session.close(),
      closed: session.closed,
    };
  }
  const ports = opts.ports ?? [];
  const url = new URL(opts.url);
  for (const p of ports) url.searchParams.append('ports', String(p));
  const channels = ports.map(() => ({ data: new PassThrough(), error: '', seenData: false, seenError: false }));
  const errorDone = ports.map(() => {
    let resolve: (s: string) => void = () => undefined;
    const promise = new Promise<string>((r) => (resolve = r));
    return { promise, resolve };
  });
  const ws = await connectWebSocket(url.toString(), opts.protocols ?? WS_CLIENT_PORTFORWARD_PROTOCOLS, opts.insecure, (data) => {
    if (data.length === 0) return;
    const index = Math.floor(data[0]! / 2);
    const channel = channels[index];
    if (!channel) return;
    let payload = data.subarray(1);
    // The first message of every channel is the port it belongs to.
    if (data[0]! % 2 === 0) {
      if (!channel.seenData) {
        channel.seenData = true;
        payload = payload.subarray(2);
      }
      if (payload.length) channel.data.write(payload);
    } else {
      if (!channel.seenError) {
        channel.seenError = true;
        payload = payload.subarray(2);
      }
      channel.error += payload.toString();
    }
  });
  const closed = new Promise<void>((resolve) =>
    ws.once('close', () => {
      channels.forEach((c, i) => {
        c.data.end();
        errorDone[i]!.resolve(c.error);
      });
      resolve();
    }),
  );
  const dialed = new Set<number>();
  return {
    protocol: ws.protocol,
    dial(port) {
      const index = ports.indexOf(port);
      if (index < 0 || dialed.has(index)) throw new Error(`port ${port} was not requested at open, or is already in use on this WebSocket`);
      dialed.add(index);
      const incoming = channels[index]!.data;
      // Reads come from the channel; writes go out as channel messages.
      const data = new Duplex({
        read() {},
        write(chunk: Buffer, _enc, cb) {
          if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([index * 2]), chunk]), () => cb());
          else cb();
        },
      });
      incoming.on('data', (c: Buffer) => data.push(c));
      incoming.once('end', () => data.push(null));
      return { data, error: errorDone[index]!.promise };
    },
    close: () => ws.close(1000),
    closed,
  };
}

/**
 * Listens on a local port and forwards each connection to remotePort in the pod, as
 * `kubectl port-forward` does. getUrl is called for every connection on WebSocket (single-use
 * tokens, one connection per socket) and once for SPDY (one session multiplexes them all).
 */
export async function listenPortForward(opts: {
  localPort: number;
  localHost?: string;
  remotePort: number;
  family?: StreamFamily;
  getUrl: () => Promise<string>;
  onError?: (message: string) => void;
}): Promise<{ port: number; close(): Promise<void> }> {
  const family = opts.family ?? 'spdy';
  let spdy: Promise<PortForwardSession> | undefined;
  const sessions = new Set<PortForwardSession>();
  const server = net.createServer((socket) => {
    void (async () => {
      let session: PortForwardSession;
      if (family === 'spdy') {
        spdy ??= opts.getUrl().then((url) => openPortForward({ url, family }));
        session = await spdy;
      } else {
        session = await openPortForward({ url: await opts.getUrl(), family, ports: [opts.remotePort] });
      }
      sessions.add(session);
      const { data, error } = session.dial(opts.remotePort);
      socket.pipe(data);
      data.pipe(socket);
      void error.then((message) => {
        if (message) {
          opts.onError?.(message);
          socket.destroy();
        }
      });
      socket.once('close', () => {
        if (family === 'websocket') session.close();
      });
    })().catch((err: unknown) => {
      opts.onError?.(err instanceof Error ? err.message : String(err));
      socket.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.localPort, opts.localHost ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: async () => {
      for (const s of sessions) s.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Wires a session to a terminal or pipes, as `kubectl exec -it` does: raw mode on a TTY stdin,
 * the local window size sent at once and on every change, output copied; resolves with the exit.
 */
export async function runWithStdio(
  session: RemoteCommandSession,
  io: { stdin?: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown }; stdout: Writable & { columns?: number; rows?: number }; stderr: Writable; tty: boolean },
): Promise<ExitOutcome> {
  const raw = io.tty && io.stdin?.isTTY === true && typeof io.stdin.setRawMode === 'function';
  if (raw) io.stdin!.setRawMode!(true);
  const sendSize = (): void => {
    if (io.stdout.columns && io.stdout.rows) session.resize({ width: io.stdout.columns, height: io.stdout.rows });
  };
  if (io.tty) {
    sendSize();
    io.stdout.on('resize', sendSize);
  }
  session.stdout.pipe(io.stdout, { end: false });
  session.stderr.pipe(io.stderr, { end: false });
  if (io.stdin) io.stdin.pipe(session.stdin);
  try {
    return await session.done;
  } finally {
    io.stdout.off('resize', sendSize);
    if (io.stdin) {
      io.stdin.unpipe(session.stdin);
      io.stdin.pause();
    }
    if (raw) io.stdin!.setRawMode!(false);
  }
}
