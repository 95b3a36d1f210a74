// RegistryClient against a real docker-registry (distribution 2.8) on 127.0.0.1, fed with skopeo.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../helpers/spawn.js';
import { isKind } from '../../src/common/errors.js';
import { MediaType } from '../../src/image/media-types.js';
import { parseReference } from '../../src/image/reference.js';
import { RegistryClient, type RegistryClientOptions } from '../../src/image/registry.js';
import { startDripProxy } from '../helpers/drip-proxy.js';
import { loadFixtures, type FixtureImage } from '../helpers/fixtures.js';
import { useRegistries, type Registries } from '../helpers/registries.js';

const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface Blob {
  digest: string;
  size: number;
  bytes: Buffer;
}

function blob(bytes: Buffer): Blob {
  return { digest: sha256(bytes), size: bytes.length, bytes };
}

async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const archive = pack();
  for (const [name, content] of Object.entries(files)) archive.entry({ name, mode: 0o644, mtime: new Date(0) }, content);
  archive.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of archive) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One platform image: a single gzip layer and a config. */
async function platformImage(architecture: string, variant: string | undefined, text: string) {
  const tar = await tarOf({ 'hello.txt': text });
  const layer = blob(gzipSync(tar));
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture,
        ...(variant ? { variant } : {}),
        os: 'linux',
        config: { Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: config.digest, size: config.size },
        layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }],
      }),
    ),
  );
  return { layer, config, manifest, platform: { architecture, os: 'linux', ...(variant ? { variant } : {}) } };
}

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-registry-client-'));
const storage = path.join(dir, 'storage');
const layoutDir = path.join(dir, 'layout');
let host = '';
let registry: ReturnType<typeof spawnChild> | undefined;
const clients: RegistryClient[] = [];

const amd64 = await platformImage('amd64', undefined, 'hello from amd64\n');
const arm64 = await platformImage('arm64', 'v8', 'hello from arm64\n');
const index = blob(
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [arm64, amd64].map((image) => ({
        mediaType: MediaType.ociManifest,
        digest: image.manifest.digest,
        size: image.manifest.size,
        platform: image.platform,
      })),
    }),
  ),
);

function client(options: Partial<RegistryClientOptions> = {}): RegistryClient {
  const c = new RegistryClient({ insecure: [], mirrors: {}, requestTimeoutMs: 5000, retries: 1, ...options });
  clients.push(c);
  return c;
}

async function writeLayout(): Promise<void> {
  const blobs = path.join(layoutDir, 'blobs', 'sha256');
  await fsp.mkdir(blobs, { recursive: true });
  for (const b of [amd64.layer, amd64.config, amd64.manifest, arm64.layer, arm64.config, arm64.manifest, index]) {
    await fsp.writeFile(path.join(blobs, b.digest.slice('sha256:'.length)), b.bytes);
  }
  await fsp.writeFile(path.join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const ref = (digest: string, size: number, mediaType: string, name: string) => ({
    mediaType,
    digest,
    size,
    annotations: { 'org.opencontainers.image.ref.name': name },
  });
  await fsp.writeFile(
    path.join(layoutDir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        ref(amd64.manifest.digest, amd64.manifest.size, MediaType.ociManifest, 'single'),
        ref(index.digest, index.size, MediaType.ociIndex, 'multi'),
      ],
    }),
  );
}

before(async () => {
  await writeLayout();
  const port = await freePort();
  host = `127.0.0.1:${port}`;
  const configFile = path.join(dir, 'config.yml');
  await fsp.writeFile(
    configFile,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      'http:',
      `  addr: ${host}`,
      '',
    ].join('\n'),
  );
  registry = spawnChild('/usr/bin/docker-registry', ['serve', configFile], { stdio: 'ignore' });
  registry.catch(() => undefined);
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://${host}/v2/`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 150) throw new Error(`docker-registry on ${host} did not start`);
    await sleep(100);
  }
  const copy = ['copy', '--insecure-policy', '--dest-tls-verify=false'];
  await run('skopeo', [...copy, `oci:${layoutDir}:single`, `docker://${host}/test/single:v1`], { timeoutMs: 60_000 });
  await run('skopeo', [...copy, '--all', `oci:${layoutDir}:multi`, `docker://${host}/test/multi:v1`], { timeoutMs: 60_000 });
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  if (registry?.pid) {
    registry.kill('SIGTERM');
    await registry.catch(() => undefined);
  }
  await fsp.rm(dir, { recursive: true, force: true });
});

