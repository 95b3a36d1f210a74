// CRI log parsing (F/P joining, streams, timestamps, malformed lines) and reading a file that grows and rotates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LineSplitter, LogAssembler, parseCriLog, parseCriLogLine, readCriLog, renderRecord, type LogRecord } from '../../src/cli/log-reader.js';

const T1 = '2024-05-01T12:00:00.000000001Z';
const T2 = '2024-05-01T12:00:00.500000000+02:00';

test('parseCriLogLine reads time, stream, tag and text', () => {
  assert.deepEqual(parseCriLogLine(`${T1} stdout F hello world`), { time: T1, stream: 'stdout', partial: false, text: 'hello world' });
  assert.deepEqual(parseCriLogLine(`${T2} stderr P part `), { time: T2, stream: 'stderr', partial: true, text: 'part ' });
  // Empty text, with and without the separating space.
  assert.deepEqual(parseCriLogLine(`${T1} stdout F `), { time: T1, stream: 'stdout', partial: false, text: '' });
  assert.deepEqual(parseCriLogLine(`${T1} stdout F`), { time: T1, stream: 'stdout', partial: false, text: '' });
  // Text keeps its own spaces and tabs.
  assert.equal(parseCriLogLine(`${T1} stdout F   indented\tx`)?.text, '  indented\tx');
  // The older format without a tag: the line is whole.
  assert.deepEqual(parseCriLogLine(`${T1} stdout Fine day`), { time: T1, stream: 'stdout', partial: false, text: 'Fine day' });
});

test('parseCriLogLine rejects what is not a CRI log line', () => {
  for (const line of ['', 'hello', `${T1}`, `${T1} stdin F x`, `notatime stdout F x`, ` stdout F x`]) {
    assert.equal(parseCriLogLine(line), undefined, JSON.stringify(line));
  }
});

test('LogAssembler joins P fragments with the following F line, per stream', () => {
  const a = new LogAssembler();
  const out: (LogRecord | undefined)[] = [
    a.push(`${T1} stdout P Hel`),
    a.push(`${T2} stderr F oops`),
    a.push(`2024-05-01T12:00:01Z stdout P lo, `),
    a.push(`2024-05-01T12:00:02Z stdout F world`),
    a.push(`2024-05-01T12:00:03Z stdout F `),
  ];
  assert.deepEqual(out.filter(Boolean), [
    { time: T2, stream: 'stderr', text: 'oops', complete: true },
    { time: T1, stream: 'stdout', text: 'Hello, world', complete: true },
    { time: '2024-05-01T12:00:03Z', stream: 'stdout', text: '', complete: true },
  ]);
  assert.deepEqual(a.flush(), []);
});

test('parseCriLog skips malformed lines and keeps trailing fragments as incomplete', () => {
  const text = [
    `${T1} stdout F one`,
    'garbage without a time',
    `${T1} stdout`, // a stream but no tag: an empty whole line
    `${T1} stderr F two`,
    `${T1} stdout P tail-without-newline`,
  ].join('\n');
  const { records, malformed } = parseCriLog(text);
  assert.equal(malformed, 1);
  assert.deepEqual(
    records.map((r) => [r.stream, r.text, r.complete]),
    [
      ['stdout', 'one', true],
      ['stdout', '', true],
      ['stderr', 'two', true],
      ['stdout', 'tail-without-newline', false],
    ],
  );
});

test('renderRecord adds the time with --timestamps and no newline to unfinished fragments', () => {
  assert.equal(renderRecord({ time: T1, stream: 'stdout', text: 'x', complete: true }, false), 'x\n');
  assert.equal(renderRecord({ time: T1, stream: 'stdout', text: 'x', complete: true }, true), `${T1} x\n`);
  assert.equal(renderRecord({ time: T1, stream: 'stdout', text: 'x', complete: false }, false), 'x');
});

test('LineSplitter keeps a line split across chunks', () => {
  const s = new LineSplitter();
  assert.deepEqual(s.push('ab'), []);
  assert.deepEqual(s.push('c\nde'), ['abc']);
  assert.deepEqual(s.push('f\n\n'), ['def', '']);
  assert.deepEqual(s.end(), []);
  s.push('tail');
  assert.deepEqual(s.end(), ['tail']);
});

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cli-log-'));
  try {
    await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

const line = (stream: string, tag: string, text: string) => `${new Date().toISOString()} ${stream} ${tag} ${text}\n`;

test('readCriLog prints the last N records with tail', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, '0.log');
    await fsp.writeFile(file, [1, 2, 3, 4, 5].map((n) => line('stdout', 'F', `line ${n}`)).join('') + line('stdout', 'P', 'a') + line('stdout', 'F', 'b'));
    const got: string[] = [];
    await readCriLog(file, (r) => got.push(r.text), { follow: false, tail: 2 });
    assert.deepEqual(got, ['line 5', 'ab']);
    const all: string[] = [];
    await readCriLog(file, (r) => all.push(r.text), { follow: false });
    assert.equal(all.length, 6);
    const none: string[] = [];
    await readCriLog(file, (r) => none.push(r.text), { follow: false, tail: 0 });
    assert.deepEqual(none, []);
  });
});

test('readCriLog follows appends and a rotation, then stops when told', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, '0.log');
    await fsp.writeFile(file, line('stdout', 'F', 'first'));
    const got: string[] = [];
    let done = false;
    const reading = readCriLog(file, (r) => got.push(`${r.stream}:${r.text}`), { follow: true, pollIntervalMs: 20, shouldStop: async () => done });
    const waitFor = async (n: number) => {
      for (let i = 0; i < 200 && got.length < n; i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(got.length >= n, `want ${n} records, got ${JSON.stringify(got)}`);
    };
    await waitFor(1);
    await fsp.appendFile(file, line('stderr', 'P', 'sp') + line('stderr', 'F', 'lit'));
    await waitFor(2);
    // Rotate the way the runtime does: rename, then a new file at the same path.
    await fsp.appendFile(file, line('stdout', 'F', 'last of old'));
    await fsp.rename(file, `${file}.20240501-120000`);
    await fsp.writeFile(file, line('stdout', 'F', 'first of new'));
    await waitFor(4);
    await fsp.appendFile(file, line('stdout', 'F', 'written before the end'));
    done = true;
    await reading;
    assert.deepEqual(got, ['stdout:first', 'stderr:split', 'stdout:last of old', 'stdout:first of new', 'stdout:written before the end']);
  });
});
