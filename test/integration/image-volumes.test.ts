// Image volumes end to end: a pulled image mounted read-only into a real container (runc, conmon,
// overlay), sub paths, refusals that leave nothing behind, removal and a daemon restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer } from '../helpers/pods.js';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;
/** Three layers: data/a whited out, opq/ made opaque (x, sub gone; z added). */
let WHITEOUT: string;
let busyboxId: string;
let whiteoutId: string;

const VOL = '/mnt/image-volume';

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-imgvol-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  WHITEOUT = `${reg.plain}/nodelet-test/whiteout:latest`;
  busyboxId = (await d.client.image('PullImage', { image: { image: BUSYBOX } })).image_ref;
  whiteoutId = (await d.client.image('PullImage', { image: { image: WHITEOUT } })).image_ref;
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

async function newPod(name: string) {
  const config = sandboxConfig(name, path.join(logDir, name));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  return { id: pod_sandbox_id as string, config };
}

async function removePod(id: string) {
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: id });
}

async function exec(id: string, cmd: string[]) {
  const res = await d.client.runtime('ExecSync', { container_id: id, cmd, timeout: 10 });
  return { stdout: res.stdout.toString(), stderr: res.stderr.toString(), code: res.exit_code as number };
}

/** A CRI Mount of an image, the way the kubelet sends it (image = the pulled image's ref, read-only). */
function imageMount(containerPath: string, image: string, extra: Record<string, any> = {}) {
  return { container_path: containerPath, readonly: true, image: { image }, ...extra };
}

