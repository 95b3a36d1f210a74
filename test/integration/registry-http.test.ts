// The registry client's HTTP behaviour against small node:http registries that misbehave in one way each:
// a body cut short, a cross-origin redirect, repeated WWW-Authenticate lines, no response headers, a self-signed TLS certificate.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isKind } from '../../src/common/errors.js';
import { run } from '../../src/common/exec.js';
import { parseReference } from '../../src/image/reference.js';
import { RegistryClient, type RegistryClientOptions } from '../../src/image/registry.js';

const bytes = randomBytes(64 * 1024);
const desc = { digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size: bytes.length };
const blobPath = `/v2/test/img/blobs/${desc.digest}`;
const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-registry-http-'));
const servers: (http.Server | https.Server)[] = [];
const clients: RegistryClient[] = [];

async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function client(options: Partial<RegistryClientOptions> = {}): RegistryClient {
  const c = new RegistryClient({ insecure: [], mirrors: {}, requestTimeoutMs: 5000, retries: 1, ...options });
  clients.push(c);
  return c;
}

const dest = () => path.join(dir, `blob-${randomBytes(4).toString('hex')}`);

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a blob cut short by the registry is retried, then fails UNAVAILABLE; no file left', async () => {
  let attempts = 0;
  const host = await serve((req, res) => {
    if (req.url !== blobPath) return res.writeHead(404).end();
    attempts++;
    res.writeHead(200, { 'content-length': String(desc.size) });
    res.write(bytes.subarray(0, desc.size / 2), () => res.socket?.destroy());
  });
  const file = dest();
  await assert.rejects(client({ retries: 1 }).downloadBlob(parseReference(`${host}/test/img:v1`), desc, file), (err: unknown) => {
    assert.ok(isKind(err, 'Unavailable'), String(err));
    assert.match((err as Error).message, new RegExp(`from ${host}`));
    return true;
  });
  assert.equal(attempts, 2, 'one attempt and one retry');
  await assert.rejects(fsp.stat(file), { code: 'ENOENT' });
});

test('a redirect to another origin is followed without the registry credentials', async () => {
  const seen: (string | undefined)[] = [];
  const storage = await serve((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { 'content-length': String(desc.size) }).end(bytes);
  });
  const host = await serve((req, res) => {
    if (req.headers.authorization !== 'Bearer secret') return res.writeHead(401).end();
    res.writeHead(307, { location: `http://${storage}/data/${desc.digest.slice(7)}` }).end();
  });
  const file = dest();
  await client().downloadBlob(parseReference(`${host}/test/img:v1`), desc, file, { registryToken: 'secret' });
  assert.deepEqual(await fsp.readFile(file), bytes);
  assert.deepEqual(seen, [undefined]);
});

test('a 401 with a Basic and a Bearer WWW-Authenticate line is answered with a bearer token', async () => {
  let host = '';
  host = await serve((req, res) => {
    if (req.url?.startsWith('/token')) {
      const url = new URL(req.url, 'http://x');
      assert.equal(url.searchParams.get('scope'), 'repository:test/img:pull');
      return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'granted' }));
    }
    if (req.headers.authorization !== 'Bearer granted') {
      // Two header lines: node's `headers` would join them into one unparseable value.
      res.setHeader('www-authenticate', ['Basic realm="basic"', `Bearer realm="http://${host}/token",service="svc"`]);
      return res.writeHead(401).end();
    }
    res.writeHead(200, { 'content-length': String(desc.size) }).end(bytes);
  });
  const file = dest();
  await client().downloadBlob(parseReference(`${host}/test/img:v1`), desc, file);
  assert.deepEqual(await fsp.readFile(file), bytes);
});

test('a registry that never sends response headers fails UNAVAILABLE after the request timeout', async () => {
  const host = await serve(() => undefined);
  const started = Date.now();
  await assert.rejects(client({ requestTimeoutMs: 500, retries: 0 }).downloadBlob(parseReference(`${host}/test/img:v1`), desc, dest()), (err: unknown) => {
    assert.ok(isKind(err, 'Unavailable'), String(err));
    assert.match((err as Error).message, /no response headers from .* within 0.5 s/);
    return true;
  });
  assert.ok(Date.now() - started < 3000, `failed after ${Date.now() - started} ms`);
});

test('a registry with a self-signed certificate is refused, and pulled over HTTPS once listed as insecure', async () => {
  // 127.0.0.2 is a loopback address the client does not treat as insecure by default (127.0.0.1 and localhost are).
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', '/CN=127.0.0.2', '-addext', 'subjectAltName=IP:127.0.0.2']);
  let served = 0;
  const server = https.createServer({ key: await fsp.readFile(key), cert: await fsp.readFile(cert) }, (req, res) => {
    if (req.url !== blobPath) return res.writeHead(404).end();
    served++;
    res.writeHead(200, { 'content-length': String(desc.size) }).end(bytes);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', () => resolve()));
  const host = `127.0.0.2:${(server.address() as AddressInfo).port}`;
  const ref = parseReference(`${host}/test/img:v1`);
  await assert.rejects(client({ retries: 0 }).downloadBlob(ref, desc, dest()), /self-signed certificate/);
  assert.equal(served, 0);
  const file = dest();
  await client({ insecure: [host] }).downloadBlob(ref, desc, file);
  assert.deepEqual(await fsp.readFile(file), bytes);
  assert.equal(served, 1);
});

test('blobs of many socket reads arrive intact over HTTP (chunked, on a reused connection) and HTTPS', async () => {
  // The client frees each socket read and body piece as soon as it is parsed and copied: nothing may read one after.
  const big = randomBytes(3 * 1024 * 1024 + 12345);
  const bigDesc = { digest: `sha256:${createHash('sha256').update(big).digest('hex')}`, size: big.length };
  const handler: http.RequestListener = (req, res) => {
    if (req.url === blobPath) return res.writeHead(200, { 'content-length': String(desc.size) }).end(bytes);
    if (req.url !== `/v2/test/img/blobs/${bigDesc.digest}`) return res.writeHead(404).end();
    res.writeHead(200); // no length: chunked, in pieces of odd sizes
    let off = 0;
    const next = () => {
      if (off >= big.length) return res.end();
      const n = 1000 + ((off / 7) % 150_000);
      res.write(big.subarray(off, (off += n)), () => setImmediate(next));
    };
    next();
  };
  const key = path.join(dir, 'many-key.pem');
  const cert = path.join(dir, 'many-cert.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', '/CN=127.0.0.2', '-addext', 'subjectAltName=IP:127.0.0.2']);
  const tlsServer = https.createServer({ key: await fsp.readFile(key), cert: await fsp.readFile(cert) }, handler);
  servers.push(tlsServer);
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.2', () => resolve()));
  const tlsHost = `127.0.0.2:${(tlsServer.address() as AddressInfo).port}`;
  const plainHost = await serve(handler);
  for (const host of [plainHost, tlsHost]) {
    const c = client({ insecure: [host] });
    const ref = parseReference(`${host}/test/img:v1`);
    // Big, small, big again: the small body and the next response's headers share reads with the big ones.
    for (const [d, want] of [[bigDesc, big], [desc, bytes], [bigDesc, big]] as const) {
      const file = dest();
      await c.downloadBlob(ref, d, file);
      assert.ok((await fsp.readFile(file)).equals(want), `${host}: blob ${d.size} bytes differs`);
    }
  }
});
