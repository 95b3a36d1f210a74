// The CRI ImageService against real registries (docker-registry with no auth, basic auth, token auth, a
// blob-corrupting proxy), through a real gRPC server on a temp socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CriServer } from '../../src/cri/server.js';
import { imageHandlers } from '../../src/cri/image-handlers.js';
import { ImageService } from '../../src/image/image-service.js';
import { RegistryClient, type RegistryClientOptions } from '../../src/image/registry.js';
import { isKind } from '../../src/common/errors.js';
import { connectCri, type CriClient } from '../helpers/cri-client.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { startDripProxy } from '../helpers/drip-proxy.js';
import { startTamperProxy } from '../helpers/tamper-proxy.js';
import { loadFixtures, imageRef, digestRef, type Fixtures, type FixtureImage } from '../helpers/fixtures.js';

interface Harness {
  root: string;
  service: ImageService;
  client: CriClient;
  registry: RegistryClient;
  inUse: Set<string>;
  counts: { resolve: number; download: number };
}

let registries: Registries;
let fixtures: Fixtures;
let main: Harness;
const cleanups: Array<() => Promise<void>> = [];

async function startHarness(options: Partial<RegistryClientOptions> = {}): Promise<Harness> {
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-imgsvc-'));
  const root = path.join(base, 'images');
  const socket = path.join(base, 'cri.sock');
  const registry = new RegistryClient({
    insecure: [registries.plain, registries.basic.host, registries.bearer.host, registries.tamper],
    mirrors: {},
    requestTimeoutMs: 10_000,
    retries: 1,
    ...options,
  });
  const counts = { resolve: 0, download: 0 };
  // Counts calls into the real client, to see how many downloads concurrent pulls cause.
  const counting: Pick<RegistryClient, 'resolve' | 'downloadBlob'> = {
    resolve: (...args) => {
      counts.resolve += 1;
      return registry.resolve(...args);
    },
    downloadBlob: (...args) => {
      counts.download += 1;
      return registry.downloadBlob(...args);
    },
  };
  const inUse = new Set<string>();
  const service = new ImageService({ root, registry: counting, inUse: (id) => inUse.has(id) });
  await service.recover();
  const server = new CriServer({ socket, runtime: { unary: {} }, image: imageHandlers(service) });
  await server.start();
  const client = connectCri(socket);
  cleanups.push(async () => {
    client.close();
    await server.stop(1000);
    await registry.close();
    await fsp.rm(base, { recursive: true, force: true });
  });
  return { root, service, client, registry, inUse, counts };
}

function ref(image: FixtureImage, tag?: string): string {
  return imageRef(registries.plain, image, tag);
}

async function pull(h: Harness, image: string, auth?: object, deadlineMs?: number): Promise<string> {
  const res = await h.client.image('PullImage', { image: { image }, ...(auth ? { auth } : {}) }, deadlineMs ? { deadlineMs } : {});
  return res.image_ref as string;
}

async function status(h: Harness, image: string, verbose = false): Promise<any> {
  return h.client.image('ImageStatus', { image: { image }, verbose });
}

function grpcCode(code: grpc.status) {
  return (err: unknown) => {
    const e = err as grpc.ServiceError;
    assert.equal(grpc.status[e.code], grpc.status[code], e.details);
    return true;
  };
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

async function listDir(p: string): Promise<string[]> {
  return fsp.readdir(p).catch(() => []);
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  registries = await useRegistries();
  fixtures = await loadFixtures();
  main = await startHarness();
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await registries?.stop();
});

