import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Mount__Output } from '../../src/cri/generated/runtime/v1/Mount.js';
import { isKind } from '../../src/common/errors.js';
import {
  imageVolumeRequests,
  mountsWithImageSources,
  reportedMounts,
  resolveInRoot,
  type ImageVolume,
} from '../../src/runtime/image-volumes.js';

function mount(over: Partial<Mount__Output>): Mount__Output {
  return {
    container_path: '/vol',
    host_path: '',
    readonly: false,
    selinux_relabel: false,
    propagation: 'PROPAGATION_PRIVATE',
    uidMappings: [],
    gidMappings: [],
    recursive_read_only: false,
    image: null,
    image_sub_path: '',
    ...over,
  };
}

const imageSpec = (image: string) => ({ image, annotations: {}, user_specified_image: '', runtime_handler: '', image_ref: '' });
const imageMount = (over: Partial<Mount__Output> = {}) => mount({ image: imageSpec('reg/app:1'), readonly: true, ...over });

test('imageVolumeRequests: accepted image mounts, in order, with their index', () => {
  const mounts = [mount({ host_path: '/data', container_path: '/data' }), imageMount(), imageMount({ container_path: '/cfg', image_sub_path: 'etc/app' })];
  assert.deepEqual(imageVolumeRequests(mounts), [
    { index: 1, image: 'reg/app:1', subPath: '' },
    { index: 2, image: 'reg/app:1', subPath: 'etc/app' },
  ]);
  // An empty ImageSpec next to a host path is a host mount.
  assert.deepEqual(imageVolumeRequests([mount({ host_path: '/x', image: imageSpec('') })]), []);
});

test('imageVolumeRequests: refusals name the field', () => {
  const cases: Array<[string, Mount__Output, RegExp]> = [
    ['host path and image', imageMount({ host_path: '/data' }), /^mounts\[0\]: host_path and image are mutually exclusive/],
    ['writable', imageMount({ readonly: false }), /^mounts\[0\]\.readonly: .*readonly must be true/],
    ['recursive read-only', imageMount({ recursive_read_only: true }), /^mounts\[0\]\.recursive_read_only/],
    ['absolute sub path', imageMount({ image_sub_path: '/etc' }), /^mounts\[0\]\.image_sub_path "\/etc" must be a path relative/],
    ['escaping sub path', imageMount({ image_sub_path: 'etc/../../host' }), /^mounts\[0\]\.image_sub_path "etc\/..\/..\/host" must not contain "\.\."/],
    ['leading dot-dot', imageMount({ image_sub_path: '..' }), /must not contain "\.\."/],
  ];
  for (const [name, m, message] of cases) {
    assert.throws(
      () => imageVolumeRequests([m]),
      (err: unknown) => isKind(err, 'InvalidArgument') && message.test((err as Error).message),
      name,
    );
  }
});

const volume = (over: Partial<ImageVolume>): ImageVolume => ({
  index: 1,
  image: 'reg/app:1',
  imageId: 'sha256:' + 'a'.repeat(64),
  subPath: '',
  mountPoint: '/var/lib/nodelet/containers/c1/image-volumes/1',
  ...over,
});

test('mountsWithImageSources: image mounts become read-only binds of their source; host mounts pass through', () => {
  const host = mount({ host_path: '/data', container_path: '/data' });
  const out = mountsWithImageSources([host, imageMount({ image_sub_path: 'etc' })], [volume({ source: '/mp/1/etc' })]);
  assert.equal(out[0], host);
  assert.deepEqual(out[1], { ...imageMount(), host_path: '/mp/1/etc', image: null, image_sub_path: '', readonly: true });
  assert.throws(() => mountsWithImageSources([host, imageMount()], [volume({})]), /no resolved source/);
});

