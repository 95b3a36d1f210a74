import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { BlobStore, raceAbort } from '../../src/image/blob-store.js';
import { ImageStore, type CommitRequest, type ImageRecord } from '../../src/image/image-store.js';
import { Leases, SharedWork, parseImageReference } from '../../src/image/pull.js';
import { credentialsFrom } from '../../src/cri/image-handlers.js';
import { imageUser, imageMessage, imageListItems } from '../../src/cri/list-responses.js';
import { criServices } from '../../src/cri/grpc.js';
import { NodeletError, isKind } from '../../src/common/errors.js';
import { ImageService } from '../../src/image/image-service.js';

function sha(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function tempRoot(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-image-store-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

function fakeImage(seed: string, extra: Partial<CommitRequest> = {}): CommitRequest {
  const config = { architecture: 'amd64', os: 'linux', config: { User: '' }, rootfs: { type: 'layers', diff_ids: [sha(`diff-${seed}`)] } };
  return {
    id: sha(JSON.stringify(config)),
    config,
    manifestDigest: sha(`manifest-${seed}`),
    layers: [{ digest: sha(`layer-${seed}`), diffId: sha(`diff-${seed}`), size: 100, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }],
    size: 150,
    ...extra,
  };
}

test('image store: commit, index by tag and digest, reload from disk', async (t) => {
  const root = await tempRoot(t);
  const store = new ImageStore(root);
  await store.load();
  const a = fakeImage('a', { repoTag: 'docker.io/library/busybox:latest', repoDigest: 'docker.io/library/busybox@sha256:' + 'a'.repeat(64) });
  const { record, orphaned } = await store.commit(a);
  assert.equal(record.id, a.id);
  assert.deepEqual(orphaned, []);
  assert.equal(store.getByTag('docker.io/library/busybox:latest')?.id, a.id);
  assert.equal(store.getByDigest('docker.io/library/busybox@sha256:' + 'a'.repeat(64))?.id, a.id);
  const file = path.join(root, 'images', `${a.id.slice(7)}.json`);
  const onDisk = JSON.parse(await fsp.readFile(file, 'utf8')) as ImageRecord;
  assert.deepEqual(onDisk.repoTags, ['docker.io/library/busybox:latest']);
  assert.equal(onDisk.size, 150);
  assert.equal(onDisk.pinned, false);

  // A second tag on the same image adds a name, no new record.
  await store.commit({ ...a, repoTag: 'docker.io/library/busybox:1.0', repoDigest: undefined });
  const reloaded = new ImageStore(root);
  await reloaded.load();
  assert.equal(reloaded.list().length, 1);
  assert.deepEqual(reloaded.get(a.id)?.repoTags, ['docker.io/library/busybox:latest', 'docker.io/library/busybox:1.0']);
  assert.equal(reloaded.getByTag('docker.io/library/busybox:1.0')?.id, a.id);
  assert.deepEqual([...reloaded.referencedLayers()], [sha('diff-a')]);
  assert.deepEqual(new Set(reloaded.referencedBlobs()), new Set([a.id, sha('layer-a')]));
});

test('image store: a tag moving to a new image leaves the old one; a nameless old image is reported orphaned', async (t) => {
  const root = await tempRoot(t);
  const store = new ImageStore(root);
  await store.load();
  const tag = 'example.com/app:v1';
  const a = fakeImage('a', { repoTag: tag });
  const b = fakeImage('b', { repoTag: tag });
  await store.commit(a);
  const moved = await store.commit(b);
  assert.equal(store.getByTag(tag)?.id, b.id);
  assert.deepEqual(store.get(a.id)?.repoTags, []);
  assert.deepEqual(moved.orphaned.map((r) => r.id), [a.id]);

  // With a repo digest the old image keeps a name and is not orphaned.
  const c = fakeImage('c', { repoTag: 'example.com/app:v2', repoDigest: 'example.com/app@sha256:' + 'c'.repeat(64) });
  const d = fakeImage('d', { repoTag: 'example.com/app:v2' });
  await store.commit(c);
  const moved2 = await store.commit(d);
  assert.deepEqual(moved2.orphaned, []);
  assert.deepEqual(store.get(c.id)?.repoTags, []);
  assert.deepEqual(store.get(c.id)?.repoDigests, ['example.com/app@sha256:' + 'c'.repeat(64)]);
});

test('image store: a tag found on two records after a crash goes to the newer one', async (t) => {
  const root = await tempRoot(t);
  const store = new ImageStore(root);
  await store.load();
  const tag = 'example.com/app:v1';
  const a = fakeImage('a', { repoTag: tag });
  const b = fakeImage('b', { repoTag: tag });
  await store.commit(a);
  await store.commit(b);
  // Simulate the crash: the old record still carries the tag, with an older updatedAt.
  const fileA = path.join(root, 'images', `${a.id.slice(7)}.json`);
  const recA = JSON.parse(await fsp.readFile(fileA, 'utf8')) as ImageRecord;
  recA.repoTags = [tag];
  recA.updatedAt = new Date(0).toISOString();
  await fsp.writeFile(fileA, JSON.stringify(recA));
  await fsp.writeFile(path.join(root, 'images', '.stale.json.abc.tmp'), 'partial');
  const reloaded = new ImageStore(root);
  await reloaded.load();
  assert.equal(reloaded.getByTag(tag)?.id, b.id);
  assert.deepEqual(reloaded.get(a.id)?.repoTags, []);
  const fixed = JSON.parse(await fsp.readFile(fileA, 'utf8')) as ImageRecord;
  assert.deepEqual(fixed.repoTags, []);
  assert.deepEqual((await fsp.readdir(path.join(root, 'images'))).filter((n) => n.endsWith('.tmp')), []);
});

test('image store: remove and removeName', async (t) => {
  const root = await tempRoot(t);
  const store = new ImageStore(root);
  await store.load();
  const a = fakeImage('a', { repoTag: 'example.com/app:v1', repoDigest: 'example.com/app@sha256:' + 'a'.repeat(64) });
  await store.commit(a);
  await store.commit({ ...a, repoTag: 'example.com/app:v2', repoDigest: undefined });
  const updated = await store.removeName('example.com/app:v1');
  assert.deepEqual(updated?.repoTags, ['example.com/app:v2']);
  assert.equal(store.getByTag('example.com/app:v1'), undefined);
  assert.equal(await store.removeName('example.com/app:nope'), undefined);
  const removed = await store.remove(a.id);
  assert.equal(removed?.id, a.id);
  assert.equal(store.get(a.id), undefined);
  assert.equal(store.getByTag('example.com/app:v2'), undefined);
  assert.equal(store.getByDigest('example.com/app@sha256:' + 'a'.repeat(64)), undefined);
  assert.deepEqual(await fsp.readdir(path.join(root, 'images')), []);
  assert.equal(await store.remove(a.id), undefined);
});

test('blob store: ingest renames into place, concurrent ingests fetch once, usage is counted', async (t) => {
  const root = await tempRoot(t);
  const blobs = new BlobStore(root);
  await blobs.recover();
  const data = Buffer.from('hello layer');
  const digest = sha(data);
  let fetches = 0;
  const fetch = async (dest: string) => {
    fetches += 1;
    await new Promise((r) => setTimeout(r, 20));
    await fsp.writeFile(dest, data);
  };
  const results = await Promise.all(Array.from({ length: 5 }, () => blobs.ingest({ digest, size: data.length }, fetch)));
  assert.equal(fetches, 1);
  assert.equal(results.filter((r) => r.fetched).length, 1);
  assert.equal(await fsp.readFile(blobs.path(digest), 'utf8'), 'hello layer');
  assert.equal(blobs.path(digest), path.join(root, 'blobs', 'sha256', digest.slice(7)));
  assert.deepEqual(await blobs.list(), [digest]);
  assert.deepEqual(blobs.usage(), { bytes: data.length, files: 1 });
  assert.deepEqual(await fsp.readdir(path.join(root, 'ingest')), []);

  // A fetch that fails leaves nothing behind.
  const other = Buffer.from('other');
  await assert.rejects(
    blobs.ingest({ digest: sha(other), size: other.length }, async (dest) => {
      await fsp.writeFile(dest, 'partial');
      throw new Error('connection reset');
    }),
    /connection reset/,
  );
  assert.equal(await blobs.has(sha(other)), false);
  assert.deepEqual(await fsp.readdir(path.join(root, 'ingest')), []);

  // Size mismatch is refused.
  await assert.rejects(blobs.ingest({ digest: sha(other), size: 999 }, (dest) => fsp.writeFile(dest, other)), /expected 999/);

  const config = Buffer.from('{"a":1}');
  await blobs.putBytes(sha(config), config);
  await assert.rejects(blobs.putBytes(sha('x'), config), /digest mismatch/);
  assert.equal(blobs.usage().files, 2);
  assert.equal(await blobs.remove(digest), true);
  assert.equal(await blobs.remove(digest), false);
  assert.deepEqual(blobs.usage(), { bytes: config.length, files: 1 });
  assert.throws(() => blobs.path('md5:abc'), (e: unknown) => isKind(e, 'InvalidArgument'));
});

test('blob store: recover removes stale ingest files and recounts usage', async (t) => {
  const root = await tempRoot(t);
  await fsp.mkdir(path.join(root, 'ingest'), { recursive: true });
  await fsp.writeFile(path.join(root, 'ingest', 'stale'), 'x');
  await fsp.mkdir(path.join(root, 'blobs', 'sha256'), { recursive: true });
  const data = Buffer.from('abc');
  await fsp.writeFile(path.join(root, 'blobs', 'sha256', sha(data).slice(7)), data);
  const blobs = new BlobStore(root);
  await blobs.recover();
  assert.deepEqual(await fsp.readdir(path.join(root, 'ingest')), []);
  assert.deepEqual(blobs.usage(), { bytes: 3, files: 1 });
});

test('blob store: an aborted waiter gives up at once while the download goes on', async (t) => {
  const root = await tempRoot(t);
  const blobs = new BlobStore(root);
  await blobs.recover();
  const data = Buffer.from('slow');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const first = blobs.ingest({ digest: sha(data), size: data.length }, async (dest) => {
    await gate;
    await fsp.writeFile(dest, data);
  });
  const controller = new AbortController();
  const second = blobs.ingest({ digest: sha(data), size: data.length }, async () => assert.fail('second fetch'), controller.signal);
  controller.abort(new NodeletError('DeadlineExceeded', 'deadline passed'));
  await assert.rejects(second, (e: unknown) => isKind(e, 'DeadlineExceeded'));
  release();
  assert.equal((await first).fetched, true);
});

test('shared work: callers share one run; it is cancelled only when every caller gave up', async () => {
  const shared = new SharedWork<number>();
  let runs = 0;
  let innerSignal: AbortSignal | undefined;
  const fn = (signal: AbortSignal) => {
    runs += 1;
    innerSignal = signal;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => resolve(42), 50);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(new Error('cancelled'));
      });
    });
  };
  const c1 = new AbortController();
  const c2 = new AbortController();
  const p1 = shared.run('k', fn, c1.signal, 'work');
  const p2 = shared.run('k', fn, c2.signal, 'work');
  const p3 = shared.run('k', fn, undefined, 'work');
  c1.abort();
  await assert.rejects(p1, (e: unknown) => isKind(e, 'DeadlineExceeded'));
  assert.equal(innerSignal?.aborted, false);
  assert.deepEqual(await Promise.all([p2, p3]), [42, 42]);
  assert.equal(runs, 1);
  assert.equal(shared.size, 0);

  const c3 = new AbortController();
  const p4 = shared.run('k2', fn, c3.signal, 'work');
  c3.abort();
  await assert.rejects(p4, (e: unknown) => isKind(e, 'DeadlineExceeded'));
  assert.equal(innerSignal?.aborted, true);
});