test('resolve a tag pointing at a manifest (HTTPS falls back to HTTP on 127.0.0.1)', async () => {
  const ref = parseReference(`${host}/test/single:v1`);
  const resolved = await client().resolve(ref);
  assert.equal(resolved.topDigest, amd64.manifest.digest);
  assert.equal(resolved.manifestDigest, amd64.manifest.digest);
  assert.equal(resolved.manifestMediaType, MediaType.ociManifest);
  assert.equal(resolved.configDescriptor.digest, amd64.config.digest);
  assert.deepEqual(resolved.config, amd64.config.bytes);
  assert.deepEqual(resolved.layers.map((l) => l.digest), [amd64.layer.digest]);
  assert.equal(resolved.endpoint, `http://${host}`);
});

test('resolve an index picks the wanted platform; the repo digest is the index', async () => {
  const ref = parseReference(`${host}/test/multi:v1`);
  const onAmd64 = await client({ platform: { os: 'linux', architecture: 'amd64' } }).resolve(ref);
  assert.equal(onAmd64.topDigest, index.digest);
  assert.equal(onAmd64.manifestDigest, amd64.manifest.digest);
  assert.deepEqual(onAmd64.config, amd64.config.bytes);

  const onArm64 = await client({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }).resolve(ref);
  assert.equal(onArm64.topDigest, index.digest);
  assert.equal(onArm64.manifestDigest, arm64.manifest.digest);
  assert.deepEqual(onArm64.layers.map((l) => l.digest), [arm64.layer.digest]);

  await assert.rejects(
    client({ platform: { os: 'linux', architecture: 's390x' } }).resolve(ref),
    (err: unknown) => {
      assert.ok(isKind(err, 'NotFound'));
      assert.match((err as Error).message, new RegExp(`image "${host}/test/multi:v1" from ${host}: no manifest for platform linux/s390x`));
      assert.match((err as Error).message, /available: linux\/arm64\/v8, linux\/amd64/);
      return true;
    },
  );
});

test('resolve by digest (and tag+digest: the digest wins)', async () => {
  const c = client({ platform: { os: 'linux', architecture: 'amd64' } });
  const byDigest = await c.resolve(parseReference(`${host}/test/multi@${index.digest}`));
  assert.equal(byDigest.topDigest, index.digest);
  assert.equal(byDigest.manifestDigest, amd64.manifest.digest);
  const both = await c.resolve(parseReference(`${host}/test/multi:no-such-tag@${arm64.manifest.digest}`));
  assert.equal(both.topDigest, arm64.manifest.digest);
  assert.equal(both.manifestDigest, arm64.manifest.digest);
});

test('downloadBlob streams and verifies a layer', async () => {
  const dest = path.join(dir, `layer-${randomBytes(4).toString('hex')}`);
  await fsp.writeFile(dest, 'stale content that must be truncated away, longer than the layer itself '.repeat(10));
  const seen: number[] = [];
  const ref = parseReference(`${host}/test/single:v1`);
  await client().downloadBlob(ref, { ...amd64.layer, mediaType: MediaType.ociLayerGzip }, dest, undefined, undefined, (n) => seen.push(n));
  assert.deepEqual(await fsp.readFile(dest), amd64.layer.bytes);
  assert.equal(seen.at(-1), amd64.layer.size);
});

