// The local metrics and health endpoint: GET /metrics (Prometheus text), GET /healthz.
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

export async function startMetricsServer(address: string, metrics: RuntimeMetrics, health: HealthCheck): Promise<{ address: string; close(): Promise<void> }> {
  const { host, port } = parseHostPort(address, 'metrics address');
  const server = http.createServer((req, res) => {
    const url = req.url?.split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
    } else if (url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text),
        (err) => res.writeHead(500).end(errorMessage(err)),
      );
    } else if (url === '/healthz') {
      checkHealth(health).then((problem) => (problem ? res.writeHead(503).end(`${problem}\n`) : res.writeHead(200).end('ok\n')));
    } else {
      res.writeHead(404).end();
    }
  });
  await listenOn(server, host, port);
  const bound = server.address() as net.AddressInfo;
  return {
    address: `${host}:${bound.port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Undefined when healthy; otherwise what is wrong. */
async function checkHealth(health: HealthCheck): Promise<string | undefined> {
  const serving = await socketAnswers(health.socket);
  if (!serving) return `CRI socket ${health.socket} is not serving`;
  const ready = await health.runtimeReady();
  return ready.ok ? undefined : `runtime not ready: ${ready.message}`;
}