async function expectCode(p: Promise<unknown>, code: grpc.status, mentions: RegExp) {
  await assert.rejects(p, (err: grpc.ServiceError) => {
    assert.equal(err.code, code, `want ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    assert.match(err.details, mentions);
    return true;
  });
}

async function hostMountsUnder(dir: string): Promise<string[]> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').map((l) => l.split(' ')[4] ?? '').filter((mp) => mp === dir || mp.startsWith(dir + '/'));
}

const exists = (p: string) => fsp.stat(p).then(() => true, () => false);

test('an image volume shows the merged image layers read-only; the image stays while the container exists', async () => {
  const pod = await newPod('imgvol');
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('reader', BUSYBOX, ['sleep', '3600'], { mounts: [imageMount(VOL, whiteoutId)] }));
  // The layers merge as in a rootfs: whiteouts and the opaque dir hide lower files.
  assert.equal((await exec(id, ['cat', `${VOL}/data/b`])).stdout, 'b\n');
  assert.notEqual((await exec(id, ['test', '-e', `${VOL}/data/a`])).code, 0, 'data/a is whited out');
  assert.equal((await exec(id, ['ls', `${VOL}/opq`])).stdout, 'z\n');
  assert.equal((await exec(id, ['ls', '-l', `${VOL}/etc/passwd`])).code, 0);
  const write = await exec(id, ['touch', `${VOL}/new-file`]);
  assert.notEqual(write.code, 0);
  assert.match(write.stderr, /Read-only file system/);
  // Read-only, not noexec: the image's own binary runs from the volume.
  assert.equal((await exec(id, [`${VOL}/bin/busybox`, 'echo', 'ran'])).stdout, 'ran\n');

  const { status } = await d.client.runtime('ContainerStatus', { container_id: id });
  const reported = status.mounts.find((m: any) => m.container_path === VOL);
  assert.ok(reported, 'the image mount is reported');
  assert.equal(reported.image.image, whiteoutId);
  assert.equal(reported.image.image_ref, whiteoutId);
  assert.equal(reported.readonly, true);
  const containerDir = path.join(d.root, 'containers', id);
  assert.equal((await hostMountsUnder(path.join(containerDir, 'image-volumes'))).length, 1, 'one host mount for the volume');
  // Verbose status says where the volume is mounted on the host.
  const verbose = await d.client.runtime('ContainerStatus', { container_id: id, verbose: true });
  const [info] = JSON.parse(verbose.info.info).imageVolumes;
  assert.deepEqual(await hostMountsUnder(info.mountPoint), [info.mountPoint]);
  assert.equal(info.imageId, whiteoutId);

  // In use as a volume: removal is refused and the layers stay under the running container.
  await expectCode(d.client.image('RemoveImage', { image: { image: WHITEOUT } }), grpc.status.FAILED_PRECONDITION, /in use/);
  assert.ok((await d.client.image('ImageStatus', { image: { image: WHITEOUT } })).image, 'the image is still listed');
  assert.equal((await exec(id, ['cat', `${VOL}/opq/z`])).stdout, 'z\n');

  await d.client.runtime('StopContainer', { container_id: id, timeout: 0 });
  await d.client.runtime('RemoveContainer', { container_id: id });
  // The teardown runs after the answer; a repeated RemoveContainer waits for it.
  await d.client.runtime('RemoveContainer', { container_id: id });
  assert.deepEqual(await hostMountsUnder(containerDir), [], 'rootfs and volume unmounted');
  assert.equal(await exists(containerDir), false);
  await removePod(pod.id);
  // Nothing uses it any more: it can go, and comes back for the next tests.
  await d.client.image('RemoveImage', { image: { image: WHITEOUT } });
  assert.equal((await d.client.image('ImageStatus', { image: { image: WHITEOUT } })).image, null);
  whiteoutId = (await d.client.image('PullImage', { image: { image: WHITEOUT } })).image_ref;
});

test('image_sub_path mounts one directory of the image (single-layer image)', async () => {
  const pod = await newPod('subpath');
  const id = await runContainer(
    d.client,
    pod.id,
    pod.config,
    containerConfig('sub', BUSYBOX, ['sleep', '3600'], {
      mounts: [imageMount('/cfg', busyboxId, { image_sub_path: 'etc' }), imageMount('/data', whiteoutId, { image_sub_path: './data/' })],
    }),
  );
  assert.match((await exec(id, ['cat', '/cfg/passwd'])).stdout, /^root:x:0:0:/);
  assert.notEqual((await exec(id, ['test', '-e', '/cfg/etc'])).code, 0, 'the sub path, not the image root');
  assert.equal((await exec(id, ['ls', '/data'])).stdout, 'b\n');
  assert.match((await exec(id, ['touch', '/cfg/x'])).stderr, /Read-only file system/);
  await d.client.runtime('RemoveContainer', { container_id: id });
  await d.client.runtime('RemoveContainer', { container_id: id }); // waits for the background teardown
  assert.deepEqual(await hostMountsUnder(path.join(d.root, 'containers', id)), []);
  await removePod(pod.id);
});

test('bad image mounts are refused naming the field, and nothing is left behind', async () => {
  const pod = await newPod('refused');
  const containersDir = path.join(d.root, 'containers');
  const dirsBefore = (await fsp.readdir(containersDir)).sort();
  const mountsBefore = await hostMountsUnder(containersDir);
  const create = (mount: Record<string, any>) =>
    d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: containerConfig('bad', BUSYBOX, ['sleep', '3600'], { mounts: [mount] }), sandbox_config: pod.config });

  await expectCode(create(imageMount(VOL, whiteoutId, { image_sub_path: 'not-existing' })), grpc.status.INVALID_ARGUMENT, /mounts\[0\]\.image_sub_path "not-existing" does not exist in image/);
  await expectCode(create(imageMount(VOL, whiteoutId, { image_sub_path: 'etc/passwd' })), grpc.status.INVALID_ARGUMENT, /mounts\[0\]\.image_sub_path "etc\/passwd" is not a directory/);
  await expectCode(create(imageMount(VOL, whiteoutId, { image_sub_path: '../../../etc' })), grpc.status.INVALID_ARGUMENT, /mounts\[0\]\.image_sub_path .* must not contain "\.\."/);
  await expectCode(create(imageMount(VOL, whiteoutId, { readonly: false })), grpc.status.INVALID_ARGUMENT, /mounts\[0\]\.readonly/);
  await expectCode(create(imageMount(VOL, whiteoutId, { host_path: '/tmp' })), grpc.status.INVALID_ARGUMENT, /mounts\[0\]: host_path and image are mutually exclusive/);
  const unpulled = `${reg.plain}/nodelet-test/entrypoint:latest`;
  await expectCode(create(imageMount(VOL, unpulled)), grpc.status.NOT_FOUND, new RegExp(`mounts\\[0\\]\\.image: image ${unpulled.replace(/[.]/g, '\\.')} not found`));

  const listed = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: pod.id } });
  assert.equal(listed.containers.length, 0);
  assert.deepEqual((await fsp.readdir(containersDir)).sort(), dirsBefore, 'no container directory left');
  assert.deepEqual(await hostMountsUnder(containersDir), mountsBefore, 'no mount left');
  // The name was released: the same container with a good mount is created.
  const { container_id } = await create(imageMount(VOL, whiteoutId, { image_sub_path: 'opq' }));
  await d.client.runtime('RemoveContainer', { container_id });
  await removePod(pod.id);
});

test('after a daemon restart the volume still serves, is still in use, and removal unmounts it', async () => {
  const pod = await newPod('restart');
  const id = await runContainer(d.client, pod.id, pod.config, containerConfig('keeper', BUSYBOX, ['sleep', '3600'], { mounts: [imageMount(VOL, whiteoutId)] }));
  await d.kill();
  await d.restart();
  assert.equal((await exec(id, ['cat', `${VOL}/data/b`])).stdout, 'b\n');
  const { status } = await d.client.runtime('ContainerStatus', { container_id: id });
  assert.equal(status.mounts.find((m: any) => m.container_path === VOL)?.image.image_ref, whiteoutId);
  await expectCode(d.client.image('RemoveImage', { image: { image: whiteoutId } }), grpc.status.FAILED_PRECONDITION, /in use/);
  await removePod(pod.id);
  assert.deepEqual(await hostMountsUnder(path.join(d.root, 'containers', id)), [], 'nothing mounted after removal');
  assert.equal(await exists(path.join(d.root, 'containers', id)), false);
});

test('a creation cut short by a crash is undone at start-up, image volume mount included', async () => {
  const pod = await newPod('interrupted');
  const { container_id: id } = await d.client.runtime('CreateContainer', {
    pod_sandbox_id: pod.id,
    config: containerConfig('half', BUSYBOX, ['sleep', '3600'], { mounts: [imageMount(VOL, whiteoutId)] }),
    sandbox_config: pod.config,
  });
  const containerDir = path.join(d.root, 'containers', id);
  assert.equal((await hostMountsUnder(path.join(containerDir, 'image-volumes'))).length, 1);
  await d.kill();
  // What a crash between mounting and the final record write leaves: the record still says "creating".
  const recordFile = path.join(containerDir, 'container.json');
  const record = JSON.parse(await fsp.readFile(recordFile, 'utf8'));
  await fsp.writeFile(recordFile, JSON.stringify({ ...record, phase: 'creating' }));
  await d.restart();
  assert.deepEqual(await hostMountsUnder(containerDir), [], 'rootfs and image volume unmounted by recovery');
  assert.equal(await exists(containerDir), false);
  await expectCode(d.client.runtime('ContainerStatus', { container_id: id }), grpc.status.NOT_FOUND, new RegExp(id));
  // No longer in use: the image can be removed.
  await removePod(pod.id);
  await d.client.image('RemoveImage', { image: { image: whiteoutId } });
});