test('reportedMounts: image mounts carry the resolved image id as image_ref', () => {
  const host = mount({ host_path: '/data' });
  const out = reportedMounts([host, imageMount()], [volume({})]);
  assert.equal(out[0], host);
  assert.equal(out[1]!.image!.image, 'reg/app:1');
  assert.equal(out[1]!.image!.image_ref, 'sha256:' + 'a'.repeat(64));
  assert.equal(out[1]!.host_path, '');
  assert.deepEqual(reportedMounts([host], undefined), [host]);
});

// resolveInRoot on a real tree: <root> is the image, <outside> stands for the host.
let base: string;
let root: string;
let outside: string;

before(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-subpath-'));
  root = path.join(base, 'image');
  outside = path.join(base, 'host');
  await fsp.mkdir(path.join(root, 'etc', 'app'), { recursive: true });
  await fsp.mkdir(path.join(root, 'usr', 'share'), { recursive: true });
  await fsp.mkdir(path.join(outside, 'secret'), { recursive: true });
  await fsp.writeFile(path.join(root, 'etc', 'passwd'), 'root:x:0:0::/:/bin/sh\n');
  await fsp.symlink('/usr/share', path.join(root, 'abs-link'));
  await fsp.symlink('../usr', path.join(root, 'etc', 'rel-link'));
  await fsp.symlink('../../../../host/secret', path.join(root, 'etc', 'escape'));
  await fsp.symlink(outside, path.join(root, 'host-abs'));
  await fsp.symlink('loop-b', path.join(root, 'loop-a'));
  await fsp.symlink('loop-a', path.join(root, 'loop-b'));
  await fsp.symlink('passwd', path.join(root, 'etc', 'file-link'));
});

after(async () => {
  if (base) await fsp.rm(base, { recursive: true, force: true });
});

test('resolveInRoot: plain, nested and symlinked directories resolve inside the root', async () => {
  assert.equal(await resolveInRoot(root, 'etc'), path.join(root, 'etc'));
  assert.equal(await resolveInRoot(root, 'etc/app/'), path.join(root, 'etc', 'app'));
  assert.equal(await resolveInRoot(root, './etc//app'), path.join(root, 'etc', 'app'));
  assert.equal(await resolveInRoot(root, ''), root);
  // An absolute link means the image's /usr/share, not the host's.
  assert.equal(await resolveInRoot(root, 'abs-link'), path.join(root, 'usr', 'share'));
  assert.equal(await resolveInRoot(root, 'etc/rel-link/share'), path.join(root, 'usr', 'share'));
});

test('resolveInRoot: symlinks cannot leave the root', async () => {
  // "../" past the root stays at the root, so the host's secret dir is never reached.
  await assert.rejects(resolveInRoot(root, 'etc/escape'), (err: Error) => isKind(err, 'InvalidArgument') && /does not exist in the image \(no \/host\)/.test(err.message));
  // An absolute link to a host path is looked up inside the image.
  await assert.rejects(resolveInRoot(root, 'host-abs'), (err: Error) => isKind(err, 'InvalidArgument') && /does not exist/.test(err.message));
});

test('resolveInRoot: missing, non-directory and looping sub paths are refused with the field named', async () => {
  const field = 'mounts[2].image_sub_path';
  await assert.rejects(resolveInRoot(root, 'nope/deeper', field, 'image reg/app:1'), (err: Error) => isKind(err, 'InvalidArgument') && err.message === `${field} "nope/deeper" does not exist in image reg/app:1 (no /nope)`);
  await assert.rejects(resolveInRoot(root, 'etc/passwd', field), (err: Error) => isKind(err, 'InvalidArgument') && /is not a directory/.test(err.message));
  await assert.rejects(resolveInRoot(root, 'etc/file-link', field), (err: Error) => isKind(err, 'InvalidArgument') && /is not a directory/.test(err.message));
  await assert.rejects(resolveInRoot(root, 'etc/passwd/x', field), (err: Error) => isKind(err, 'InvalidArgument') && /is not a directory/.test(err.message));
  await assert.rejects(resolveInRoot(root, 'loop-a', field), (err: Error) => isKind(err, 'InvalidArgument') && /too many levels of symbolic links/.test(err.message));
});
