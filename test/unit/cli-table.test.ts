// CLI formatting: tables, short ids, sizes, ages, repo:tag splitting, JSON of responses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ageOf, formatTable, humanDuration, humanSize, shortId, splitRepoTag, stateWord, toJson } from '../../src/cli/table.js';
import { imageRows } from '../../src/cli/commands/images.js';
import { podRows } from '../../src/cli/commands/pods.js';
import { containerRows, imageColumn } from '../../src/cli/commands/containers.js';

test('formatTable aligns columns with three spaces and leaves the last column unpadded', () => {
  const out = formatTable(['IMAGE', 'TAG', 'SIZE'], [
    ['docker.io/library/busybox', 'latest', '1.2MB'],
    ['a', 'v1.0.0-long', '800B'],
  ]);
  assert.equal(
    out,
    'IMAGE                       TAG           SIZE\n' +
      'docker.io/library/busybox   latest        1.2MB\n' +
      'a                           v1.0.0-long   800B\n',
  );
  assert.equal(formatTable(['A', 'B'], []), 'A   B\n');
  // Empty last cells do not leave trailing spaces.
  assert.equal(formatTable(['A', 'B'], [['x', '']]), 'A   B\nx\n');
});

test('shortId cuts to 13 characters after dropping sha256:, unless full', () => {
  const id = 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
  assert.equal(shortId(id), '0123456789abc');
  assert.equal(shortId(id, true), id);
  assert.equal(shortId('abcdef'), 'abcdef');
  assert.equal(shortId('f'.repeat(64)), 'f'.repeat(13));
});

test('humanSize uses decimal units and three significant digits', () => {
  const cases: [number, string][] = [
    [0, '0B'],
    [800, '800B'],
    [999, '999B'],
    [1000, '1kB'],
    [1234, '1.23kB'],
    [45_600, '45.6kB'],
    [1_234_567, '1.23MB'],
    [999_600, '1MB'],
    [2_500_000_000, '2.5GB'],
    [-1, '0B'],
  ];
  for (const [bytes, want] of cases) assert.equal(humanSize(bytes), want, `humanSize(${bytes})`);
});

test('humanDuration words, ageOf from nanoseconds', () => {
  const s = 1000;
  const m = 60 * s;
  const h = 60 * m;
  const d = 24 * h;
  const cases: [number, string][] = [
    [500, 'Less than a second'],
    [1 * s, '1 second'],
    [45 * s, '45 seconds'],
    [90 * s, 'About a minute'],
    [5 * m, '5 minutes'],
    [59 * m, '59 minutes'],
    [60 * m, 'About an hour'],
    [3 * h, '3 hours'],
    [47 * h, '47 hours'],
    [3 * d, '3 days'],
    [15 * d, '2 weeks'],
    [90 * d, '3 months'],
    [800 * d, '2 years'],
  ];
  for (const [ms, want] of cases) assert.equal(humanDuration(ms), want, `humanDuration(${ms})`);
  const now = Date.parse('2024-05-01T12:00:00Z');
  assert.equal(ageOf((now - 5 * m) * 1e6, now), '5 minutes ago');
  assert.equal(ageOf(String((now - 2 * s) * 1e6), now), '2 seconds ago');
  assert.equal(ageOf(0, now), 'Unknown');
  // A clock a little ahead of ours is not "negative".
  assert.equal(ageOf((now + 5 * s) * 1e6, now), 'Less than a second ago');
});

test('splitRepoTag takes the colon after the last slash', () => {
  assert.deepEqual(splitRepoTag('127.0.0.1:5000/nodelet-test/busybox:latest'), { repository: '127.0.0.1:5000/nodelet-test/busybox', tag: 'latest' });
  assert.deepEqual(splitRepoTag('127.0.0.1:5000/busybox'), { repository: '127.0.0.1:5000/busybox', tag: '<none>' });
  assert.deepEqual(splitRepoTag('busybox:1.36'), { repository: 'busybox', tag: '1.36' });
});

test('stateWord and toJson', () => {
  assert.equal(stateWord('CONTAINER_RUNNING'), 'Running');
  assert.equal(stateWord('SANDBOX_NOTREADY'), 'NotReady');
  assert.equal(stateWord(undefined), 'Unknown');
  assert.equal(toJson({ out: Buffer.from('hi\n'), n: 1 }), '{\n  "out": "hi\\n",\n  "n": 1\n}\n');
});

test('image rows: one per tag, digests when untagged, <none> otherwise', () => {
  const id = 'sha256:' + 'a'.repeat(64);
  const base = { id, size: 1_234_567, uid: null, username: '', spec: null, pinned: false } as const;
  const rows = imageRows(
    [
      { ...base, repo_tags: ['reg:5000/x/busybox:latest', 'reg:5000/x/busybox:1'], repo_digests: [] },
      { ...base, repo_tags: [], repo_digests: ['reg:5000/x/y@sha256:' + 'b'.repeat(64)] },
      { ...base, repo_tags: [], repo_digests: [] },
    ] as any,
    false,
  );
  assert.deepEqual(rows, [
    ['reg:5000/x/busybox', 'latest', 'aaaaaaaaaaaaa', '1.23MB'],
    ['reg:5000/x/busybox', '1', 'aaaaaaaaaaaaa', '1.23MB'],
    ['reg:5000/x/y', '<none>', 'aaaaaaaaaaaaa', '1.23MB'],
    ['<none>', '<none>', 'aaaaaaaaaaaaa', '1.23MB'],
  ]);
});

test('pod and container rows', () => {
  const now = Date.parse('2024-05-01T12:00:00Z');
  const created = (now - 5 * 60_000) * 1e6;
  const pods = podRows(
    [{ id: 'p'.repeat(64), created_at: created, state: 'SANDBOX_READY', metadata: { name: 'web', namespace: 'default', uid: 'u', attempt: 1 }, runtime_handler: '', labels: {}, annotations: {} }] as any,
    false,
    now,
  );
  assert.deepEqual(pods, [['ppppppppppppp', '5 minutes ago', 'Ready', 'web', 'default', '1', '(default)']]);
  const containers = containerRows(
    [{ id: 'c'.repeat(64), pod_sandbox_id: 'p'.repeat(64), image: { image: 'reg/busybox:latest' }, image_ref: 'sha256:x', created_at: created, state: 'CONTAINER_EXITED', metadata: { name: 'app', attempt: 0 }, labels: {}, annotations: {} }] as any,
    true,
    now,
  );
  assert.deepEqual(containers, [['c'.repeat(64), 'reg/busybox:latest', '5 minutes ago', 'Exited', 'app', '0', 'p'.repeat(64)]]);
  assert.equal(imageColumn('sha256:' + 'd'.repeat(64), false), 'ddddddddddddd');
});
