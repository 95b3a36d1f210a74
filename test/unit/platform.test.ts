import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isKind } from '../../src/common/errors.js';
import { hostPlatform, normalizePlatform, selectManifest, type Descriptor, type Platform } from '../../src/image/platform.js';
import { MediaType, isIndex, isManifest, layerCompression } from '../../src/image/media-types.js';

let counter = 0;
function manifest(platform: Platform | undefined, annotations?: Record<string, string>): Descriptor {
  counter += 1;
  const desc: Descriptor = { mediaType: MediaType.ociManifest, digest: `sha256:${String(counter).padStart(64, '0')}`, size: 100 };
  if (platform) desc.platform = platform;
  if (annotations) desc.annotations = annotations;
  return desc;
}

const amd64 = manifest({ os: 'linux', architecture: 'amd64' });
const amd64v3 = manifest({ os: 'linux', architecture: 'amd64', variant: 'v3' });
const arm64 = manifest({ os: 'linux', architecture: 'arm64' });
const arm64v8 = manifest({ os: 'linux', architecture: 'arm64', variant: 'v8' });
const armv6 = manifest({ os: 'linux', architecture: 'arm', variant: 'v6' });
const armv7 = manifest({ os: 'linux', architecture: 'arm', variant: 'v7' });
const ppc = manifest({ os: 'linux', architecture: 'ppc64le' });
const windows = manifest({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1' });
const attestation = manifest(
  { os: 'unknown', architecture: 'unknown' },
  { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': amd64.digest },
);
const noPlatform = manifest(undefined);

const linux = (architecture: string, variant?: string): Platform => (variant ? { os: 'linux', architecture, variant } : { os: 'linux', architecture });

const cases: [string, Descriptor[], Platform, Descriptor][] = [
  ['amd64 among amd64/arm64/arm', [arm64v8, armv7, amd64, ppc], linux('amd64'), amd64],
  ['amd64 prefers no variant over v3', [amd64v3, amd64], linux('amd64'), amd64],
  ['amd64 v1 equals no variant', [arm64, amd64], linux('amd64', 'v1'), amd64],
  ['amd64 v3 host takes v3 first', [amd64, amd64v3], linux('amd64', 'v3'), amd64v3],
  ['amd64 v3 host runs plain amd64', [arm64, amd64], linux('amd64', 'v3'), amd64],
  ['arm64 v8 host: missing variant is v8', [amd64, arm64], linux('arm64', 'v8'), arm64],
  ['arm64 exact variant', [amd64, arm64v8, armv7], linux('arm64', 'v8'), arm64v8],
  ['arm64 host without variant', [armv7, arm64v8], linux('arm64'), arm64v8],
  ['arm v7 exact', [armv6, armv7, arm64], linux('arm', 'v7'), armv7],
  ['arm v7 host runs v6', [armv6, arm64, amd64], linux('arm', 'v7'), armv6],
  ['aarch64 alias', [amd64, arm64v8], { os: 'linux', architecture: 'aarch64' }, arm64v8],
  ['x86_64 alias', [arm64, amd64], { os: 'linux', architecture: 'x86_64' }, amd64],
  ['attestation skipped', [attestation, amd64], linux('amd64'), amd64],
  ['windows image not chosen for linux', [windows, amd64], linux('amd64'), amd64],
  ['first of equals wins', [amd64, manifest({ os: 'linux', architecture: 'amd64' })], linux('amd64'), amd64],
  ['platform-less manifest as last resort', [arm64, noPlatform], linux('amd64'), noPlatform],
  ['platform match beats platform-less', [noPlatform, amd64], linux('amd64'), amd64],
];

for (const [name, manifests, want, chosen] of cases) {
  test(`selectManifest: ${name}`, () => {
    assert.equal(selectManifest({ manifests }, want), chosen);
  });
}

test('selectManifest: nothing matching names wanted and available platforms', () => {
  assert.throws(
    () => selectManifest({ manifests: [arm64v8, armv7, attestation, windows] }, linux('amd64')),
    (err: unknown) => {
      assert.ok(isKind(err, 'NotFound'));
      const message = (err as Error).message;
      assert.match(message, /linux\/amd64/);
      assert.match(message, /available: linux\/arm64\/v8, linux\/arm\/v7, windows\/amd64/);
      assert.doesNotMatch(message, /unknown/);
      return true;
    },
  );
});

test('selectManifest: arm v6 host does not run v7', () => {
  assert.throws(() => selectManifest({ manifests: [armv7] }, linux('arm', 'v6')), /no manifest for platform linux\/arm\/v6/);
});

test('selectManifest: only attestations', () => {
  assert.throws(() => selectManifest({ manifests: [attestation] }, linux('amd64')), /available: none/);
});

test('hostPlatform maps node arch to OCI', () => {
  const host = hostPlatform();
  assert.equal(host.os, 'linux');
  const expected: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm' };
  if (expected[process.arch]) assert.equal(host.architecture, expected[process.arch]);
  if (process.arch === 'x64') {
    assert.equal(host.variant, undefined);
    assert.equal(selectManifest({ manifests: [arm64v8, armv7, amd64] }), amd64);
  }
});

test('normalizePlatform', () => {
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'armhf' }), linux('arm', 'v7'));
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm64', variant: '8' }), linux('arm64', 'v8'));
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'amd64' }), linux('amd64', 'v1'));
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 's390x' }), linux('s390x'));
});

test('media types', () => {
  assert.equal(isIndex(MediaType.ociIndex), true);
  assert.equal(isIndex(MediaType.dockerManifestList), true);
  assert.equal(isIndex(MediaType.ociManifest), false);
  assert.equal(isManifest(MediaType.dockerManifest), true);
  assert.equal(isManifest(MediaType.ociManifest), true);
  assert.equal(isManifest(MediaType.dockerSchema1SignedManifest), false);
  assert.equal(layerCompression(MediaType.ociLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaType.dockerLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaType.dockerLayerForeignGzip), 'gzip');
  assert.equal(layerCompression(MediaType.ociLayerZstd), 'zstd');
  assert.equal(layerCompression(MediaType.ociLayerNonDistributableZstd), 'zstd');
  assert.equal(layerCompression(MediaType.ociLayer), 'none');
  assert.equal(layerCompression(MediaType.dockerLayer), 'none');
  assert.throws(() => layerCompression('application/vnd.oci.image.layer.v1.tar+gzip+encrypted'), /unsupported layer media type/);
});
