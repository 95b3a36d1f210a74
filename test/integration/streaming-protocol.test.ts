// The pure parts of the streaming protocols: tokens, Status messages, resize decoding, negotiation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenCache } from '../../src/streaming/tokens.js';
import { ResizeDecoder, exitStatus, exitText, headerList, negotiate, parseExitStatus, portPrefix } from '../../src/streaming/protocol.js';
import { parseHostPort } from '../../src/common/address.js';

test('tokens are random, single-use and expire', (t) => {
  // The cache reads Date.now(): a clock of our own makes the expiry exact instead of a race with a sleep.
  let now = 1_700_000_000_000;
  t.mock.method(Date, 'now', () => now);
  const cache = new TokenCache<string>(50);
  const a = cache.issue('a');
  const b = cache.issue('b');
  const c = cache.issue('c');
  assert.notEqual(a, b);
  assert.match(a, /^[A-Za-z0-9_-]{32}$/);
  assert.equal(cache.redeem(a), 'a');
  assert.equal(cache.redeem(a), undefined);
  assert.equal(cache.redeem('nope'), undefined);
  now += 50;
  assert.equal(cache.redeem(c), 'c', 'still valid at the end of its lifetime');
  now += 1;
  assert.equal(cache.redeem(b), undefined, 'expired 1 ms later');
  // Issuing sweeps the expired ones, and a fresh token lives its own lifetime.
  const d = cache.issue('d');
  now += 50;
  assert.equal(cache.redeem(d), 'd');
});

test('exit statuses are the metav1.Status kubectl decodes', () => {
  assert.deepEqual(JSON.parse(exitStatus({ exitCode: 0 })), { metadata: {}, status: 'Success' });
  const failure = JSON.parse(exitStatus({ exitCode: 7 }));
  assert.equal(failure.status, 'Failure');
  assert.equal(failure.reason, 'NonZeroExitCode');
  assert.deepEqual(failure.details.causes, [{ reason: 'ExitCode', message: '7' }]);
  assert.match(failure.message, /^command terminated with non-zero exit code: /);
  assert.equal(JSON.parse(exitStatus({ error: 'no such file' })).message, 'no such file');
  assert.equal(exitText({ exitCode: 0 }), '');
  assert.deepEqual(parseExitStatus(exitStatus({ exitCode: 7 })).exitCode, 7);
  assert.deepEqual(parseExitStatus(exitText({ exitCode: 9 })).exitCode, 9);
  assert.deepEqual(parseExitStatus('').exitCode, 0);
  assert.equal(parseExitStatus(exitStatus({ error: 'boom' })).exitCode, -1);
});

test('resize messages split across and within chunks', () => {
  const d = new ResizeDecoder();
  assert.deepEqual(d.push('{"Width":80,"Hei'), []);
  assert.deepEqual(d.push('ght":24}{"Width":100,"Height":50}'), [
    { width: 80, height: 24 },
    { width: 100, height: 50 },
  ]);
  assert.deepEqual(d.push('{"Width":-1,"Height":3}{bad}'), []);
});

test('negotiation follows the client order; headers and addresses parse', () => {
  assert.equal(negotiate(['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io'], ['v4.channel.k8s.io', 'v3.channel.k8s.io']), 'v4.channel.k8s.io');
  assert.equal(negotiate([], ['v4.channel.k8s.io']), '');
  assert.equal(negotiate(['v9'], ['v4.channel.k8s.io']), undefined);
  assert.deepEqual(headerList(['a, b', 'c']), ['a', 'b', 'c']);
  assert.deepEqual(parseHostPort('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseHostPort('[::1]:10010'), { host: '::1', port: 10010 });
  assert.deepEqual(parseHostPort(':10010'), { host: '', port: 10010 });
  assert.throws(() => parseHostPort('nohost'), /HOST:PORT/);
  assert.deepEqual([...portPrefix(8080)], [0x90, 0x1f]);
});