test('pull every fixture by tag and by digest: the image id is the config digest', async () => {
  for (const image of Object.values(fixtures).filter((f) => !f.hostile)) {
    const byTag = await pull(main, ref(image));
    assert.equal(byTag, image.configDigest, `${image.name} by tag`);
    const byDigest = await pull(main, digestRef(registries.plain, image));
    assert.equal(byDigest, image.configDigest, `${image.name} by digest`);
    const st = await status(main, ref(image));
    assert.equal(st.image.id, image.configDigest);
    assert.ok(st.image.repo_tags.includes(ref(image)), `${image.name} tags ${st.image.repo_tags}`);
    assert.ok(st.image.repo_digests.includes(digestRef(registries.plain, image)), `${image.name} digests ${st.image.repo_digests}`);
    assert.ok(st.image.size > image.layersSize, `${image.name} size ${st.image.size} covers layers and config`);
    assert.deepEqual(st.image.spec.image, image.configDigest);
    const byId = await status(main, image.configDigest);
    assert.equal(byId.image.id, image.configDigest);
    const byDigestStatus = await status(main, digestRef(registries.plain, image));
    assert.equal(byDigestStatus.image.id, image.configDigest);
  }
});

test('every tag of one image gives one image with all the tags; list and its filter', async () => {
  const busybox = fixtures.busybox;
  for (const tag of busybox.tags) assert.equal(await pull(main, ref(busybox, tag)), busybox.configDigest);
  const st = await status(main, ref(busybox, busybox.tags[0]));
  for (const tag of busybox.tags) assert.ok(st.image.repo_tags.includes(ref(busybox, tag)));
  const all = await main.client.image('ListImages', {});
  const ids = all.images.map((i: any) => i.id);
  assert.equal(new Set(ids).size, ids.length, 'no duplicates');
  for (const image of Object.values(fixtures).filter((f) => !f.hostile)) assert.ok(ids.includes(image.configDigest), image.name);
  const filtered = await main.client.image('ListImages', { filter: { image: { image: ref(busybox, busybox.tags[0]) } } });
  assert.deepEqual(filtered.images.map((i: any) => i.id), [busybox.configDigest]);
  const none = await main.client.image('ListImages', { filter: { image: { image: `${registries.plain}/nodelet-test/absent:1` } } });
  assert.deepEqual(none.images, []);
});

test('image status: absent is OK with no image; uid vs username; verbose info', async () => {
  const absent = await status(main, `${registries.plain}/nodelet-test/absent:latest`);
  assert.equal(absent.image, null);
  const userName = await status(main, ref(fixtures.userName));
  assert.ok(fixtures.userName.user && !/^\d+/.test(fixtures.userName.user));
  assert.equal(userName.image.username, fixtures.userName.user.split(':')[0]);
  assert.equal(userName.image.uid, null);
  const uidGid = await status(main, ref(fixtures.userUidGid));
  assert.equal(uidGid.image.uid.value, Number(fixtures.userUidGid.user.split(':')[0]));
  assert.equal(uidGid.image.username, '');
  const verbose = await status(main, ref(fixtures.entrypoint), true);
  const info = JSON.parse(verbose.info.info);
  assert.deepEqual(info.imageSpec.rootfs.diff_ids, fixtures.entrypoint.diffIds);
  assert.deepEqual(info.imageSpec.config.Entrypoint, fixtures.entrypoint.config.Entrypoint);
  await assert.rejects(main.client.image('ImageStatus', { image: { image: '' } }), (e: any) => {
    grpcCode(grpc.status.INVALID_ARGUMENT)(e);
    assert.match(e.details, /image\.image/);
    return true;
  });
});

test('image fs info reports usage of the image store', async () => {
  const res = await main.client.image('ImageFsInfo', {});
  assert.equal(res.image_filesystems.length, 1);
  const fs = res.image_filesystems[0];
  assert.equal(fs.fs_id.mountpoint, main.root);
  assert.ok(fs.used_bytes.value > fixtures.big.layersSize, `used ${fs.used_bytes.value}`);
  assert.ok(fs.inodes_used.value > 10);
  assert.ok(fs.timestamp > 1e18);
});

