// Images built to hurt the runtime: /etc/passwd as a FIFO, a device, a link to a host file; a huge
// /etc/group; a truncated layer; a decompression bomb; more layers than one mount option can name.
// The daemon must answer each promptly (the right user, or a clean error naming the file) and stay responsive.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { loadFixtures, imageRef, type Fixtures } from '../helpers/fixtures.js';
import { sandboxConfig, containerConfig, runContainer, waitExited } from '../helpers/pods.js';
import { HOSTILE_LINK_DIR, HOSTILE_IMAGE_UID, HOSTILE_IMAGE_GID, DEEP_LAYERS } from '../../scripts/build-test-images.js';

let d: TestDaemon;
let reg: Registries;
let fx: Fixtures;
let logDir: string;
let pod: { id: string; config: any };
let wroteHostFiles = false;

const HOST_UID = 4242;
const HOST_GID = 4243;

before(async () => {
  reg = await useRegistries();
  fx = await loadFixtures();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-hostile-'));
  const config = sandboxConfig('hostile', path.join(logDir, 'hostile'));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  pod = { id: pod_sandbox_id, config };
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
  if (wroteHostFiles) await fsp.rm(HOSTILE_LINK_DIR, { recursive: true, force: true });
});

function ref(name: keyof Fixtures): string {
  return imageRef(reg.plain, fx[name]);
}

async function pull(name: keyof Fixtures): Promise<string> {
  await d.client.image('PullImage', { image: { image: ref(name) } });
  return ref(name);
}

function rejectsWith(code: grpc.status, mentions: RegExp) {
  return (err: grpc.ServiceError) => {
    assert.equal(err.code, code, `want ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    assert.match(err.details, mentions);
    return true;
  };
}

/** The daemon still answers a cheap RPC at once (no libuv thread or lock left stuck). */
async function assertResponsive(): Promise<void> {
  const started = Date.now();
  await d.client.runtime('Version', {}, { deadlineMs: 3000 });
  await d.client.runtime('ListContainers', {}, { deadlineMs: 3000 });
  await d.client.image('ImageFsInfo', {}, { deadlineMs: 3000 });
  assert.ok(Date.now() - started < 3000);
}

async function containersOfPod(): Promise<string[]> {
  const { containers } = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: pod.id } });
  return containers.map((c: any) => c.id);
}

test('/etc/passwd and /etc/group linked out of the rootfs resolve inside it, never to the host files', async () => {
  // The host files the links would reach if followed on the host name other ids.
  await fsp.mkdir(HOSTILE_LINK_DIR, { recursive: true });
  wroteHostFiles = true;
  await fsp.writeFile(path.join(HOSTILE_LINK_DIR, 'passwd'), `hostile:x:${HOST_UID}:${HOST_UID}:host:/:/bin/sh\n`);
  await fsp.writeFile(path.join(HOSTILE_LINK_DIR, 'group'), `hostile:x:${HOST_GID}:hostile\n`);
  const image = await pull('hostilePasswdHostlink');
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('hostlink', image, ['sh', '-c', 'echo "$(id -u) $(id -g) $(id -G)"']));
  const status = await waitExited(d.client, id);
  assert.equal(status.exit_code, 0);
  const log = await fsp.readFile(status.log_path, 'utf8');
  const [uid, gid, ...groups] = log.trim().split(' ').slice(3).join(' ').split(/\s+/).map(Number);
  assert.equal(uid, HOSTILE_IMAGE_UID, log);
  assert.equal(gid, HOSTILE_IMAGE_UID, log);
  assert.ok(groups.includes(HOSTILE_IMAGE_GID), `the image's own group membership applies: ${log}`);
  assert.ok(!groups.includes(HOST_GID) && !log.includes(String(HOST_UID)), `nothing from the host files: ${log}`);
  await d.client.runtime('RemoveContainer', { container_id: id });
});

test('a FIFO at /etc/passwd is refused at once, however many creates come together', async () => {
  const image = await pull('hostilePasswdFifo');
  const started = Date.now();
  // More creates than libuv has threads: a blocking open would stall every later RPC.
  const creates = Array.from({ length: 6 }, (_, i) =>
    d.client.runtime(
      'CreateContainer',
      { pod_sandbox_id: pod.id, config: containerConfig(`fifo-${i}`, image, ['true']), sandbox_config: pod.config },
      { deadlineMs: 20_000 },
    ),
  );
  const results = await Promise.allSettled(creates);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    rejectsWith(grpc.status.INVALID_ARGUMENT, /\/etc\/passwd.*FIFO/)((r as PromiseRejectedResult).reason);
  }
  assert.ok(Date.now() - started < 15_000, `answered in ${Date.now() - started} ms`);
  await assertResponsive();
  assert.deepEqual(await containersOfPod(), [], 'no container left behind');
});

