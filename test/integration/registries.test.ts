import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { run } from '../../src/common/exec.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { loadFixtures, imageRef, type Fixtures } from '../helpers/fixtures.js';

const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

let registries: Registries;
let fixtures: Fixtures;

before(async () => {
  fixtures = await loadFixtures();
  registries = await useRegistries();
});

after(async () => {
  await registries?.stop();
});

const sha256 = (data: Buffer) => 'sha256:' + createHash('sha256').update(data).digest('hex');
const basicHeader = (user: string, pass: string) => 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');

async function getManifest(host: string, repository: string, ref: string, authorization?: string): Promise<Response> {
  return fetch(`http://${host}/v2/${repository}/manifests/${ref}`, {
    headers: { accept: ACCEPT, ...(authorization ? { authorization } : {}) },
  });
}

async function getBlob(host: string, repository: string, digest: string): Promise<Buffer> {
  const res = await fetch(`http://${host}/v2/${repository}/blobs/${digest}`);
  assert.equal(res.status, 200, `blob ${digest} via ${host}`);
  return Buffer.from(await res.arrayBuffer());
}

interface TarListing {
  name: string;
  type: string;
  mode: number;
  uid: number;
  linkname?: string | null;
  data: Buffer;
}

async function listLayer(gz: Buffer): Promise<Map<string, TarListing>> {
  const extract = tar.extract();
  const out = new Map<string, TarListing>();
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      const h = entry.header;
      out.set(h.name.replace(/\/$/, ''), {
        name: h.name,
        type: h.type ?? 'file',
        mode: h.mode ?? 0,
        uid: h.uid ?? 0,
        linkname: h.linkname,
        data: Buffer.concat(chunks),
      });
    }
  })();
  Readable.from([gunzipSync(gz)]).pipe(extract);
  await done;
  return out;
}

test('fixture descriptions match the built layouts', () => {
  assert.equal(fixtures.busybox.layerCount, 1);
  assert.deepEqual(fixtures.busybox.tags, ['1.0', '1.1', 'latest']);
  assert.equal(fixtures.busybox.user, '');
  assert.deepEqual(fixtures.busybox.config.Cmd, ['sh']);
  assert.equal(fixtures.userName.user, 'app');
  assert.equal(fixtures.userUidGid.user, '1000:2000');
  assert.equal(fixtures.entrypoint.layerCount, 2);
  assert.deepEqual(fixtures.entrypoint.config.Entrypoint, ['/bin/echo', 'from-entrypoint']);
  assert.equal(fixtures.entrypoint.config.StopSignal, 'SIGUSR1');
  assert.ok(fixtures.entrypoint.config.Env?.includes('FOO=bar'));
  assert.equal(fixtures.whiteout.layerCount, 3);
  assert.equal(fixtures.big.layerCount, 2);
  assert.ok(fixtures.big.layersSize > 40 * 1024 * 1024, `big layers are ${fixtures.big.layersSize} bytes`);
  assert.equal(fixtures.multiarch.platforms?.length, 3);
  assert.equal(fixtures.multiarch.digest, fixtures.multiarch.indexDigest);
  assert.deepEqual(
    fixtures.multiarch.platforms?.map((p) => p.platform),
    ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7'],
  );
  // Same image content, other manifest format: the image id (config digest) is shared.
  assert.equal(fixtures.busyboxDocker.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  assert.notEqual(fixtures.busyboxDocker.manifestDigest, fixtures.busybox.manifestDigest);
  assert.deepEqual(fixtures.busyboxDocker.layerDigests, fixtures.busybox.layerDigests);
});

test('plain registry serves every fixture tag at its expected digest and media type', async () => {
  for (const f of Object.values(fixtures)) {
    for (const tag of f.tags) {
      const res = await getManifest(registries.plain, f.repository, tag);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(res.status, 200, `${f.repository}:${tag}`);
      assert.equal(res.headers.get('docker-content-digest'), f.digest, `${f.repository}:${tag}`);
      assert.equal(sha256(body), f.digest);
      assert.equal(JSON.parse(body.toString()).mediaType, f.mediaType);
    }
  }
  const config = await getBlob(registries.plain, fixtures.busybox.repository, fixtures.busybox.configDigest);
  assert.equal(sha256(config), fixtures.busybox.configDigest);
});

test('skopeo inspects the plain registry', async () => {
  const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${imageRef(registries.plain, fixtures.busybox)}`]);
  const info = JSON.parse(stdout) as { Digest: string; Layers: string[]; Labels: Record<string, string> };
  assert.equal(info.Digest, fixtures.busybox.digest);
  assert.deepEqual(info.Layers, fixtures.busybox.layerDigests);
  const raw = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${imageRef(registries.plain, fixtures.multiarch)}`]);
  const index = JSON.parse(raw.stdout) as { manifests: { digest: string }[] };
  assert.deepEqual(index.manifests.map((m) => m.digest), fixtures.multiarch.platforms?.map((p) => p.manifestDigest));
});