test('downloadBlob with a wrong size is rejected and the file removed', async () => {
  const dest = path.join(dir, `layer-${randomBytes(4).toString('hex')}`);
  const ref = parseReference(`${host}/test/single:v1`);
  await assert.rejects(
    client().downloadBlob(ref, { digest: amd64.layer.digest, size: amd64.layer.size - 1, mediaType: MediaType.ociLayerGzip }, dest),
    (err: unknown) => {
      assert.ok(isKind(err, 'DataLoss'));
      assert.match((err as Error).message, new RegExp(`blob ${amd64.layer.digest} from ${host}: size mismatch`));
      return true;
    },
  );
  await assert.rejects(fsp.stat(dest), { code: 'ENOENT' });
});

test('not found: unknown repository, unknown tag, unknown blob', async () => {
  const c = client();
  for (const name of [`${host}/test/nope:v1`, `${host}/test/single:v2`]) {
    await assert.rejects(c.resolve(parseReference(name)), (err: unknown) => {
      assert.ok(isKind(err, 'NotFound'), String(err));
      assert.match((err as Error).message, new RegExp(`image "${name}" not found`));
      assert.match((err as Error).message, new RegExp(host));
      return true;
    });
  }
  const dest = path.join(dir, `missing-${randomBytes(4).toString('hex')}`);
  const missing = sha256('no such blob');
  await assert.rejects(
    c.downloadBlob(parseReference(`${host}/test/single:v1`), { digest: missing, size: 12 }, dest),
    (err: unknown) => isKind(err, 'NotFound'),
  );
  await assert.rejects(fsp.stat(dest), { code: 'ENOENT' });
});

test('a mirror is used for its registry, with the same repository path', async () => {
  const c = client({ mirrors: { 'registry.example.invalid': { endpoints: [`http://${host}`], fallbackToUpstream: false } } });
  const ref = parseReference('registry.example.invalid/test/single:v1');
  const resolved = await c.resolve(ref);
  assert.equal(resolved.endpoint, `http://${host}`);
  assert.equal(resolved.manifestDigest, amd64.manifest.digest);
  const dest = path.join(dir, `mirror-${randomBytes(4).toString('hex')}`);
  await c.downloadBlob(ref, amd64.layer, dest);
  assert.deepEqual(await fsp.readFile(dest), amd64.layer.bytes);
});

test('a dead mirror falls back to the upstream registry', async () => {
  const deadPort = await freePort();
  const c = client({ retries: 0, mirrors: { [host]: { endpoints: [`http://127.0.0.1:${deadPort}`], fallbackToUpstream: true } } });
  const resolved = await c.resolve(parseReference(`${host}/test/single:v1`));
  assert.equal(resolved.endpoint, `http://${host}`);
});

test('a dead mirror without fallback fails naming the mirror host', async () => {
  const deadPort = await freePort();
  const c = client({ retries: 1, mirrors: { [host]: { endpoints: [`http://127.0.0.1:${deadPort}`], fallbackToUpstream: false } } });
  await assert.rejects(c.resolve(parseReference(`${host}/test/single:v1`)), (err: unknown) => {
    assert.ok(isKind(err, 'Unavailable'), String(err));
    assert.match((err as Error).message, new RegExp(`image "${host}/test/single:v1" from 127.0.0.1:${deadPort}`));
    return true;
  });
});

test('an aborted pull throws DeadlineExceeded', async () => {
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(client().resolve(parseReference(`${host}/test/single:v1`), undefined, controller.signal), (err: unknown) => {
    assert.ok(isKind(err, 'DeadlineExceeded'), String(err));
    assert.match((err as Error).message, /pull cancelled/);
    return true;
  });
});