test('multiarch picks linux/amd64; whiteout layers carry 0:0 char devices', async () => {
  const multi = await main.service.resolveImage(ref(fixtures.multiarch));
  assert.equal(multi.record.id, fixtures.multiarch.configDigest);
  assert.equal(await fsp.readFile(path.join(multi.layerDirs[0]!, 'arch'), 'utf8'), 'linux/amd64\n');
  assert.ok(multi.record.repoDigests.includes(`${registries.plain}/${fixtures.multiarch.repository}@${fixtures.multiarch.indexDigest}`));
  const whiteout = await main.service.resolveImage(ref(fixtures.whiteout));
  assert.equal(whiteout.layerDirs.length, fixtures.whiteout.layerCount);
  const st = await fsp.lstat(path.join(whiteout.layerDirs[0]!, 'data', 'a'));
  assert.ok(st.isCharacterDevice(), 'data/a is a whiteout');
  assert.equal(st.rdev, 0);
  assert.equal(await fsp.readFile(path.join(whiteout.layerDirs[1]!, 'data', 'a'), 'utf8'), 'a\n');
});

test('remove by tag removes the image with all its tags; gc keeps shared layers and blobs', async () => {
  const removed = fixtures.whiteout;
  const others = Object.values(fixtures).filter((f) => f.configDigest !== removed.configDigest);
  const sharedDiffIds = new Set(others.flatMap((f) => f.diffIds));
  const sharedBlobs = new Set(others.flatMap((f) => f.layerDigests));
  const unique = removed.diffIds.filter((d) => !sharedDiffIds.has(d));
  assert.ok(unique.length > 0 && unique.length < removed.diffIds.length, 'the whiteout image has both shared and own layers');

  // In use: refused, nothing changes.
  main.inUse.add(removed.configDigest);
  await assert.rejects(main.client.image('RemoveImage', { image: { image: ref(removed) } }), (e: any) => {
    grpcCode(grpc.status.FAILED_PRECONDITION)(e);
    assert.ok(e.details.includes(ref(removed)));
    return true;
  });
  main.inUse.delete(removed.configDigest);
  assert.ok((await status(main, ref(removed))).image);

  await main.client.image('RemoveImage', { image: { image: ref(removed) } });
  assert.equal((await status(main, ref(removed))).image, null);
  assert.equal((await status(main, digestRef(registries.plain, removed))).image, null);
  assert.equal((await status(main, removed.configDigest)).image, null);
  for (const diffId of removed.diffIds) {
    assert.equal(await exists(main.service.layers.fsPath(diffId)), sharedDiffIds.has(diffId), `layer ${diffId}`);
  }
  for (const digest of removed.layerDigests) {
    assert.equal(await exists(main.service.blobs.path(digest)), sharedBlobs.has(digest), `blob ${digest}`);
  }
  assert.equal(await exists(main.service.blobs.path(removed.configDigest)), false, 'config blob collected');
  assert.equal(await exists(path.join(main.root, 'images', `${removed.configDigest.slice(7)}.json`)), false);

  // Removing again (absent) is success.
  await main.client.image('RemoveImage', { image: { image: ref(removed) } });

  // Every tag goes with the image.
  const busybox = fixtures.busybox;
  await main.client.image('RemoveImage', { image: { image: ref(busybox, busybox.tags[0]) } });
  for (const tag of busybox.tags) assert.equal((await status(main, ref(busybox, tag))).image, null);
});

test('untag keeps an image other tags still name; the last tag removes it', async () => {
  const busybox = fixtures.busybox;
  for (const tag of busybox.tags) await pull(main, ref(busybox, tag));
  const first = await main.service.untag(ref(busybox, busybox.tags[0]));
  assert.equal(first.imageRemoved, false);
  assert.equal(main.service.status(ref(busybox, busybox.tags[0])), undefined);
  assert.equal(main.service.status(ref(busybox, busybox.tags[1]))?.id, busybox.configDigest);
  for (const tag of busybox.tags.slice(1, -1)) await main.service.untag(ref(busybox, tag));
  const last = await main.service.untag(ref(busybox, busybox.tags[busybox.tags.length - 1]));
  assert.equal(last.imageRemoved, true);
  assert.equal(main.service.status(busybox.configDigest), undefined);
});

