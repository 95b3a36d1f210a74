// The streaming server over TLS (cert + key configured): SPDY and WebSocket port-forward to a host port,
// through the real server, token cache and dial helper (a host-network pod needs no netns).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/common/exec.js';
import { StreamingServer } from '../../src/streaming/server.js';
import type { RuntimeService } from '../../src/runtime/runtime-service.js';
import { StreamUpgradeError, openPortForward } from '../../src/streaming/client.js';
import { FAMILIES, withTimeout } from '../helpers/stream-clients.js';

let dir: string;
let server: StreamingServer;
let echo: net.Server;
let echoPort: number;

// Only what the server reads for a port-forward: a ready host-network sandbox.
const runtime = {
  sandboxes: { get: (id: string) => ({ id, state: 'SANDBOX_READY', hostNetwork: true }) },
} as unknown as RuntimeService;

before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-stream-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1']);
  server = new StreamingServer({ address: '127.0.0.1:0', tlsCert: cert, tlsKey: key, runtime });
  await server.start();
  echo = net.createServer((socket) => socket.on('data', (c: Buffer) => socket.end(`echo:${c.toString()}`)));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as net.AddressInfo).port;
});

after(async () => {
  await server?.stop();
  echo?.close();
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
});

test('https URLs; port-forward over TLS with both families; bad tokens 404', async () => {
  for (const family of FAMILIES) {
    const url = server.issue({ kind: 'portforward', sandboxId: 'hostpod', ports: [echoPort] });
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/portforward\//);
    const session = await openPortForward({ url, family, ports: [echoPort], insecure: true });
    const { data, error } = session.dial(echoPort);
    let text = '';
    data.on('data', (c: Buffer) => (text += c.toString()));
    const ended = new Promise((resolve) => data.once('end', resolve));
    data.write(`hi-${family}`);
    await withTimeout(ended, 10_000, 'the echo');
    assert.equal(text, `echo:hi-${family}`);
    assert.equal(await withTimeout(error, 10_000, 'the error stream'), '');
    session.close();
    await assert.rejects(openPortForward({ url, family, ports: [echoPort], insecure: true }), (err: unknown) => err instanceof StreamUpgradeError && err.statusCode === 404);
  }
});