test('busybox layer holds the binary, applet links, users and directory modes', async () => {
  const layer = await listLayer(await getBlob(registries.plain, fixtures.busybox.repository, fixtures.busybox.layerDigests[0]!));
  assert.equal(layer.get('bin/busybox')?.mode, 0o755);
  assert.equal(layer.get('bin/sh')?.linkname, '/bin/busybox');
  assert.equal(layer.get('tmp')?.mode, 0o1777);
  assert.equal(layer.get('home/app')?.uid, 1000);
  const passwd = layer.get('etc/passwd')!.data.toString();
  assert.match(passwd, /^app:x:1000:1000:/m);
  assert.match(passwd, /^www:x:33:33:/m);
  assert.match(layer.get('etc/group')!.data.toString(), /^extra:x:2000:app$/m);
});

test('whiteout image: third layer deletes data/a and makes opq opaque', async () => {
  const f = fixtures.whiteout;
  const layer = await listLayer(await getBlob(registries.plain, f.repository, f.layerDigests[2]!));
  assert.deepEqual([...layer.keys()], ['data', 'data/.wh.a', 'opq', 'opq/.wh..wh..opq', 'opq/z']);
});

test('basic-auth registry refuses anonymous and wrong credentials, accepts the test ones', async () => {
  const { host, username, password } = registries.basic;
  const anon = await getManifest(host, fixtures.busybox.repository, 'latest');
  await anon.arrayBuffer();
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic /);
  const wrong = await getManifest(host, fixtures.busybox.repository, 'latest', basicHeader(username, 'wrong'));
  await wrong.arrayBuffer();
  assert.equal(wrong.status, 401);
  const ok = await getManifest(host, fixtures.busybox.repository, 'latest', basicHeader(username, password));
  await ok.arrayBuffer();
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('docker-content-digest'), fixtures.busybox.digest);
  const { stdout } = await run('skopeo', [
    'inspect', '--tls-verify=false', '--creds', `${username}:${password}`,
    `docker://${imageRef(host, fixtures.busybox)}`,
  ]);
  assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, fixtures.busybox.digest);
});

function parseChallenge(header: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const m of header.replace(/^Bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!] = m[2]!;
  return params;
}

test('token-auth registry: 401 without a token, 200 with one from our token server', async () => {
  const { host, username, password } = registries.bearer;
  const repo = fixtures.busybox.repository;
  const anon = await getManifest(host, repo, 'latest');
  await anon.arrayBuffer();
  assert.equal(anon.status, 401);
  const challenge = parseChallenge(anon.headers.get('www-authenticate') ?? '');
  assert.equal(challenge.realm, registries.bearer.realm);
  assert.equal(challenge.service, registries.bearer.service);
  assert.equal(challenge.scope, `repository:${repo}:pull`);

  const tokenUrl = `${challenge.realm}?service=${encodeURIComponent(challenge.service!)}&scope=${encodeURIComponent(challenge.scope!)}`;
  const refused = await fetch(tokenUrl, { headers: { authorization: basicHeader(username, 'wrong') } });
  await refused.arrayBuffer();
  assert.equal(refused.status, 401);

  const granted = await fetch(tokenUrl, { headers: { authorization: basicHeader(username, password) } });
  assert.equal(granted.status, 200);
  const { token } = (await granted.json()) as { token: string };
  const ok = await getManifest(host, repo, 'latest', `Bearer ${token}`);
  await ok.arrayBuffer();
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('docker-content-digest'), fixtures.busybox.digest);

  // The token's scope is that repository only.
  const other = await getManifest(host, fixtures.whiteout.repository, 'latest', `Bearer ${token}`);
  await other.arrayBuffer();
  assert.equal(other.status, 401);

  // An anonymous token grants nothing.
  const anonToken = ((await (await fetch(tokenUrl)).json()) as { token: string }).token;
  const withAnonToken = await getManifest(host, repo, 'latest', `Bearer ${anonToken}`);
  await withAnonToken.arrayBuffer();
  assert.equal(withAnonToken.status, 401);

  const { stdout } = await run('skopeo', [
    'inspect', '--tls-verify=false', '--creds', `${username}:${password}`,
    `docker://${imageRef(host, fixtures.multiarch)}`,
  ]);
  assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, fixtures.multiarch.digest);
});

test('tamper proxy serves blobs of the right length whose digest does not match', async () => {
  const f = fixtures.busybox;
  const manifest = await getManifest(registries.tamper, f.repository, 'latest');
  const body = Buffer.from(await manifest.arrayBuffer());
  assert.equal(sha256(body), f.digest, 'manifests pass through untouched');
  for (const digest of [f.configDigest, f.layerDigests[0]!]) {
    const honest = await getBlob(registries.plain, f.repository, digest);
    const tampered = await getBlob(registries.tamper, f.repository, digest);
    assert.equal(tampered.length, honest.length);
    assert.equal(sha256(honest), digest);
    assert.notEqual(sha256(tampered), digest);
  }
  const copy = await run(
    'skopeo',
    ['inspect', '--tls-verify=false', '--config', `docker://${imageRef(registries.tamper, f)}`],
    { reject: false },
  );
  assert.notEqual(copy.exitCode, 0, 'skopeo must reject the corrupted config blob');
});