test('status and list answer an image as its names are now, right after each change (their encoded answers are kept per record)', async () => {
  const busybox = fixtures.busybox;
  const [first, second, ...rest] = busybox.tags.map((t) => ref(busybox, t));
  for (const name of [first!, second!, ...rest]) await pull(main, name);
  const tagsNow = async () => ({
    status: (await status(main, second!)).image.repo_tags.sort(),
    listed: (await main.client.image('ListImages', {})).images.find((i: any) => i.id === busybox.configDigest)?.repo_tags.sort(),
  });
  const all = [first!, second!, ...rest].sort();
  assert.deepEqual(await tagsNow(), { status: all, listed: all });
  await main.service.untag(first!);
  const left = all.filter((t) => t !== first);
  assert.deepEqual(await tagsNow(), { status: left, listed: left });
  assert.equal((await status(main, first!)).image, null);
  await pull(main, first!);
  assert.deepEqual(await tagsNow(), { status: all, listed: all });
});

test('ten concurrent pulls of one image share one download', async () => {
  const h = await startHarness();
  const image = fixtures.entrypoint;
  const ids = await Promise.all(Array.from({ length: 10 }, () => pull(h, ref(image))));
  assert.deepEqual(new Set(ids), new Set([image.configDigest]));
  assert.equal(h.counts.resolve, 1);
  assert.equal(h.counts.download, image.layerCount);
  const blobs = await listDir(path.join(h.root, 'blobs', 'sha256'));
  assert.equal(blobs.length, new Set(image.layerDigests).size + 1);
  // A warm pull resolves again (the tag may have moved) but downloads nothing.
  await pull(h, ref(image));
  assert.equal(h.counts.download, image.layerCount);
});

test('basic and bearer auth: right credentials pull, none or wrong ones are UNAUTHENTICATED', async () => {
  const h = await startHarness();
  const image = fixtures.userName;
  for (const [name, reg] of [['basic', registries.basic], ['bearer', registries.bearer]] as const) {
    const reference = imageRef(reg.host, image);
    await assert.rejects(pull(h, reference), grpcCode(grpc.status.UNAUTHENTICATED), `${name} without credentials`);
    await assert.rejects(pull(h, reference, { username: reg.username, password: 'wrong' }), grpcCode(grpc.status.UNAUTHENTICATED), `${name} wrong password`);
    assert.equal((await status(h, reference)).image, null);
    assert.equal(await pull(h, reference, { username: reg.username, password: reg.password }), image.configDigest, name);
    const auth = Buffer.from(`${reg.username}:${reg.password}`).toString('base64');
    assert.equal(await pull(h, reference, { auth }), image.configDigest, `${name} with auth`);
  }
});

test('a corrupted blob from the tamper proxy is DATA_LOSS naming the blob, and nothing becomes visible', async () => {
  const h = await startHarness();
  const reference = imageRef(registries.tamper, fixtures.entrypoint);
  await assert.rejects(pull(h, reference), (e: any) => {
    grpcCode(grpc.status.DATA_LOSS)(e);
    // The config blob is the first one fetched, so it is the one named.
    assert.match(e.details, new RegExp(`blob ${fixtures.entrypoint.configDigest} from ${registries.tamper}: digest mismatch`));
    return true;
  });
  assert.deepEqual((await h.client.image('ListImages', {})).images, []);
  assert.deepEqual(await listDir(path.join(h.root, 'images')), []);
  assert.deepEqual(await listDir(path.join(h.root, 'ingest')), []);
  for (const digest of fixtures.entrypoint.layerDigests) assert.equal(await exists(h.service.blobs.path(digest)), false);
  assert.deepEqual(await h.service.layers.list(), []);
});

