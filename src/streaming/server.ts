// The streaming server: Exec/Attach/PortForward hand out a URL holding a single-use token; the client
// redeems it with an HTTP upgrade to SPDY/3.1 or to a WebSocket, on the same URL, as with the kubelet.
import { listenOn, parseHostPort } from '../common/address.js';
import http from 'node:http';
import https from 'node:https';
import { promises as fsp } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
// ws is loaded on the first WebSocket session: an idle daemon doesn't carry it.
import type { WebSocket } from 'ws';
import type { RuntimeService } from '../runtime/runtime-service.js';
import type { RuntimeBackend } from '../runtime/backend.js';
import { errorMessage, failedPrecondition, invalidArgument } from '../common/errors.js';
import { logger, type Logger } from '../common/log.js';
import { TokenCache } from './tokens.js';
import { SpdySession } from './spdy.js';
import { STREAM_CREATION_TIMEOUT_MS, spdyRemoteCommand, wsRemoteCommand, type StdioOptions } from './channels.js';
import { serveAttach, serveExec } from './remote-command.js';
import { serveSpdyPortForward, serveWsPortForward, type PortForwardTarget } from './port-forward.js';
import {
  HEADER_ACCEPTED_PROTOCOLS,
  HEADER_STREAM_PROTOCOL,
  SPDY_PORTFORWARD_PROTOCOLS,
  SPDY_REMOTECOMMAND_PROTOCOLS,
  WS_PORTFORWARD_PROTOCOLS,
  WS_REMOTECOMMAND_PROTOCOLS,
  WS_SPDY_TUNNEL_PROTOCOL,
  headerList,
  negotiate,
} from './protocol.js';

export interface ExecStreamRequest extends StdioOptions {
  kind: 'exec';
  containerId: string;
  cmd: string[];
}

export interface AttachStreamRequest extends StdioOptions {
  kind: 'attach';
  containerId: string;
}

export interface PortForwardStreamRequest {
  kind: 'portforward';
  sandboxId: string;
  ports: number[];
}

export type StreamRequest = ExecStreamRequest | AttachStreamRequest | PortForwardStreamRequest;

export interface StreamingServerOptions {
  /** HOST:PORT; port 0 picks a free one. */
  address: string;
  tlsCert?: string;
  tlsKey?: string;
  runtime: RuntimeService;
  /** An exec/attach/port-forward connection with no traffic either way for this long is closed; 0: never (default 4 h). */
  idleTimeoutSeconds?: number;
  /** How long a SPDY client may take to open a session's streams (a port-forward's stream pair) (default 30 s). */
  streamCreationTimeoutSeconds?: number;
}

/** The kubelet's streamingConnectionIdleTimeout default. */
export const DEFAULT_STREAM_IDLE_TIMEOUT_SECONDS = 4 * 60 * 60;
/** HTTP before the upgrade: a connection gets this long to send its request headers... */
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;
/** ...and the whole request (the upgrade requests have no body). */
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;
/** A connection that sends nothing at all (Node's header timer only starts at the first byte); longer than
 * the header timeout, so that a half-sent request gets its 408 first. */
export const HTTP_SOCKET_IDLE_TIMEOUT_MS = 15_000;
/** Between two requests on one kept-alive connection. */
export const HTTP_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** The largest WebSocket message read (x/net/websocket's default, which the kubelet's streaming library uses). */
export const WS_MAX_MESSAGE_BYTES = 32 * 1024 * 1024;

/** Timeouts for an HTTP server that must not keep silent or slow connections open. */
export function httpServerTimeouts(): http.ServerOptions {
  return {
    headersTimeout: HTTP_HEADERS_TIMEOUT_MS,
    requestTimeout: HTTP_REQUEST_TIMEOUT_MS,
    keepAliveTimeout: HTTP_KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: 1000,
  };
}

