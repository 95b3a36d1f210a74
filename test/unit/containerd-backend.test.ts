// The containerd backend's pure parts: CRI log records (line splitting, partial records, time format), the managed
// containerd's config, the runc shim options, signal names, containerd errors as nodelet errors, event decoding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { CriLogFile, splitLogRecords, formatLogTime, formatLogRecord } from '../../src/runtime/containerd/cri-log.js';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildContainerdConfig, containerdPaths } from '../../src/runtime/containerd/managed-containerd.js';
import { commandNotRunnable, runcShimOptions, signalNumber } from '../../src/runtime/containerd/containerd-runtime.js';
import { decodeEvent, jsonAny, timestampToDate, toNodeletError } from '../../src/runtime/containerd/client.js';
import { specCgroupsPath } from '../../src/runtime/containerd/connection.js';

const b = (s: string) => Buffer.from(s);

test('splitLogRecords: full lines, a pending tail, lines past the bound cut into partial records', () => {
  const cases: Array<{ pending: string; chunk: string; max: number; records: Array<[string, boolean]>; rest: string }> = [
    { pending: '', chunk: 'a\nb\n', max: 10, records: [['a', false], ['b', false]], rest: '' },
    { pending: '', chunk: 'a\nbc', max: 10, records: [['a', false]], rest: 'bc' },
    { pending: 'bc', chunk: 'd\n', max: 10, records: [['bcd', false]], rest: '' },
    { pending: '', chunk: '\n\n', max: 10, records: [['', false], ['', false]], rest: '' },
    { pending: '', chunk: 'abcdefgh\n', max: 3, records: [['abc', true], ['def', true], ['gh', false]], rest: '' },
    { pending: '', chunk: 'abc\n', max: 3, records: [['abc', false]], rest: '' },
    { pending: '', chunk: 'abcdefg', max: 3, records: [['abc', true], ['def', true]], rest: 'g' },
  ];
  for (const c of cases) {
    const { records, rest } = splitLogRecords(b(c.pending), b(c.chunk), c.max);
    assert.deepEqual(records.map((r) => [r.text.toString(), r.partial]), c.records, JSON.stringify(c));
    assert.equal(rest.toString(), c.rest, JSON.stringify(c));
  }
});

test('formatLogTime: RFC3339Nano in UTC, trailing zeros of the fraction dropped as Go does', () => {
  const ms = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
  assert.equal(formatLogTime(ms, 123456), '2026-01-02T03:04:05.678123456Z');
  assert.equal(formatLogTime(ms, 0), '2026-01-02T03:04:05.678Z');
  assert.equal(formatLogTime(Date.UTC(2026, 0, 2, 3, 4, 5, 0), 0), '2026-01-02T03:04:05Z');
  assert.equal(formatLogTime(Date.UTC(2026, 0, 2, 3, 4, 5, 10), 500), '2026-01-02T03:04:05.0100005Z');
  assert.equal(formatLogRecord('T', 'stderr', { text: b('x y'), partial: true }).toString(), 'T stderr P x y\n');
  assert.equal(formatLogRecord('T', 'stdout', { text: b(''), partial: false }).toString(), 'T stdout F \n');
});

test('the managed containerd: CRI plugin off, root under nodelet root, state and socket under its run root', () => {
  const paths = containerdPaths({ root: '/var/lib/nodelet', runRoot: '/run/nodelet' });
  assert.deepEqual(paths, {
    root: '/var/lib/nodelet/containerd',
    state: '/run/nodelet/containerd/state',
    socket: '/run/nodelet/containerd/containerd.sock',
    config: '/run/nodelet/containerd/config.toml',
    pidFile: '/run/nodelet/containerd/containerd.pid',
    logFile: '/var/lib/nodelet/containerd/containerd.log',
  });
  const toml = buildContainerdConfig(paths);
  assert.match(toml, /^version = 2$/m);
  assert.match(toml, /^root = "\/var\/lib\/nodelet\/containerd"$/m);
  assert.match(toml, /^state = "\/run\/nodelet\/containerd\/state"$/m);
  assert.match(toml, /^disabled_plugins = \[.*"io\.containerd\.grpc\.v1\.cri".*\]$/m);
  assert.match(toml, /^\[grpc\]\n {2}address = "\/run\/nodelet\/containerd\/containerd\.sock"$/m);
});

test('runc shim options: none by default; systemd_cgroup (9) and binary_name (6) encoded as containerd.runc.v1.Options', () => {
  assert.equal(runcShimOptions({ systemdCgroup: false }), undefined);
  const any = runcShimOptions({ systemdCgroup: true, binaryName: 'crun' })!;
  assert.equal(any.type_url, 'containerd.runc.v1.Options');
  const Options = new protobuf.Type('Options').add(new protobuf.Field('binary_name', 6, 'string')).add(new protobuf.Field('systemd_cgroup', 9, 'bool'));
  assert.deepEqual(Options.toObject(Options.decode(any.value)), { binary_name: 'crun', systemd_cgroup: true });
});