test('a layer blob whose digest is wrong but which unpacks cleanly while it downloads fails the pull and leaves nothing', async () => {
  // The flipped byte is in the gzip header's MTIME, which gunzip ignores: each layer's streamed unpack succeeds and
  // produces the right diff id; only the blob digest, checked when the download ends, is wrong.
  const layers = fixtures.entrypoint.layerDigests;
  const proxy = await startTamperProxy(registries.plain, { path: new RegExp(`/blobs/(${layers.join('|')})$`), at: 4 });
  try {
    const h = await startHarness({ insecure: [proxy.host, registries.plain] });
    await assert.rejects(pull(h, imageRef(proxy.host, fixtures.entrypoint)), (e: any) => {
      grpcCode(grpc.status.DATA_LOSS)(e);
      assert.match(e.details, /digest mismatch/);
      return true;
    });
    assert.ok(proxy.tampered() >= 1);
    assert.deepEqual((await h.client.image('ListImages', {})).images, []);
    for (const digest of layers) assert.equal(await exists(h.service.blobs.path(digest)), false, `no blob ${digest}`);
    assert.deepEqual(await h.service.layers.list(), []);
    // A sibling layer stopped by the failure removes its unpack dir just after the pull answers.
    await waitFor('no unpacked tree left behind', async () => (await listDir(path.join(h.root, 'layers', 'tmp'))).length === 0, 5_000);
    assert.deepEqual(await listDir(path.join(h.root, 'ingest')), []);
    // The same image through the registry itself pulls (the layers were never marked present).
    await pull(h, imageRef(registries.plain, fixtures.entrypoint));
    assert.equal((await h.service.layers.list()).length, fixtures.entrypoint.diffIds.length);
  } finally {
    await proxy.stop();
  }
});

test('a layer dripped a byte at a time stalls: UNAVAILABLE naming registry and digest after the retry, no staging file left', async () => {
  const layer = fixtures.entrypoint.layerDigests[0]!;
  const proxy = await startDripProxy(registries.plain, { path: new RegExp(`/blobs/${layer}$`), intervalMs: 200 });
  try {
    const h = await startHarness({ stallTimeoutMs: 1000, retries: 1 });
    await assert.rejects(pull(h, imageRef(proxy.host, fixtures.entrypoint)), (e: any) => {
      grpcCode(grpc.status.UNAVAILABLE)(e);
      assert.match(e.details, new RegExp(`from ${proxy.host}: blob ${layer} stalled`));
      return true;
    });
    assert.equal(proxy.dripped(), 2, 'one attempt and one retry');
    await waitFor('the pull to stop', () => h.service.pullsInFlight() === 0);
    assert.deepEqual((await h.client.image('ListImages', {})).images, []);
    assert.deepEqual(await listDir(path.join(h.root, 'ingest')), []);
    assert.equal(await exists(h.service.blobs.path(layer)), false);
  } finally {
    await proxy.stop();
  }
});

test('unknown images are NOT_FOUND; malformed references are INVALID_ARGUMENT naming them', async () => {
  await assert.rejects(pull(main, `${registries.plain}/nodelet-test/does-not-exist:latest`), grpcCode(grpc.status.NOT_FOUND));
  await assert.rejects(pull(main, ref(fixtures.busybox, 'no-such-tag')), grpcCode(grpc.status.NOT_FOUND));
  const bad = `${registries.plain}/Nodelet-Test/UPPER:tag`;
  await assert.rejects(pull(main, bad), (e: any) => {
    grpcCode(grpc.status.INVALID_ARGUMENT)(e);
    assert.ok(e.details.includes(bad), e.details);
    return true;
  });
  await assert.rejects(pull(main, ''), (e: any) => {
    grpcCode(grpc.status.INVALID_ARGUMENT)(e);
    assert.match(e.details, /image\.image/);
    return true;
  });
});

