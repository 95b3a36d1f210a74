// Proxies an upgrade request (SPDY/3.1 or WebSocket) to the runtime's streaming URL: the client's request
// is replayed to the streaming server and the raw sockets are piped both ways, so the protocol negotiation,
// the 101 answer and every frame are the streaming server's own.
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../common/log.js';

// Hop-by-hop or ours alone: the runtime gets neither the caller's credentials nor a stale Host.
const DROPPED_HEADERS = new Set(['host', 'authorization', 'proxy-authorization', 'content-length']);

/** The streaming URL with the caller's query parameters it does not already carry (ports=… for WebSocket port-forward). */
export function streamingTarget(streamUrl: string, clientQuery: URLSearchParams): URL {
  const target = new URL(streamUrl);
  for (const key of new Set(clientQuery.keys())) {
    if (target.searchParams.has(key)) continue;
    for (const v of clientQuery.getAll(key)) target.searchParams.append(key, v);
  }
  return target;
}

export function rawReply(socket: Duplex, status: number, reason: string, body: string, contentType = 'text/plain; charset=utf-8'): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${contentType}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function proxyUpgrade(req: IncomingMessage, client: Duplex, head: Buffer, target: URL, log: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const port = Number(target.port) || (target.protocol === 'https:' ? 443 : 80);
    const host = target.hostname.replace(/^\[|\]$/g, '');
    const upstream: net.Socket =
      target.protocol === 'https:'
        ? // The runtime's streaming certificate is its own self-signed one; it sits on this node.
          tls.connect({ host, port, rejectUnauthorized: false, servername: net.isIP(host) ? undefined : host })
        : net.connect({ host, port });
    let connected = false;
    const finish = () => {
      client.destroy();
      upstream.destroy();
      resolve();
    };
    upstream.once(target.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      connected = true;
      const lines = [`${req.method ?? 'GET'} ${target.pathname}${target.search} HTTP/1.1`, `Host: ${target.host}`];
      const raw = req.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) {
        if (!DROPPED_HEADERS.has(raw[i]!.toLowerCase())) lines.push(`${raw[i]}: ${raw[i + 1]}`);
      }
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', (err) => {
      log.debug({ err: err.message, target: target.origin }, 'streaming upstream error');
      if (connected) return finish();
      rawReply(client, 502, 'Bad Gateway', `error dialing the container runtime's streaming server: ${err.message}\n`);
      upstream.destroy();
      resolve();
    });
    client.on('error', finish);
    upstream.once('close', () => connected && finish());
    client.once('close', finish);
  });
}
