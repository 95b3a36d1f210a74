// HTTP(S) requests for the registry client over node:http/node:https keep-alive agents, with its timeouts and cancel.
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { releaseBuffer } from '../common/release-buffer.js';

/** No response headers within headersTimeoutMs of the request, the socket having connected. */
export const HEADERS_TIMEOUT = 'NODELET_HTTP_HEADERS_TIMEOUT';
/** No connection within headersTimeoutMs of the request. */
export const CONNECT_TIMEOUT = 'NODELET_HTTP_CONNECT_TIMEOUT';
/** No body byte for bodyIdleTimeoutMs while the reader wanted more. */
export const BODY_TIMEOUT = 'NODELET_HTTP_BODY_TIMEOUT';

/** Bytes dump() reads to leave a connection reusable; a longer body closes the connection instead. */
const DUMP_LIMIT_BYTES = 128 * 1024;
/** Bytes text() and json() read at most: error bodies and tokens are small. */
const TEXT_LIMIT_BYTES = 1024 * 1024;

export interface HttpPoolOptions {
  /** Verify the server's TLS certificate. */
  rejectUnauthorized: boolean;
  /** Time from the request to its response headers, connecting included. */
  headersTimeoutMs: number;
  /** Longest silence allowed while the body is being read. */
  bodyIdleTimeoutMs: number;
  /** How long an unused connection stays open. */
  keepAliveMs: number;
}

export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST';
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}

export interface HttpResponse {
  statusCode: number;
  /** The body; destroying it closes the connection. */
  body: Readable;
  /** The first value of a header (names are case-insensitive). */
  header(name: string): string | undefined;
  /** Every value of a header as sent, one per header line (node's `headers` joins some with ", "). */
  headerList(name: string): string[];
  /** Reads and discards a short body so the connection can be reused; a long one is destroyed. */
  dump(): Promise<void>;
  /** The body as UTF-8, at most 1 MiB (more is an error). */
  text(): Promise<string>;
  json(): Promise<unknown>;
}

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** Keep-alive agents for http: and https: with one TLS policy, and requests through them. */
export class HttpPool {
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  constructor(private readonly opts: HttpPoolOptions) {
    // The agent's timeout closes a pooled connection idle that long; on a request's socket it only emits 'timeout'.
    const agentOptions = { keepAlive: true, timeout: opts.keepAliveMs, scheduling: 'lifo' as const };
    this.httpAgent = new http.Agent(agentOptions);
    this.httpsAgent = new https.Agent({ ...agentOptions, rejectUnauthorized: opts.rejectUnauthorized });
  }

  /** Destroys every connection, pooled or in use. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  request(url: URL, init: HttpRequest): Promise<HttpResponse> {
    const { headersTimeoutMs, bodyIdleTimeoutMs } = this.opts;
    const secure = url.protocol === 'https:';
    const headers = { ...init.headers };
    if (init.body !== undefined) headers['content-length'] = String(Buffer.byteLength(init.body));
    return new Promise<HttpResponse>((resolve, reject) => {
      const signal = init.signal;
      if (signal?.aborted) return reject(signal.reason);
      const req = (secure ? https : http).request(url, {
        method: init.method,
        headers,
        agent: secure ? this.httpsAgent : this.httpAgent,
      });
      let res: IncomingMessage | undefined;
      let connected = false;
      const headersTimer = setTimeout(() => {
        fail(
          !connected
            ? codedError(CONNECT_TIMEOUT, `connecting to ${url.host} took more than ${headersTimeoutMs / 1000} s`)
            : codedError(HEADERS_TIMEOUT, `no response headers from ${url.host} within ${headersTimeoutMs / 1000} s`),
        );
      }, headersTimeoutMs);
      let bodySocket: Socket | undefined;
      let bodyTimer: NodeJS.Timeout | undefined;
      // Added after node's own 'data' listener, which has parsed this read by now (copying its body bytes out):
      // nothing reads the buffer any more, so it is freed at once (see releaseBuffer). Once the response is complete
      // the socket may be carrying the next request's, whose parser comes after this listener: left alone.
      const onSocketData = (data: Buffer) => {
        bodyTimer?.refresh();
        if (res && !res.complete) releaseBuffer(data);
      };
      const cleanup = () => {
        clearTimeout(headersTimer);
        clearTimeout(bodyTimer);
        bodySocket?.off('data', onSocketData);
        signal?.removeEventListener('abort', onAbort);
      };
      const fail = (err: Error) => {
        cleanup();
        req.destroy(err);
        res?.destroy(err);
        reject(err);
      };
      const onAbort = () => fail(signal!.reason instanceof Error ? signal!.reason : codedError('ABORT_ERR', 'request aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('socket', (socket) => {
        if (!socket.connecting) connected = true; // a pooled connection
        else socket.once(secure ? 'secureConnect' : 'connect', () => (connected = true));
      });
      // Errors after the response reach the body's reader; the listener keeps a late one from going unhandled.
      req.on('error', (err) => {
        if (res) return;
        cleanup();
        reject(err);
      });
      req.on('response', (message) => {
        res = message;
        clearTimeout(headersTimer);
        message.on('error', () => undefined); // kept on the stream (errored) for its reader
        message.once('close', cleanup);
        bodySocket = message.socket ?? undefined;
        // Counts the socket's bytes, not the body's: a reader holding the body back (backpressure) pauses the
        // socket, and a paused or unread body is not a silent registry.
        bodyTimer = setTimeout(() => {
          if (message.complete) return;
          if (bodySocket?.isPaused() || message.readableLength > 0) return bodyTimer?.refresh();
          message.destroy(codedError(BODY_TIMEOUT, `no body byte from ${url.host} within ${bodyIdleTimeoutMs / 1000} s`));
        }, bodyIdleTimeoutMs);
        bodySocket?.on('data', onSocketData);
        resolve(wrap(message));
      });
      req.end(init.body);
    });
  }
}

function wrap(message: IncomingMessage): HttpResponse {
  const headerList = (name: string): string[] => {
    const lower = name.toLowerCase();
    const values: string[] = [];
    const raw = message.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === lower) values.push(raw[i + 1]!);
    return values;
  };
  const text = async (): Promise<string> => {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of message) {
      total += (chunk as Buffer).length;
      if (total > TEXT_LIMIT_BYTES) {
        message.destroy();
        throw new Error(`response body larger than ${TEXT_LIMIT_BYTES} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  };
  return {
    statusCode: message.statusCode ?? 0,
    body: message,
    header: (name) => headerList(name)[0],
    headerList,
    async dump() {
      let total = 0;
      try {
        for await (const chunk of message) {
          total += (chunk as Buffer).length;
          if (total > DUMP_LIMIT_BYTES) break; // leaving the loop destroys the body and its connection
        }
      } catch {
        // a failed body is discarded all the same
      }
    },
    text,
    async json() {
      return JSON.parse(await text()) as unknown;
    },
  };
}
