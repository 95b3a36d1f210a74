import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isKind } from '../../src/common/errors.js';
import {
  digestedName,
  formatReference,
  isDigest,
  parseReference,
  repositoryName,
  taggedName,
  type ImageReference,
} from '../../src/image/reference.js';

const D = 'sha256:' + 'a'.repeat(64);
const D512 = 'sha512:' + '0123456789abcdef'.repeat(8);

const valid: [string, ImageReference][] = [
  ['busybox', { domain: 'docker.io', path: 'library/busybox', tag: 'latest' }],
  ['busybox:1.36', { domain: 'docker.io', path: 'library/busybox', tag: '1.36' }],
  ['foo/bar', { domain: 'docker.io', path: 'foo/bar', tag: 'latest' }],
  ['foo/bar/baz:v1', { domain: 'docker.io', path: 'foo/bar/baz', tag: 'v1' }],
  ['docker.io/busybox', { domain: 'docker.io', path: 'library/busybox', tag: 'latest' }],
  ['docker.io/library/busybox:1', { domain: 'docker.io', path: 'library/busybox', tag: '1' }],
  ['index.docker.io/library/nginx', { domain: 'docker.io', path: 'library/nginx', tag: 'latest' }],
  ['localhost/x', { domain: 'localhost', path: 'x', tag: 'latest' }],
  ['localhost:5000/x', { domain: 'localhost:5000', path: 'x', tag: 'latest' }],
  ['127.0.0.1:5000/x:1', { domain: '127.0.0.1:5000', path: 'x', tag: '1' }],
  ['[::1]:5000/x:1', { domain: '[::1]:5000', path: 'x', tag: '1' }],
  ['registry.k8s.io/pause:3.9', { domain: 'registry.k8s.io', path: 'pause', tag: '3.9' }],
  ['quay.io/coreos/etcd:v3.5.9', { domain: 'quay.io', path: 'coreos/etcd', tag: 'v3.5.9' }],
  ['Registry.Example.COM/app', { domain: 'Registry.Example.COM', path: 'app', tag: 'latest' }],
  [`busybox@${D}`, { domain: 'docker.io', path: 'library/busybox', digest: D }],
  [`busybox:1.36@${D}`, { domain: 'docker.io', path: 'library/busybox', tag: '1.36', digest: D }],
  [`localhost:5000/a/b@${D512}`, { domain: 'localhost:5000', path: 'a/b', digest: D512 }],
  ['my-registry:5000/team/app_x:TAG_1.0-rc', { domain: 'my-registry:5000', path: 'team/app_x', tag: 'TAG_1.0-rc' }],
  ['a__b/c--d/e.f', { domain: 'docker.io', path: 'a__b/c--d/e.f', tag: 'latest' }],
  ['gcr.io/distroless/static:nonroot', { domain: 'gcr.io', path: 'distroless/static', tag: 'nonroot' }],
];

for (const [input, want] of valid) {
  test(`parseReference(${JSON.stringify(input)})`, () => {
    assert.deepEqual(parseReference(input), want);
  });
}

const invalid: [string, RegExp][] = [
  ['', /empty/],
  ['Busybox', /lowercase/],
  ['docker.io/Library/busybox', /lowercase/],
  ['foo/Bar:1', /lowercase/],
  ['busybox:', /invalid tag/],
  ['busybox:-bad', /invalid tag/],
  ['busybox:' + 'x'.repeat(129), /invalid tag/],
  ['busybox@sha256:abc', /64 hex/],
  ['busybox@sha256:' + 'A'.repeat(64), /lowercase hex/],
  ['busybox@md5:' + 'a'.repeat(32), /unsupported digest algorithm/],
  ['busybox@', /malformed digest/],
  ['busybox@sha256', /malformed digest/],
  ['a'.repeat(64), /image id/],
  ['foo//bar', /path component/],
  ['foo/bar/', /path component/],
  ['-foo', /path component/],
  ['foo_', /path component/],
  ['foo...bar', /path component/],
  ['localhost:5000/', /missing repository path/],
  [':tag', /missing repository name/],
  ['exa_mple.com/foo', /registry host/],
  ['-example.com/foo', /registry host/],
  [' busybox', /whitespace/],
  ['a/' + 'b'.repeat(260), /longer than 255/],
];

for (const [input, why] of invalid) {
  test(`parseReference rejects ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, () => {
    assert.throws(
      () => parseReference(input),
      (err: unknown) => {
        assert.ok(isKind(err, 'InvalidArgument'), `kind of ${String(err)}`);
        assert.match((err as Error).message, new RegExp(`^invalid image reference "`));
        assert.match((err as Error).message, why);
        return true;
      },
    );
  });
}

test('formatting helpers', () => {
  const tagged = parseReference('busybox:1.36');
  assert.equal(repositoryName(tagged), 'docker.io/library/busybox');
  assert.equal(formatReference(tagged), 'docker.io/library/busybox:1.36');
  assert.equal(taggedName(tagged), 'docker.io/library/busybox:1.36');
  assert.equal(digestedName(tagged, D), `docker.io/library/busybox@${D}`);

  const digested = parseReference(`localhost:5000/x@${D}`);
  assert.equal(taggedName(digested), undefined);
  assert.equal(formatReference(digested), `localhost:5000/x@${D}`);

  const both = parseReference(`registry.k8s.io/pause:3.9@${D}`);
  assert.equal(formatReference(both), `registry.k8s.io/pause:3.9@${D}`);
  // A canonical string parses back to itself.
  assert.deepEqual(parseReference(formatReference(both)), both);
});

test('isDigest', () => {
  assert.equal(isDigest(D), true);
  assert.equal(isDigest(D512), true);
  assert.equal(isDigest('sha256:' + 'a'.repeat(63)), false);
  assert.equal(isDigest('sha256:' + 'g'.repeat(64)), false);
  assert.equal(isDigest('a'.repeat(64)), false);
  assert.equal(isDigest(''), false);
});
