// The local metrics and health endpoint: GET /metrics (Prometheus text), GET /healthz; HEAD answers as GET
// without the body. Silent and slow connections are closed (header, request, keep-alive and idle timeouts).
import http from 'node:http';
import net from 'node:net';
import type { RuntimeMetrics } from './metrics.js';
import { errorMessage } from '../common/errors.js';
import { listenOn, parseHostPort } from '../common/address.js';
import { socketAnswers } from '../common/unix-socket.js';

export interface HealthCheck {
  /** The CRI socket a client would use. */
  socket: string;
  /** Runtime readiness: false with a reason when a part is missing. */
  runtimeReady(): Promise<{ ok: boolean; message: string }>;
}

/** Request headers must arrive within this. */
export const METRICS_HEADERS_TIMEOUT_MS = 10_000;
/** A connection that sends nothing is closed after this (longer, so a half-sent request gets its 408 first). */
export const METRICS_IDLE_TIMEOUT_MS = 15_000;
export const METRICS_REQUEST_TIMEOUT_MS = 30_000;
export const METRICS_KEEP_ALIVE_TIMEOUT_MS = 5_000;

function answer(res: http.ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  // The length is given explicitly so that HEAD (whose body Node drops) reports the GET's.
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) }).end(body);
}

export async function startMetricsServer(address: string, metrics: RuntimeMetrics, health: HealthCheck): Promise<{ address: string; close(): Promise<void> }> {
  const { host, port } = parseHostPort(address, 'metrics address');
  const options: http.ServerOptions = {
    headersTimeout: METRICS_HEADERS_TIMEOUT_MS,
    requestTimeout: METRICS_REQUEST_TIMEOUT_MS,
    keepAliveTimeout: METRICS_KEEP_ALIVE_TIMEOUT_MS,
    connectionsCheckingInterval: 1000,
  };
  const server = http.createServer(options, (req, res) => {
    const url = req.url?.split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
    } else if (url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => answer(res, 200, text, metrics.registry.contentType),
        (err) => answer(res, 500, errorMessage(err)),
      );
    } else if (url === '/healthz') {
      checkHealth(health).then((problem) => (problem ? answer(res, 503, `${problem}\n`) : answer(res, 200, 'ok\n')));
    } else {
      res.writeHead(404).end();
    }
  });
  // No 'timeout' listener: Node destroys a socket this idle, which covers one that never sends a byte
  // (the headers timer only starts at the first).
  server.setTimeout(METRICS_IDLE_TIMEOUT_MS);
  await listenOn(server, host, port);
  const bound = server.address() as net.AddressInfo;
  return {
    address: `${host}:${bound.port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

/** Undefined when healthy; otherwise what is wrong. */
async function checkHealth(health: HealthCheck): Promise<string | undefined> {
  const serving = await socketAnswers(health.socket);
  if (!serving) return `CRI socket ${health.socket} is not serving`;
  const ready = await health.runtimeReady();
  return ready.ok ? undefined : `runtime not ready: ${ready.message}`;
}