test('leases are reference counted', () => {
  const leases = new Leases();
  const r1 = leases.acquire(['a', 'b', 'a']);
  const r2 = leases.acquire(['a']);
  r1();
  r1();
  assert.equal(leases.has('a'), true);
  assert.equal(leases.has('b'), false);
  r2();
  assert.equal(leases.has('a'), false);
});

test('references: malformed ones are InvalidArgument naming the reference', () => {
  assert.throws(() => parseImageReference('Bad//Ref!'), (e: unknown) => isKind(e, 'InvalidArgument') && (e as Error).message.includes('Bad//Ref!'));
  assert.equal(parseImageReference('busybox').path, 'library/busybox');
});

test('image user and message mapping', () => {
  assert.deepEqual(imageUser(''), { username: '' });
  assert.deepEqual(imageUser(undefined), { username: '' });
  assert.deepEqual(imageUser('1000'), { uid: 1000, username: '' });
  assert.deepEqual(imageUser('1000:2000'), { uid: 1000, username: '' });
  assert.deepEqual(imageUser('nobody'), { username: 'nobody' });
  assert.deepEqual(imageUser('nobody:nogroup'), { username: 'nobody' });
  const record: ImageRecord = {
    id: sha('cfg'),
    repoTags: ['docker.io/library/busybox:latest'],
    repoDigests: [],
    config: { config: { User: '0:0' } },
    manifestDigest: sha('m'),
    layers: [],
    size: 12,
    pinned: true,
    createdAt: '',
    updatedAt: '',
  };
  const msg = imageMessage(record);
  assert.deepEqual(msg.uid, { value: 0 });
  assert.equal(msg.username, '');
  assert.deepEqual(msg.spec, { image: sha('cfg'), annotations: {} });
  assert.equal(msg.pinned, true);
  assert.equal(credentialsFrom(null), undefined);
  assert.equal(credentialsFrom({ username: '', password: '', auth: '', server_address: 'x', identity_token: '', registry_token: '' }), undefined);
  assert.deepEqual(credentialsFrom({ username: 'u', password: 'p', auth: '', server_address: '', identity_token: '', registry_token: 't' }), { username: 'u', password: 'p', registryToken: 't' });
});

