// An HTTP proxy in front of a registry that corrupts every blob it serves: same length,
// same headers, one byte flipped — a client that verifies digests must reject it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TamperProxy {
  /** host:port of the proxy. */
  host: string;
  /** Number of blob bodies corrupted so far. */
  tampered(): number;
  stop(): Promise<void>;
}

const BLOB_PATH = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/;

/** Flips one byte (in the middle unless `at` says where); the length stays the same. */
export function corrupt(body: Buffer, at?: number): Buffer {
  const out = Buffer.from(body);
  if (out.length > 0) {
    const i = Math.min(at ?? Math.floor(out.length / 2), out.length - 1);
    out[i] = out[i]! ^ 0xff;
  }
  return out;
}

export interface TamperOptions {
  /** Only blobs whose path matches are corrupted (default: every blob). */
  path?: RegExp;
  /** Offset of the flipped byte (default: the middle). 4 hits a gzip header's MTIME, which gunzip ignores. */
  at?: number;
}

export async function startTamperProxy(upstream: string, opts: TamperOptions = {}): Promise<TamperProxy> {
  const [upstreamHost, upstreamPort] = upstream.split(':') as [string, string];
  let tamperedCount = 0;
  let ownHost = '';

  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://proxy').pathname;
    const isBlobGet = req.method === 'GET' && BLOB_PATH.test(pathname) && (opts.path?.test(pathname) ?? true);
    const headers = { ...req.headers, host: upstream };
    // A corrupted body must be whole to be rewritten, so no ranges.
    if (isBlobGet) delete headers.range;
    const upstreamReq = http.request(
      { host: upstreamHost, port: Number(upstreamPort), method: req.method, path: req.url, headers },
      (upstreamRes) => {
        const outHeaders = { ...upstreamRes.headers };
        if (typeof outHeaders.location === 'string') {
          outHeaders.location = outHeaders.location.replace(`//${upstream}`, `//${ownHost}`);
        }
        if (!isBlobGet || upstreamRes.statusCode !== 200) {
          res.writeHead(upstreamRes.statusCode ?? 502, outHeaders);
          upstreamRes.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        upstreamRes.on('data', (c: Buffer) => chunks.push(c));
        upstreamRes.on('end', () => {
          const body = corrupt(Buffer.concat(chunks), opts.at);
          tamperedCount++;
          outHeaders['content-length'] = String(body.length);
          res.writeHead(200, outHeaders);
          res.end(body);
        });
        upstreamRes.on('error', () => res.destroy());
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
  ownHost = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host: ownHost,
    tampered: () => tamperedCount,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
