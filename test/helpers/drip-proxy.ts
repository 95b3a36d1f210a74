// An HTTP proxy in front of a registry that answers matching GETs with the upstream's status and headers at once,
// then drips the body one byte per interval: a registry that never goes quite silent and never finishes.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface DripProxy {
  /** host:port of the proxy. */
  host: string;
  /** Number of requests whose body was dripped so far. */
  dripped(): number;
  stop(): Promise<void>;
}

export async function startDripProxy(upstream: string, opts: { path: RegExp; intervalMs: number }): Promise<DripProxy> {
  const [upstreamHost, upstreamPort] = upstream.split(':') as [string, string];
  let drippedCount = 0;
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://proxy').pathname;
    const drip = req.method === 'GET' && opts.path.test(pathname);
    const upstreamReq = http.request(
      { host: upstreamHost, port: Number(upstreamPort), method: req.method, path: req.url, headers: { ...req.headers, host: upstream } },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        if (!drip || upstreamRes.statusCode !== 200) {
          upstreamRes.pipe(res);
          return;
        }
        drippedCount++;
        res.flushHeaders();
        const chunks: Buffer[] = [];
        upstreamRes.on('data', (c: Buffer) => chunks.push(c));
        upstreamRes.on('end', () => {
          const body = Buffer.concat(chunks);
          let sent = 0;
          const timer = setInterval(() => {
            if (res.destroyed || sent >= body.length) {
              clearInterval(timer);
              timers.delete(timer);
              if (!res.destroyed) res.end();
              return;
            }
            res.write(body.subarray(sent, sent + 1));
            sent++;
          }, opts.intervalMs);
          timers.add(timer);
        });
      },
    );
    upstreamReq.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstreamReq);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    dripped: () => drippedCount,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearInterval(t);
        timers.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