test('a registry dripping a blob a byte at a time has stalled: retried once, then fails naming registry and digest; no file left', async () => {
  const intervalMs = 200;
  const proxy = await startDripProxy(host, { path: /\/blobs\//, intervalMs });
  try {
    // The body idle timeout (5 s) never fires on a byte every 200 ms; only the stall timeout (1 KiB per second) can.
    const c = client({ stallTimeoutMs: 1000, retries: 1, requestTimeoutMs: 5000 });
    const ref = parseReference(`${proxy.host}/test/single:v1`);
    const dest = path.join(dir, `drip-${randomBytes(4).toString('hex')}`);
    const started = Date.now();
    await assert.rejects(c.downloadBlob(ref, amd64.layer, dest), (err: unknown) => {
      assert.ok(isKind(err, 'Unavailable'), String(err));
      assert.match((err as Error).message, new RegExp(`image "${proxy.host}/test/single:v1" from ${proxy.host}: blob ${amd64.layer.digest} stalled`));
      return true;
    });
    // Left alone, the drip would have delivered the (valid) blob after size × interval.
    assert.ok(Date.now() - started < amd64.layer.size * intervalMs, `failed after ${Date.now() - started} ms`);
    assert.equal(proxy.dripped(), 2, 'one attempt and one retry');
    await assert.rejects(fsp.stat(dest), { code: 'ENOENT' });
  } finally {
    await proxy.stop();
  }
});

test('a registry dripping a manifest a byte at a time has stalled: resolve fails naming registry and manifest', async () => {
  const intervalMs = 200;
  const proxy = await startDripProxy(host, { path: /\/manifests\//, intervalMs });
  try {
    const c = client({ stallTimeoutMs: 1000, retries: 0, requestTimeoutMs: 5000 });
    const started = Date.now();
    await assert.rejects(c.resolve(parseReference(`${proxy.host}/test/single:v1`)), (err: unknown) => {
      assert.ok(isKind(err, 'Unavailable'), String(err));
      assert.match((err as Error).message, new RegExp(`from ${proxy.host}: manifest v1 stalled: less than 1024 bytes received in 1 s`));
      return true;
    });
    assert.ok(Date.now() - started < amd64.manifest.size * intervalMs, `failed after ${Date.now() - started} ms`);
    assert.equal(proxy.dripped(), 1);
  } finally {
    await proxy.stop();
  }
});

test('a registry gone silent mid-blob fails on the body idle timeout, named as a stall, before the stall timeout', async () => {
  const proxy = await startDripProxy(host, { path: /\/blobs\//, intervalMs: 60_000 });
  try {
    const c = client({ stallTimeoutMs: 30_000, requestTimeoutMs: 1000, retries: 0 });
    const dest = path.join(dir, `silent-${randomBytes(4).toString('hex')}`);
    await assert.rejects(c.downloadBlob(parseReference(`${proxy.host}/test/single:v1`), amd64.layer, dest), (err: unknown) => {
      assert.ok(isKind(err, 'Unavailable'), String(err));
      assert.match((err as Error).message, new RegExp(`from ${proxy.host}: blob ${amd64.layer.digest} stalled: no byte received in 1 s`));
      return true;
    });
    await assert.rejects(fsp.stat(dest), { code: 'ENOENT' });
  } finally {
    await proxy.stop();
  }
});

// Last: corrupts the arm64 layer in the registry's storage so it serves bytes that do not match their digest.
test('downloadBlob with corrupted content is a digest mismatch, not retried, and the file is removed', async () => {
  const hex = arm64.layer.digest.slice('sha256:'.length);
  const data = path.join(storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  const corrupted = Buffer.from(arm64.layer.bytes);
  corrupted[corrupted.length - 1] ^= 0xff;
  await fsp.writeFile(data, corrupted);
  const dest = path.join(dir, `corrupt-${randomBytes(4).toString('hex')}`);
  const ref = parseReference(`${host}/test/multi:v1`);
  await assert.rejects(client({ retries: 3 }).downloadBlob(ref, arm64.layer, dest), (err: unknown) => {
    assert.ok(isKind(err, 'DataLoss'), String(err));
    assert.match((err as Error).message, new RegExp(`blob ${arm64.layer.digest} from ${host}: digest mismatch \\(got ${sha256(corrupted)}\\)`));
    assert.match((err as Error).message, new RegExp(`${host}/test/multi:v1`));
    return true;
  });
  await assert.rejects(fsp.stat(dest), { code: 'ENOENT' });
});

// Authentication and tampering, against the shared test registries (htpasswd, token server, corrupting proxy).
let shared: Promise<{ registries: Registries; busybox: FixtureImage }> | undefined;
function sharedRegistries() {
  shared ??= (async () => ({ registries: await useRegistries(), busybox: (await loadFixtures()).busybox }))();
  return shared;
}
after(async () => {
  if (shared) await (await shared.catch(() => undefined))?.registries.stop();
});

test('basic auth: username/password and auth string accepted; none or wrong refused naming the host', async () => {
  const { registries, busybox } = await sharedRegistries();
  const { host: basicHost, username, password } = registries.basic;
  const ref = parseReference(`${basicHost}/${busybox.repository}:${busybox.tags[0]}`);
  const c = client();
  const resolved = await c.resolve(ref, { username, password });
  assert.equal(resolved.topDigest, busybox.digest);
  assert.equal(resolved.configDescriptor.digest, busybox.configDigest);
  const viaAuth = await c.resolve(ref, { auth: Buffer.from(`${username}:${password}`).toString('base64') });
  assert.equal(viaAuth.manifestDigest, busybox.manifestDigest);
  const dest = path.join(dir, `basic-${randomBytes(4).toString('hex')}`);
  await c.downloadBlob(ref, resolved.layers[0]!, dest, { username, password });
  assert.equal(sha256(await fsp.readFile(dest)), resolved.layers[0]!.digest);

  for (const creds of [undefined, { username, password: 'wrong' }]) {
    await assert.rejects(client().resolve(ref, creds), (err: unknown) => {
      assert.ok(isKind(err, 'Unauthenticated'), String(err));
      assert.match((err as Error).message, new RegExp(`${basicHost}`));
      assert.match((err as Error).message, new RegExp(busybox.repository));
      return true;
    });
  }
});

test('bearer auth: token fetched with basic credentials; a registry token is sent as is', async () => {
  const { registries, busybox } = await sharedRegistries();
  const { host: bearerHost, username, password, realm, service } = registries.bearer;
  const ref = parseReference(`${bearerHost}/${busybox.repository}:${busybox.tags[0]}`);
  const c = client();
  const resolved = await c.resolve(ref, { username, password });
  assert.equal(resolved.topDigest, busybox.digest);
  const dest = path.join(dir, `bearer-${randomBytes(4).toString('hex')}`);
  await c.downloadBlob(ref, resolved.layers[0]!, dest, { username, password });
  assert.equal(sha256(await fsp.readFile(dest)), resolved.layers[0]!.digest);

  await assert.rejects(client().resolve(ref), (err: unknown) => {
    assert.ok(isKind(err, 'Unauthenticated'), String(err));
    assert.match((err as Error).message, new RegExp(bearerHost));
    return true;
  });
  await assert.rejects(client().resolve(ref, { username, password: 'wrong' }), (err: unknown) => isKind(err, 'Unauthenticated'));

  const tokenUrl = `${realm}?service=${encodeURIComponent(service)}&scope=${encodeURIComponent(`repository:${busybox.repository}:pull`)}`;
  const tokenRes = await fetch(tokenUrl, { headers: { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` } });
  const { token } = (await tokenRes.json()) as { token: string };
  const withToken = await client().resolve(ref, { registryToken: token });
  assert.equal(withToken.manifestDigest, busybox.manifestDigest);
});

test('a registry serving corrupted blobs: config and layer digests rejected', async () => {
  const { registries, busybox } = await sharedRegistries();
  const ref = parseReference(`${registries.tamper}/${busybox.repository}:${busybox.tags[0]}`);
  await assert.rejects(client().resolve(ref), (err: unknown) => {
    assert.ok(isKind(err, 'DataLoss'), String(err));
    assert.match((err as Error).message, new RegExp(`blob ${busybox.configDigest} from ${registries.tamper}: digest mismatch`));
    return true;
  });
  const plainResolved = await client().resolve(parseReference(`${registries.plain}/${busybox.repository}:${busybox.tags[0]}`));
  const dest = path.join(dir, `tamper-${randomBytes(4).toString('hex')}`);
  await assert.rejects(client().downloadBlob(ref, plainResolved.layers[0]!, dest), /digest mismatch/);
  await assert.rejects(fsp.stat(dest), { code: 'ENOENT' });
});