/** Stands in for a negotiated protocol name ws would refuse (see serveWebSocket). */
const WS_PROTOCOL_STANDIN = 'nodelet-negotiated-protocol';
/** Splits HOST:PORT (IPv6 in brackets). */
const PATH_PATTERN = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]+)$/;

export class StreamingServer {
  private readonly tokens = new TokenCache<StreamRequest>();
  private readonly sockets = new Set<Duplex>();
  private server: http.Server | https.Server | undefined;
  private url = '';
  private readonly log: Logger = logger({ component: 'streaming' });

  constructor(private readonly opts: StreamingServerOptions) {}

  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.opts.address, 'streaming address');
    const tls = Boolean(this.opts.tlsCert && this.opts.tlsKey);
    const server = tls
      ? https.createServer({
          ...httpServerTimeouts(),
          handshakeTimeout: HTTP_HEADERS_TIMEOUT_MS,
          cert: await fsp.readFile(this.opts.tlsCert!),
          key: await fsp.readFile(this.opts.tlsKey!),
        })
      : http.createServer(httpServerTimeouts());
    // No 'timeout' listener: Node destroys a socket idle this long before its request (not after an upgrade).
    server.setTimeout(HTTP_SOCKET_IDLE_TIMEOUT_MS);
    server.on(tls ? 'secureConnection' : 'connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('request', (req, res) => this.onPlainRequest(req, res));
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      this.onUpgrade(req, socket, head).catch((err: unknown) => {
        this.log.warn({ err: errorMessage(err), url: req.url }, 'streaming request failed');
        socket.destroy();
      });
    });
    await listenOn(server, host, port);
    this.server = server;
    const bound = server.address() as AddressInfo;
    const shownHost = !host || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
    this.url = `${tls ? 'https' : 'http'}://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${bound.port}`;
    this.log.info({ url: this.url }, 'streaming server listening');
  }

  /** The server's base URL, e.g. http://127.0.0.1:34567. */
  get baseUrl(): string {
    return this.url;
  }

  /** Registers a validated request and returns the URL a client upgrades on. */
  issue(request: StreamRequest): string {
    if (!this.server) throw failedPrecondition('streaming server is not running');
    return `${this.url}/${request.kind}/${this.tokens.issue(request)}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onPlainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const m = PATH_PATTERN.exec(new URL(req.url ?? '/', 'http://x').pathname);
    const request = m ? this.tokens.redeem(m[2]!) : undefined;
    if (!m || !request || request.kind !== m[1]) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found\n');
      return;
    }
    res.writeHead(400, { 'content-type': 'text/plain' }).end('unable to upgrade: missing upgrade headers in request\n');
  }

  private async onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const url = new URL(req.url ?? '/', 'http://x');
    const m = PATH_PATTERN.exec(url.pathname);
    const request = m ? this.tokens.redeem(m[2]!) : undefined;
    if (!m || !request || request.kind !== m[1]) return refuse(socket, 404, '404 page not found');
    const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
    const log = this.log.child({ kind: request.kind, ...(request.kind === 'portforward' ? { sandboxId: request.sandboxId } : { containerId: request.containerId }) });

    let target: { backend: RuntimeBackend } | PortForwardTarget;
    try {
      target = this.resolve(request);
    } catch (err) {
      return refuse(socket, 500, errorMessage(err));
    }

    if (upgrade === 'websocket') return this.serveWebSocket(req, socket, head, request, target, url, log);
    if (upgrade !== 'spdy/3.1' || !/\bupgrade\b/i.test(String(req.headers.connection ?? ''))) {
      return refuse(socket, 400, 'unable to upgrade: missing upgrade headers in request');
    }
    const served = request.kind === 'portforward' ? SPDY_PORTFORWARD_PROTOCOLS : SPDY_REMOTECOMMAND_PROTOCOLS;
    const offered = headerList(req.headers[HEADER_STREAM_PROTOCOL]);
    const protocol = negotiate(offered, served);
    if (protocol === undefined) {
      return refuse(
        socket,
        403,
        `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server accepts [${served.join(' ')}]`,
        served.map((p) => `${HEADER_ACCEPTED_PROTOCOLS}: ${p}`),
      );
    }
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n' +
        (protocol ? `${HEADER_STREAM_PROTOCOL}: ${protocol}\r\n` : '') +
        '\r\n',
    );
    if (head.length) socket.unshift(head);
    const session = new SpdySession(socket, 'server');
    this.closeWhenIdle(socket, log);
    session.on('protocolError', (err) => log.info({ err: err.message }, 'spdy protocol error; session closed'));
    log.debug({ protocol }, 'spdy session');
    if (request.kind === 'portforward') {
      await serveSpdyPortForward(session, target as PortForwardTarget, log, this.streamCreationTimeoutMs);
      return;
    }
    const streams = await spdyRemoteCommand(session, protocol || 'channel.k8s.io', request, this.streamCreationTimeoutMs).catch((err: unknown) => {
      log.info({ err: errorMessage(err) }, 'spdy client did not set up its streams');
      session.destroy();
      return undefined;
    });
    if (!streams) return;
    await this.serveRemoteCommand(request, streams, target as { backend: RuntimeBackend }, log);
  }

  private async serveWebSocket(
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    request: StreamRequest,
    target: { backend: RuntimeBackend } | PortForwardTarget,
    url: URL,
    log: Logger,
  ): Promise<void> {
    const served: readonly string[] = request.kind === 'portforward' ? [...WS_PORTFORWARD_PROTOCOLS, WS_SPDY_TUNNEL_PROTOCOL] : WS_REMOTECOMMAND_PROTOCOLS;
    const offered = headerList(req.headers['sec-websocket-protocol']);
    const protocol = negotiate(offered, served);
    if (protocol === undefined) {
      return refuse(socket, 400, `requested protocol(s) are not supported: [${offered.join(' ')}]; supports [${served.join(' ')}]`);
    }
    const { WebSocketServer } = await import('ws');
    // ws refuses (400) a Sec-WebSocket-Protocol that is not a list of RFC 7230 tokens, and the SPDY
    // tunnel's name has a '/' (SPDY/3.1+portforward.k8s.io): ws gets a token, the answer the real name.
    const answered = protocol && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(protocol) ? WS_PROTOCOL_STANDIN : protocol;
    if (answered !== protocol) req.headers['sec-websocket-protocol'] = answered;
    return new Promise<void>((resolve) => {
      // ws answers with the protocol chosen here; with none offered it sends no header at all.
      const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: WS_MAX_MESSAGE_BYTES, handleProtocols: () => answered || false });
      if (answered !== protocol) {
        wss.on('headers', (headers: string[]) => {
          const i = headers.indexOf(`Sec-WebSocket-Protocol: ${answered}`);
          if (i >= 0) headers[i] = `Sec-WebSocket-Protocol: ${protocol}`;
        });
      }
      wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        wss.close();
        // A frame that breaks the protocol (reserved opcode or bits, an unmasked frame, a bad length,
        // close code or UTF-8): ws closes this connection with the matching close code and reports it
        // here. Without a listener the report would be an uncaught error, and the daemon would die.
        ws.on('error', (err: Error & { code?: string }) => log.info({ err: err.message, code: err.code }, 'websocket protocol error; session closed'));
        this.closeWhenIdle(socket, log); // after ws, which clears the socket's timeout
        log.debug({ protocol }, 'websocket session');
        const done = this.serveWebSocketSession(ws, protocol, request, target, url, log).catch((err: unknown) => {
          log.warn({ err: errorMessage(err) }, 'websocket session failed');
          ws.terminate();
        });
        void done.then(resolve);
      });
    });
  }

  /** Closes an upgraded connection that has seen no traffic either way for the idle timeout. */
  private closeWhenIdle(socket: Duplex, log: Logger): void {
    const ms = (this.opts.idleTimeoutSeconds ?? DEFAULT_STREAM_IDLE_TIMEOUT_SECONDS) * 1000;
    const s = socket as Partial<Socket>;
    if (typeof s.setTimeout !== 'function') return;
    s.setTimeout(ms > 0 ? ms : 0);
    if (!(ms > 0)) return;
    socket.once('timeout', () => {
      log.info({ idleTimeoutMs: ms }, 'streaming connection idle; closed');
      socket.destroy();
    });
  }

  private get streamCreationTimeoutMs(): number {
    const seconds = this.opts.streamCreationTimeoutSeconds;
    return seconds && seconds > 0 ? seconds * 1000 : STREAM_CREATION_TIMEOUT_MS;
  }

  private async serveWebSocketSession(
    ws: WebSocket,
    protocol: string,
    request: StreamRequest,
    target: { backend: RuntimeBackend } | PortForwardTarget,
    url: URL,
    log: Logger,
  ): Promise<void> {
    if (request.kind === 'portforward') {
      const pfTarget = target as PortForwardTarget;
      if (protocol === WS_SPDY_TUNNEL_PROTOCOL) {
        const { createWebSocketStream } = await import('ws');
        const session = new SpdySession(createWebSocketStream(ws), 'server');
        session.on('protocolError', (err) => log.info({ err: err.message }, 'spdy protocol error; session closed'));
        await serveSpdyPortForward(session, pfTarget, log, this.streamCreationTimeoutMs);
        return;
      }
      const fromQuery = url.searchParams.getAll('ports').flatMap((p) => p.split(',')).filter(Boolean).map(Number);
      const ports = fromQuery.length ? fromQuery : request.ports;
      if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p <= 0 || p > 65535)) {
        ws.close(1008, 'query parameter "ports" is required: valid ports');
        return;
      }
      await serveWsPortForward(ws, protocol || 'portforward.k8s.io', ports, pfTarget, log);
      return;
    }
    const streams = wsRemoteCommand(ws, protocol || 'channel.k8s.io', request);
    await this.serveRemoteCommand(request, streams, target as { backend: RuntimeBackend }, log);
  }

  private async serveRemoteCommand(
    request: ExecStreamRequest | AttachStreamRequest,
    streams: Parameters<typeof serveExec>[0],
    target: { backend: RuntimeBackend },
    log: Logger,
  ): Promise<void> {
    if (request.kind === 'exec') {
      await serveExec(streams, { backend: target.backend, containerId: request.containerId, cmd: request.cmd, tty: request.tty }, log);
    } else {
      await serveAttach(streams, { backend: target.backend, containerId: request.containerId, tty: request.tty }, log);
    }
  }

  /** The container's backend or the sandbox's netns, as they are now. */
  private resolve(request: StreamRequest): { backend: RuntimeBackend } | PortForwardTarget {
    const rt = this.opts.runtime;
    if (request.kind === 'portforward') {
      const sandbox = rt.sandboxes.get(request.sandboxId);
      if (sandbox.state !== 'SANDBOX_READY') throw failedPrecondition(`pod sandbox ${sandbox.id} is not ready`);
      return { sandboxId: sandbox.id, netnsPath: sandbox.hostNetwork ? undefined : sandbox.netnsPath };
    }
    const rec = rt.ctx.containers.get(request.containerId);
    if (!rec) throw failedPrecondition(`container ${request.containerId} not found`);
    return { backend: rt.ctx.backend(rec.runtimeHandler) };
  }
}

function refuse(socket: Duplex, status: number, message: string, extraHeaders: string[] = []): void {
  const body = `${message}\n`;
  const reason = http.STATUS_CODES[status] ?? 'Error';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n` +
      extraHeaders.map((h) => `${h}\r\n`).join('') +
      `\r\n${body}`,
  );
}
