// The four ways to check a container, shared by probes and lifecycle hooks: exec (CRI ExecSync), httpGet, tcpSocket, grpc.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { V1Container, V1ExecAction, V1GRPCAction, V1HTTPGetAction, V1TCPSocketAction } from '@kubernetes/client-node';
import { errorMessage, invalidArgument } from '../../common/errors.js';
import type { CriClient } from '../cri-client.js';

export interface ActionResult {
  ok: boolean;
  /** What a failure says (for Unhealthy events and hook errors). */
  output: string;
}

const MAX_OUTPUT = 10 * 1024;
const USER_AGENT = 'kube-probe/1.36';

export async function execAction(cri: CriClient, containerId: string, action: V1ExecAction, timeoutSeconds: number): Promise<ActionResult> {
  const cmd = action.command ?? [];
  if (!cmd.length) return { ok: false, output: 'exec: command is empty' };
  try {
    const res = await cri.runtime('ExecSync', { container_id: containerId, cmd, timeout: timeoutSeconds }, { deadlineMs: (timeoutSeconds + 10) * 1000 });
    const output = `${res.stdout?.toString() ?? ''}${res.stderr?.toString() ?? ''}`.slice(0, MAX_OUTPUT);
    if (res.exit_code === 0) return { ok: true, output };
    return { ok: false, output: output || `command ${JSON.stringify(cmd)} exited with ${res.exit_code}` };
  } catch (err) {
    return { ok: false, output: errorMessage(err) };
  }
}

/** A named port (`http`) resolves through the container's ports; a number is used as is. */
export function resolvePort(port: number | string | undefined, container: V1Container | undefined): number {
  if (typeof port === 'number') return port;
  if (port === undefined || port === '') throw invalidArgument('port is required');
  if (/^\d+$/.test(port)) return Number(port);
  const found = container?.ports?.find((p) => p.name === port);
  if (!found) throw invalidArgument(`port ${JSON.stringify(port)} not found in container ${container?.name ?? ''}`);
  return found.containerPort;
}

export function httpGetAction(action: V1HTTPGetAction, defaultHost: string, container: V1Container | undefined, timeoutSeconds: number): Promise<ActionResult> {
  let port: number;
  try {
    port = resolvePort(action.port as number | string, container);
  } catch (err) {
    return Promise.resolve({ ok: false, output: errorMessage(err) });
  }
  const scheme = (action.scheme ?? 'HTTP').toUpperCase();
  const host = action.host || defaultHost;
  const headers: Record<string, string> = { 'User-Agent': USER_AGENT, Accept: '*/*' };
  for (const h of action.httpHeaders ?? []) headers[h.name] = h.value;
  const target = `${scheme.toLowerCase()}://${host.includes(':') ? `[${host}]` : host}:${port}${action.path?.startsWith('/') ? action.path : `/${action.path ?? ''}`}`;
  return new Promise((resolve) => {
    const lib = scheme === 'HTTPS' ? https : http;
    const req = lib.request(target, { method: 'GET', headers, timeout: timeoutSeconds * 1000, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < MAX_OUTPUT) body += chunk;
      });
      res.on('end', () => {
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 400) resolve({ ok: true, output: body });
        else resolve({ ok: false, output: `HTTP probe failed with statuscode: ${code}` });
      });
      res.on('error', (err) => resolve({ ok: false, output: errorMessage(err) }));
    });
    req.on('timeout', () => req.destroy(new Error(`Get "${target}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`)));
    req.on('error', (err) => resolve({ ok: false, output: errorMessage(err) }));
    req.end();
  });
}

export function tcpSocketAction(action: V1TCPSocketAction, defaultHost: string, container: V1Container | undefined, timeoutSeconds: number): Promise<ActionResult> {
  let port: number;
  try {
    port = resolvePort(action.port as number | string, container);
  } catch (err) {
    return Promise.resolve({ ok: false, output: errorMessage(err) });
  }
  const host = action.host || defaultHost;
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (result: ActionResult) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ ok: false, output: `dial tcp ${host}:${port}: i/o timeout` }), timeoutSeconds * 1000);
    socket.once('connect', () => done({ ok: true, output: '' }));
    socket.once('error', (err) => done({ ok: false, output: `dial tcp ${host}:${port}: ${errorMessage(err)}` }));
  });
}

// grpc.health.v1: HealthCheckRequest { string service = 1; }, HealthCheckResponse { ServingStatus status = 1; } (SERVING = 1).
function encodeHealthCheckRequest(service: string): Buffer {
  if (!service) return Buffer.alloc(0);
  const bytes = Buffer.from(service);
  const len: number[] = [];
  let n = bytes.length;
  while (n > 0x7f) {
    len.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  len.push(n);
  return Buffer.concat([Buffer.from([0x0a, ...len]), bytes]);
}

function decodeServingStatus(buf: Buffer): number {
  let i = 0;
  while (i < buf.length) {
    const tag = buf[i++];
    let value = 0;
    let shift = 0;
    if ((tag & 7) !== 0) break; // only varints are expected
    for (;;) {
      const b = buf[i++];
      value |= (b & 0x7f) << shift;
      shift += 7;
      if (!(b & 0x80)) break;
    }
    if (tag >> 3 === 1) return value;
  }
  return 0;
}

const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

export function grpcAction(action: V1GRPCAction, host: string, timeoutSeconds: number): Promise<ActionResult> {
  const address = `${host.includes(':') ? `[${host}]` : host}:${action.port}`;
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      '/grpc.health.v1.Health/Check',
      (service: string) => encodeHealthCheckRequest(service),
      (buf: Buffer) => decodeServingStatus(buf),
      action.service ?? '',
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutSeconds * 1000 },
      (err, status) => {
        client.close();
        if (err) resolve({ ok: false, output: `failed to connect service "${address}" within ${timeoutSeconds}s: ${err.details || err.message}` });
        else if (status === 1) resolve({ ok: true, output: '' });
        else resolve({ ok: false, output: `service unhealthy (responded with "${SERVING_STATUS[status ?? 0] ?? status}")` });
      },
    );
  });
}