test('signal names and numbers; an unknown one is an invalid argument', () => {
  for (const [given, want] of [['SIGTERM', 15], ['TERM', 15], ['sigkill', 9], ['9', 9], [2, 2], ['SIGRTMIN', undefined]] as const) {
    if (want === undefined) assert.throws(() => signalNumber(given), { kind: 'InvalidArgument' });
    else assert.equal(signalNumber(given), want);
  }
});

test('a command that cannot be run: exit 127 (not found) or 126 (not executable), from the shim\'s message', () => {
  const notFound = 'OCI runtime exec failed: exec failed: unable to start container process: exec: "nope": executable file not found in $PATH: unknown';
  assert.equal(commandNotRunnable(notFound)?.exitCode, 127);
  assert.equal(commandNotRunnable('exec: "/etc": is a directory: unknown')?.exitCode, 126);
  assert.equal(commandNotRunnable('exec: "/x": permission denied')?.exitCode, 126);
  assert.equal(commandNotRunnable('context deadline exceeded'), undefined);
});

test('containerd status codes become nodelet errors naming the call', () => {
  const cases: Array<[grpc.status, string]> = [
    [grpc.status.NOT_FOUND, 'NotFound'],
    [grpc.status.ALREADY_EXISTS, 'AlreadyExists'],
    [grpc.status.FAILED_PRECONDITION, 'FailedPrecondition'],
    [grpc.status.INVALID_ARGUMENT, 'InvalidArgument'],
    [grpc.status.UNAVAILABLE, 'Unavailable'],
    [grpc.status.DEADLINE_EXCEEDED, 'DeadlineExceeded'],
    [grpc.status.UNKNOWN, 'Internal'],
  ];
  for (const [code, kind] of cases) {
    const err = toNodeletError('Tasks.Get', Object.assign(new Error('x'), { code, details: 'task abc: not found' }));
    assert.equal(err.kind, kind);
    assert.equal(err.message, 'containerd Tasks.Get: task abc: not found');
  }
});

test('events: TaskExit decoded from its Any; unknown types ignored; timestamps; JSON Anys; cgroupsPath from a spec', () => {
  const root = new protobuf.Root();
  const TaskExit = new protobuf.Type('TaskExit')
    .add(new protobuf.Field('container_id', 1, 'string'))
    .add(new protobuf.Field('id', 2, 'string'))
    .add(new protobuf.Field('pid', 3, 'uint32'))
    .add(new protobuf.Field('exit_status', 4, 'uint32'));
  root.define('containerd.events').add(TaskExit);
  const value = Buffer.from(TaskExit.encode(TaskExit.create({ container_id: 'c1', id: 'c1', pid: 42, exit_status: 137 })).finish());
  const decoded = decodeEvent<{ container_id: string; exit_status: number; pid: number }>({ type_url: 'containerd.events.TaskExit', value });
  assert.equal(decoded?.type, 'containerd.events.TaskExit');
  assert.equal(decoded?.event.container_id, 'c1');
  assert.equal(decoded?.event.exit_status, 137);
  assert.equal(decoded?.event.pid, 42);
  assert.equal(decodeEvent({ type_url: 'containerd.events.NoSuch', value }), undefined);
  assert.equal(decodeEvent(null), undefined);
  assert.equal(timestampToDate({ seconds: 1700000000, nanos: 5_000_000 })?.getTime(), 1700000000005);
  assert.equal(timestampToDate({ seconds: 0, nanos: 0 }), undefined);
  const any = jsonAny('types.containerd.io/opencontainers/runtime-spec/1/Spec', { linux: { cgroupsPath: '/kubepods/pod1/c1' } });
  assert.equal(specCgroupsPath(any.value), '/kubepods/pod1/c1');
  assert.equal(specCgroupsPath(Buffer.from('not json')), undefined);
});

test('CriLogFile: closed mid-line (nodelet stops), the line stays open as a partial record; the stream ending closes it', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-crilog-'));
  try {
    const logPath = path.join(dir, 'c.log');
    const first = new CriLogFile(logPath);
    await first.open();
    first.write('stdout', b('one\ntw'));
    await first.close();
    const second = new CriLogFile(logPath); // the next nodelet, reading on from the same FIFO
    await second.open();
    second.write('stdout', b('o\nthr'));
    second.end('stdout');
    await second.close();
    const records = (await fsp.readFile(logPath, 'utf8')).trim().split('\n').map((l) => l.split(' ').slice(1).join(' '));
    assert.deepEqual(records, ['stdout F one', 'stdout P tw', 'stdout F o', 'stdout F thr']);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