test('a passed deadline stops the pull: DEADLINE_EXCEEDED and nothing visible; the next pull completes', async (t) => {
  const h = await startHarness();
  const big = fixtures.big;
  await assert.rejects(pull(h, ref(big), undefined, 50), grpcCode(grpc.status.DEADLINE_EXCEEDED));
  await waitFor('the server-side pull to stop', () => h.service.pullsInFlight() === 0);
  assert.deepEqual((await h.client.image('ListImages', {})).images, []);
  assert.deepEqual(await listDir(path.join(h.root, 'images')), []);
  // The pull answers at the deadline; its download notices the abort a moment later and removes its staging file.
  await waitFor('the aborted download to remove its staging file', async () => (await listDir(path.join(h.root, 'ingest'))).length === 0);
  // The domain reports the kind itself.
  await assert.rejects(h.service.pull(ref(big), undefined, AbortSignal.timeout(50)), (e: unknown) => isKind(e, 'DeadlineExceeded'));
  await waitFor('the second pull to stop', () => h.service.pullsInFlight() === 0);
  assert.equal(h.service.status(ref(big)), undefined);

  const coldStart = performance.now();
  assert.equal(await pull(h, ref(big)), big.configDigest);
  const coldMs = performance.now() - coldStart;
  const warmStart = performance.now();
  assert.equal(await pull(h, ref(big)), big.configDigest);
  const warmMs = performance.now() - warmStart;
  t.diagnostic(`big image (${(big.layersSize / 1e6).toFixed(1)} MB compressed): cold pull ${coldMs.toFixed(0)} ms, warm pull ${warmMs.toFixed(0)} ms`);
  assert.ok(warmMs < coldMs);
  const orphans = await h.service.gc();
  assert.deepEqual(orphans.images, []);
});

test('restart: records, tags and layers come back from disk; orphan blobs are collected', async () => {
  const h = await startHarness();
  const image = fixtures.entrypoint;
  await pull(h, ref(image));
  const orphanData = Buffer.from('orphan blob');
  const { createHash } = await import('node:crypto');
  const orphan = `sha256:${createHash('sha256').update(orphanData).digest('hex')}`;
  await fsp.writeFile(h.service.blobs.path(orphan), orphanData);
  await fsp.writeFile(path.join(h.root, 'ingest', 'partial-download'), 'x');
  const again = new ImageService({ root: h.root, registry: h.registry });
  await again.recover();
  assert.equal(again.status(ref(image))?.id, image.configDigest);
  assert.equal(again.status(digestRef(registries.plain, image))?.id, image.configDigest);
  const resolved = await again.resolveImage(image.configDigest);
  assert.equal(resolved.layerDirs.length, image.layerCount);
  assert.equal(await exists(h.service.blobs.path(orphan)), false);
  assert.deepEqual(await listDir(path.join(h.root, 'ingest')), []);
});

test('the nodelet-cri daemon serves ImageService; images survive a daemon restart', async () => {
  const { startDaemon } = await import('../../src/cri/daemon.js');
  const { defaultConfig } = await import('../../src/config/config.js');
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-imgsvc-daemon-'));
  const config = defaultConfig();
  config.root = path.join(base, 'root');
  config.runRoot = path.join(base, 'run');
  config.socket = path.join(base, 'cri.sock');
  config.cni.confDir = path.join(base, 'cni');
  config.registry.insecure = [registries.plain];
  let daemon = await startDaemon(config);
  let client = connectCri(config.socket);
  try {
    const image = fixtures.entrypoint;
    const pulled = await client.image('PullImage', { image: { image: ref(image) } });
    assert.equal(pulled.image_ref, image.configDigest);
    client.close();
    await daemon.stop();
    daemon = await startDaemon(config);
    client = connectCri(config.socket);
    const st = await client.image('ImageStatus', { image: { image: ref(image) } });
    assert.equal(st.image?.id, image.configDigest);
    const fs = await client.image('ImageFsInfo', {});
    assert.ok(fs.image_filesystems[0].used_bytes.value > 0);
    await client.image('RemoveImage', { image: { image: image.configDigest } });
    assert.equal((await client.image('ImageStatus', { image: { image: ref(image) } })).image, null);
  } finally {
    client.close();
    await daemon.stop();
    await fsp.rm(base, { recursive: true, force: true });
  }
});