test('/etc/passwd linked to a device is refused without reading it', async () => {
  const image = await pull('hostilePasswdDevzero');
  const started = Date.now();
  await assert.rejects(
    d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: containerConfig('devzero', image, ['true']), sandbox_config: pod.config }, { deadlineMs: 20_000 }),
    rejectsWith(grpc.status.INVALID_ARGUMENT, /\/etc\/passwd.*character device/),
  );
  assert.ok(Date.now() - started < 10_000, `answered in ${Date.now() - started} ms`);
  await assertResponsive();
  assert.deepEqual(await containersOfPod(), []);
});

test('an /etc/group over the size cap is refused with an error naming it', async () => {
  const image = await pull('hostileGroupHuge');
  await assert.rejects(
    d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: containerConfig('huge', image, ['true']), sandbox_config: pod.config }, { deadlineMs: 20_000 }),
    rejectsWith(grpc.status.INVALID_ARGUMENT, /\/etc\/group.* bytes/),
  );
  assert.deepEqual(await containersOfPod(), []);
});

test('a layer cut off inside a member fails the pull cleanly and leaves no layer behind', async () => {
  await assert.rejects(d.client.image('PullImage', { image: { image: ref('hostileTruncated') } }), (err: grpc.ServiceError) => {
    assert.match(err.details, /truncated/);
    return true;
  });
  const { image } = await d.client.image('ImageStatus', { image: { image: ref('hostileTruncated') } });
  assert.equal(image, null);
  const layers = path.join(d.root, 'images', 'layers');
  const leftovers = await fsp.readdir(path.join(layers, 'tmp')).catch(() => []);
  assert.deepEqual(leftovers, []);
  await assertResponsive();
});

/** What a refused layer could have left: unpack work dirs, its layer dir, its downloaded blob. */
async function assertNothingLeftOf(daemon: TestDaemon, name: keyof Fixtures): Promise<void> {
  const images = path.join(daemon.root, 'images');
  // The refused pull answers at once; a sibling layer's unpack, aborted with it, removes its work dir a moment later.
  await waitFor('no unpack work dir', async () => (await fsp.readdir(path.join(images, 'layers', 'tmp')).catch(() => [])).length === 0, 10_000);
  for (const diffId of fx[name].diffIds.slice(1)) {
    await assert.rejects(fsp.stat(path.join(images, 'layers', diffId.slice(7))), `no layer dir for ${diffId}`);
  }
  for (const digest of fx[name].layerDigests.slice(1)) {
    await assert.rejects(fsp.stat(path.join(images, 'blobs', 'sha256', digest.slice(7))), `no blob ${digest}`);
  }
}

test('a decompression bomb stops at the size cap: a clean error, nothing left behind', async () => {
  const capped = await startTestDaemon({ args: ['--max-layer-size', '64Mi', '--max-layer-ratio', '100000'] });
  try {
    const started = Date.now();
    await assert.rejects(capped.client.image('PullImage', { image: { image: ref('zipBomb') } }, { deadlineMs: 60_000 }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.details);
      assert.match(err.details, /more than 67108864 bytes.*--max-layer-size/);
      return true;
    });
    assert.ok(Date.now() - started < 30_000, `refused in ${Date.now() - started} ms`);
    await assertNothingLeftOf(capped, 'zipBomb');
    // The image's other layer (shared busybox base) is fine to keep; the daemon goes on pulling.
    await capped.client.image('PullImage', { image: { image: ref('busybox') } });
  } finally {
    await capped.cleanup();
  }
});

test('a decompression bomb under the default caps is refused by its ratio', async () => {
  await assert.rejects(d.client.image('PullImage', { image: { image: ref('zipBomb') } }, { deadlineMs: 60_000 }), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.details);
    assert.match(err.details, /more than 200 times .*decompression bomb/);
    return true;
  });
  await assertNothingLeftOf(d, 'zipBomb');
  await assertResponsive();
});

test(`an image of ${DEEP_LAYERS} layers runs: every layer is visible in the container`, async () => {
  assert.equal(fx.deep.layerCount, DEEP_LAYERS);
  const image = await pull('deep');
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('deep', image, ['sh', '-c', 'ls /deep | wc -l; cat /deep/001 /deep/127']));
  const status = await waitExited(d.client, id);
  assert.equal(status.exit_code, 0);
  const text = (await fsp.readFile(status.log_path, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => l.split(' ').slice(3).join(' '));
  assert.deepEqual(text, [String(DEEP_LAYERS - 1), '1', '127']);
  // The scratch links the mount was made through went right after it.
  const entries = await fsp.readdir(path.join(d.root, 'containers', id));
  assert.deepEqual(entries.filter((e) => e.startsWith('.lowers-')), []);
  await d.client.runtime('RemoveContainer', { container_id: id });
});