test("an image's encoded list entry is its ImageStatus answer byte for byte, and follows a change of names", () => {
  const svc = criServices().image;
  const items = imageListItems(svc.ListImages.responseSerialize);
  let record: ImageRecord = {
    id: sha('cfg2'),
    repoTags: ['docker.io/library/busybox:1', 'docker.io/library/busybox:latest'],
    repoDigests: [`docker.io/library/busybox@${sha('m2')}`],
    config: { config: { User: 'nobody' } },
    manifestDigest: sha('m2'),
    layers: [],
    size: 4_300_000_000,
    pinned: false,
    createdAt: '',
    updatedAt: '',
  };
  const statusBytes = (r: ImageRecord) => svc.ImageStatus.responseSerialize({ image: imageMessage(r), info: {} } as never);
  assert.deepEqual(items.message(record).bytes, statusBytes(record));
  assert.deepEqual(svc.ImageStatus.responseDeserialize(items.message(record).bytes), svc.ImageStatus.responseDeserialize(statusBytes(record)));
  record = { ...record, repoTags: record.repoTags.slice(1), pinned: true };
  assert.deepEqual(items.message(record).bytes, statusBytes(record));
  const listed = svc.ListImages.responseDeserialize(items.response([record, record]).bytes) as { images: Array<{ repo_tags: string[]; pinned: boolean }> };
  assert.deepEqual(listed.images.map((i) => [i.repo_tags, i.pinned]), [[['docker.io/library/busybox:latest'], true], [['docker.io/library/busybox:latest'], true]]);
});

test('raceAbort passes results through without a signal', async () => {
  assert.equal(await raceAbort(Promise.resolve(1), undefined, 'x'), 1);
});

test('image store: removeIfUnnamed only removes records still without names', async (t) => {
  const root = await tempRoot(t);
  const store = new ImageStore(root);
  await store.load();
  const a = fakeImage('a', { repoTag: 'example.com/app:v1' });
  const b = fakeImage('b', { repoTag: 'example.com/app:v1' });
  await store.commit(a);
  await store.commit(b);
  assert.equal(await store.removeIfUnnamed(b.id), undefined, 'named image kept');
  assert.equal(await store.removeIfUnnamed(a.id, () => true), undefined, 'kept when the caller says so');
  assert.equal((await store.removeIfUnnamed(a.id))?.id, a.id);
  assert.equal(store.get(a.id), undefined);
  assert.deepEqual(await fsp.readdir(path.join(root, 'images')), [`${b.id.slice(7)}.json`]);
});

test('image service lookup: id, bare hex, short names, repo digests; untag and remove semantics', async (t) => {
  const root = await tempRoot(t);
  const unused = async () => assert.fail('no registry calls expected');
  const inUse = new Set<string>();
  const service = new ImageService({ root, registry: { resolve: unused, downloadBlob: unused }, inUse: (id) => inUse.has(id) });
  await service.recover();
  const digest = 'sha256:' + 'd'.repeat(64);
  const a = fakeImage('a', { repoTag: 'docker.io/library/busybox:latest', repoDigest: `docker.io/library/busybox@${digest}` });
  await service.images.commit(a);
  await service.images.commit({ ...a, repoTag: 'docker.io/library/busybox:1.0', repoDigest: undefined });
  assert.equal(service.lookup('busybox')?.id, a.id);
  assert.equal(service.lookup('docker.io/library/busybox')?.id, a.id);
  assert.equal(service.lookup('busybox:1.0')?.id, a.id);
  assert.equal(service.lookup(a.id)?.id, a.id);
  assert.equal(service.lookup(a.id.slice(7))?.id, a.id);
  assert.equal(service.lookup(`busybox@${digest}`)?.id, a.id);
  assert.equal(service.lookup(`busybox:whatever@${digest}`)?.id, a.id);
  assert.equal(service.lookup('busybox:2.0'), undefined);
  assert.equal(service.lookup('Not A Ref!'), undefined);
  assert.deepEqual(service.list({ image: { image: 'busybox:1.0' } }).map((r) => r.id), [a.id]);
  assert.deepEqual(service.list({ image: { image: 'nope' } }), []);

  inUse.add(a.id);
  await assert.rejects(service.remove('busybox'), (e: unknown) => isKind(e, 'FailedPrecondition') && (e as Error).message.includes('busybox'));
  const untagged = await service.untag('busybox:1.0');
  assert.equal(untagged.imageRemoved, false);
  await assert.rejects(service.untag('busybox'), (e: unknown) => isKind(e, 'FailedPrecondition'));
  inUse.delete(a.id);
  await assert.rejects(service.untag('busybox:1.0'), (e: unknown) => isKind(e, 'NotFound'));
  assert.equal((await service.untag('busybox')).imageRemoved, true);
  assert.equal(service.lookup(a.id), undefined);
  await service.remove('busybox');
  await assert.rejects(service.resolveImage('busybox'), (e: unknown) => isKind(e, 'NotFound'));
  assert.deepEqual(await service.fsInfo(), { bytes: 0, inodes: 0, mountpoint: root });
});
