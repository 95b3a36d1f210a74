// The containerd backend against a real containerd 1.6 (Debian's, started by the backend itself on a temp root and
// run root) and its runc shim: tasks on an overlay rootfs mount, CRI log lines through the FIFOs, exits from the
// events, stop/kill, exec and execSync, attach, resource updates, and the log continuing without a lost line across
// a restart of the backend (containerd stopped and started again under running tasks). Nothing is left behind.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '../../src/common/exec.js';
import { ContainerdConnection } from '../../src/runtime/containerd/connection.js';
import { ContainerdRuntime } from '../../src/runtime/containerd/containerd-runtime.js';
import type { OciSpec } from '../../src/oci/types.js';
import { findProcesses } from '../../scripts/bench/procs.js';
import { waitFor } from '../helpers/wait.js';

const tag = randomBytes(4).toString('hex');
const NAMESPACE = `nodelet-test-${tag}`;
const APPLETS = ['sh', 'echo', 'sleep', 'cat', 'printf', 'seq', 'head', 'tr', 'env', 'true', 'yes'];

let base: string;
let runRoot: string;
let lower: string;
let conn: ContainerdConnection;
let backend: ContainerdRuntime;
const created = new Set<string>();

function newId(name: string): string {
  const id = `t${tag}-${name}`;
  created.add(id);
  return id;
}

function spec(id: string, args: string[], opts: { tty?: boolean; env?: string[] } = {}): OciSpec {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: opts.tty ?? false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin', ...(opts.env ?? [])],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: '/nonexistent-replaced-by-the-backend', readonly: false },
    hostname: 'ctd',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      cgroupsPath: `/nodelet-ctd-test/${id}`,
      maskedPaths: [],
      readonlyPaths: [],
    },
  } as unknown as OciSpec;
}

/** An overlay rootfs over the shared busybox lower dir, as nodelet's image store computes it. */
async function overlayMounts(id: string) {
  const dir = path.join(base, 'layers', id);
  await fsp.mkdir(path.join(dir, 'upper'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'work'), { recursive: true });
  return [{ destination: '/', type: 'overlay', source: 'overlay', options: [`lowerdir=${lower}`, `upperdir=${dir}/upper`, `workdir=${dir}/work`] }];
}

async function createAndStart(id: string, args: string[], opts: { tty?: boolean; stdin?: boolean; stdinOnce?: boolean } = {}) {
  const logPath = path.join(base, 'logs', `${id}.log`);
  const res = await backend.create({
    id,
    spec: spec(id, args, opts),
    rootfsMounts: await overlayMounts(id),
    logPath,
    tty: opts.tty ?? false,
    stdin: opts.stdin ?? false,
    stdinOnce: opts.stdinOnce ?? false,
  });
  await backend.start(id);
  return { ...res, logPath };
}

async function readLog(file: string): Promise<string> {
  return fsp.readFile(file, 'utf8').catch(() => '');
}

function logTexts(log: string): Array<{ stream: string; tag: string; text: string }> {
  return log
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = /^(\S+) (stdout|stderr) ([PF]) (.*)$/.exec(line);
      assert.ok(m, `a CRI log line: ${line}`);
      assert.ok(!Number.isNaN(Date.parse(m[1]!)), `an RFC3339 time: ${m[1]}`);
      return { stream: m[2]!, tag: m[3]!, text: m[4]! };
    });
}

/** Log records as lines: each partial (P) record joined to the records that follow, up to a full (F) one. */
function joinPartials(records: Array<{ stream: string; tag: string; text: string }>): Array<{ stream: string; text: string }> {
  const lines: Array<{ stream: string; text: string }> = [];
  let pending = '';
  for (const r of records) {
    if (r.tag === 'P') pending += r.text;
    else {
      lines.push({ stream: r.stream, text: pending + r.text });
      pending = '';
    }
  }
  return lines;
}

async function ctr(args: string[]): Promise<string> {
  const res = await run('ctr', ['--address', conn.address, '-n', NAMESPACE, ...args], { timeoutMs: 20_000 });
  return res.stdout;
}

function newConnection(): ContainerdConnection {
  return new ContainerdConnection({ namespace: NAMESPACE, root: path.join(base, 'root'), runRoot });
}

describe('containerd backend (containerd 1.6 + runc shim)', { concurrency: false }, () => {
  before(async () => {
    base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nlctd-'));
    // containerd's socket path must fit 108 bytes: a short run root.
    runRoot = path.join('/run', `nlctd-${tag}`);
    lower = path.join(base, 'lower');
    await fsp.mkdir(path.join(lower, 'bin'), { recursive: true });
    for (const dir of ['proc', 'dev', 'sys', 'tmp', 'etc']) await fsp.mkdir(path.join(lower, dir));
    await fsp.copyFile('/bin/busybox', path.join(lower, 'bin', 'busybox'));
    for (const applet of APPLETS) await fsp.symlink('busybox', path.join(lower, 'bin', applet));
    conn = newConnection();
    backend = new ContainerdRuntime({ runtimeType: 'io.containerd.runc.v2', connection: conn });
    assert.equal(await backend.check(), undefined);
  });

  after(async () => {
    for (const id of created) await backend.delete(id).catch(() => undefined);
    let leftContainers = '';
    let leftTasks = '';
    if (conn.address) {
      leftContainers = (await ctr(['containers', 'ls', '-q']).catch((e: unknown) => String(e))).trim();
      leftTasks = (await ctr(['tasks', 'ls', '-q']).catch((e: unknown) => String(e))).trim();
    }
    const socket = conn.address;
    await conn.close();
    // Shims of a test that failed half-way hold our socket in their args.
    for (const p of await findProcesses((args) => args[0]?.includes('containerd-shim') === true && args.includes(socket))) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    const mounts = (await fsp.readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(base) || m.startsWith(runRoot));
    for (const m of mounts.reverse()) await run('umount', ['-l', m], { reject: false });
    await fsp.rm(runRoot, { recursive: true, force: true });
    await fsp.rm(base, { recursive: true, force: true });
    // The parent cgroup of the test's containers, in every hierarchy (v1 controllers or v2).
    for (const hierarchy of ['', ...(await fsp.readdir('/sys/fs/cgroup').catch(() => [] as string[]))]) {
      await fsp.rmdir(path.join('/sys/fs/cgroup', hierarchy, 'nodelet-ctd-test')).catch(() => undefined);
    }
    assert.equal(leftContainers, '', 'no container left in our containerd namespace');
    assert.equal(leftTasks, '', 'no task left in our containerd namespace');
    assert.deepEqual(mounts, [], 'no mount left under our dirs');
  });

  test('create → created, start → running, CRI log lines of both streams, exit from the events, delete removes all', async () => {
    const id = newId('life');
    const logPath = path.join(base, 'logs', `${id}.log`);
    const { pid } = await backend.create({
      id,
      spec: spec(id, ['sh', '-c', 'echo hello; echo oops >&2; printf tail; exit 3']),
      rootfsMounts: await overlayMounts(id),
      logPath,
      tty: false,
      stdin: false,
      stdinOnce: false,
    });
    assert.ok(pid > 0);
    assert.equal((await backend.state(id))?.status, 'created');
    assert.equal(await backend.exitOf(id), undefined);
    const exits = new AbortController();
    const seen: number[] = [];
    const listening = (async () => {
      for await (const e of backend.exits(exits.signal)) {
        if (e.id === id) {
          seen.push(e.exitCode);
          exits.abort();
        }
      }
    })();
    await backend.start(id);
    // Nobody polls exitOf meanwhile: the exit can only come from containerd's /tasks/exit event.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([listening, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no exit event within 10 s')), 10_000)))]);
    clearTimeout(timer);
    assert.deepEqual(seen, [3], 'the exit came on the events stream');
    const exit = await backend.exitOf(id);
    assert.equal(exit?.exitCode, 3);
    assert.equal((await backend.state(id))?.status, 'stopped');
    const lines = await waitFor('three log records', async () => {
      const l = logTexts(await readLog(logPath));
      return l.length >= 3 && l;
    });
    assert.deepEqual(
      lines.map((l) => `${l.stream} ${l.tag} ${l.text}`).sort(),
      ['stderr F oops', 'stdout F hello', 'stdout F tail'],
    );
    await backend.delete(id);
    await backend.delete(id);
    assert.equal(await backend.state(id), undefined);
    assert.equal(await fsp.stat(conn.ioDir(id)).catch(() => undefined), undefined, 'FIFO dir removed');
    assert.equal((await ctr(['containers', 'ls', '-q'])).includes(id), false);
  });

  test('a line longer than the bound is cut into partial records; the pieces join to the line', async () => {
    const id = newId('long');
    const { logPath } = await createAndStart(id, ['sh', '-c', 'head -c 40000 /dev/zero | tr "\\0" x; echo; echo short']);
    await waitFor('exit', () => backend.exitOf(id));
    const lines = await waitFor('records', async () => {
      const l = logTexts(await readLog(logPath));
      return l.some((r) => r.text === 'short') && l;
    });
    const first = lines.filter((l) => l.text !== 'short');
    assert.deepEqual(first.map((l) => l.tag), ['P', 'P', 'F']);
    assert.equal(first.map((l) => l.text).join(''), 'x'.repeat(40000));
    await backend.delete(id);
  });

  test('stop: SIGTERM, then SIGKILL when the grace period passes; stop of a stopped container does nothing', async () => {
    const id = newId('stop');
    await createAndStart(id, ['sh', '-c', 'trap "" TERM; echo ready; while true; do sleep 1; done']);
    await waitFor('running', async () => (await backend.state(id))?.status === 'running');
    const t0 = Date.now();
    await backend.stop(id, 1);
    const took = Date.now() - t0;
    const exit = await backend.exitOf(id);
    assert.equal(exit?.exitCode, 137);
    assert.ok(took >= 900 && took < 10_000, `stop took ${took} ms`);
    await backend.stop(id, 10);
    await backend.kill(id, 'SIGKILL');
    await backend.delete(id);
    await assert.rejects(backend.stop(id, 1), { kind: 'NotFound' });
  });

  test('execSync: output, exit code, env, a missing command, a timeout', async () => {
    const id = newId('exec');
    await createAndStart(id, ['sleep', '1000']);
    const ok = await backend.execSync(id, ['sh', '-c', 'echo out; echo err >&2; echo $FOO; exit 7'], { timeoutSec: 10, env: ['FOO=bar'] });
    assert.equal(ok.stdout.toString(), 'out\nbar\n');
    assert.equal(ok.stderr.toString(), 'err\n');
    assert.equal(ok.exitCode, 7);
    assert.equal(ok.timedOut, false);
    const missing = await backend.execSync(id, ['no-such-command'], { timeoutSec: 10 });
    assert.equal(missing.exitCode, 127);
    const t0 = Date.now();
    const slow = await backend.execSync(id, ['sleep', '30'], { timeoutSec: 1 });
    assert.equal(slow.timedOut, true);
    assert.ok(Date.now() - t0 < 10_000);
    await backend.stop(id, 0);
    await backend.delete(id);
  });

  test('exec with stdin (streamed) and on a terminal (resized)', async () => {
    const id = newId('stream');
    await createAndStart(id, ['sleep', '1000']);
    const session = await backend.exec(id, { process: { args: ['cat'] }, tty: false, stdin: true });
    const out: Buffer[] = [];
    session.stdout.on('data', (c: Buffer) => out.push(c));
    session.stdin.write('ping\n');
    session.stdin.end();
    assert.equal(await session.exited, 0);
    assert.equal(Buffer.concat(out).toString(), 'ping\n');
    await session.close();

    const tty = await backend.exec(id, { process: { args: ['sh', '-c', 'sleep 0.5; stty size'] }, tty: true, stdin: false, width: 100, height: 30 });
    const ttyOut: Buffer[] = [];
    tty.stdout.on('data', (c: Buffer) => ttyOut.push(c));
    await tty.resize(120, 40);
    assert.equal(await tty.exited, 0);
    assert.match(Buffer.concat(ttyOut).toString(), /40 120/);
    await tty.close();
    await backend.stop(id, 0);
    await backend.delete(id);
  });

  test('attach: output from now on; stdin reaches the container; stdinOnce closes it on detach', async () => {
    const id = newId('attach');
    const { logPath } = await createAndStart(id, ['sh', '-c', 'while read l; do echo "got $l"; done; echo bye'], { stdin: true, stdinOnce: true });
    const session = await backend.attach(id);
    const out: Buffer[] = [];
    session.stdout.on('data', (c: Buffer) => out.push(c));
    session.stdin.write('one\n');
    await waitFor('echo', () => Buffer.concat(out).toString().includes('got one'));
    session.stdin.end();
    await waitFor('exit after stdin closed', () => backend.exitOf(id));
    await session.closed;
    assert.match(Buffer.concat(out).toString(), /got one\nbye\n/);
    assert.match(await readLog(logPath), /stdout F got one/);
    await backend.delete(id);
  });

  test('updateResources reaches the cgroup; reopenLog starts a new file', async () => {
    const id = newId('update');
    const { logPath } = await createAndStart(id, ['sh', '-c', 'while true; do echo tick; sleep 0.2; done']);
    await backend.updateResources(id, { memory: { limit: 64 * 1024 * 1024 } } as never);
    const cg = path.join('/sys/fs/cgroup', backend.cgroupOf(id, '/nodelet-ctd-test'));
    const max = await fsp.readFile(path.join(cg, 'memory.max'), 'utf8').catch(async () => fsp.readFile(path.join('/sys/fs/cgroup/memory', backend.cgroupOf(id, '/nodelet-ctd-test'), 'memory.limit_in_bytes'), 'utf8'));
    assert.equal(max.trim(), String(64 * 1024 * 1024));
    await waitFor('ticks', async () => (await readLog(logPath)).includes('tick'));
    await fsp.rename(logPath, `${logPath}.1`);
    await backend.reopenLog(id);
    await waitFor('ticks in the new file', async () => (await readLog(logPath)).includes('tick'));
    await backend.stop(id, 0);
    await backend.delete(id);
  });

  test('a restart of the backend (containerd stopped and started again): tasks run on, no log line is lost, exits seen', async () => {
    const id = newId('restart');
    const { logPath } = await createAndStart(id, ['sh', '-c', 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo line $i; done; sleep 1000']);
    const quick = newId('quick');
    await createAndStart(quick, ['sh', '-c', 'sleep 2; exit 5']);
    await waitFor('some lines', async () => (await readLog(logPath)).includes('line 100\n'));
    const taskPid = (await backend.state(id))!.pid;
    // The daemon goes away: our FIFO ends close, containerd stops; the shims and tasks stay.
    await conn.close();
    await new Promise((r) => setTimeout(r, 3000));
    assert.ok(await fsp.stat(`/proc/${taskPid}`).then(() => true, () => false), 'the task outlived the daemon');
    conn = newConnection();
    backend = new ContainerdRuntime({ runtimeType: 'io.containerd.runc.v2', connection: conn });
    assert.equal(await backend.check(), undefined);
    assert.equal((await backend.state(id))?.status, 'running');
    assert.equal((await backend.state(id))?.pid, taskPid);
    const exit = await waitFor('the exit that happened while we were down', () => backend.exitOf(quick));
    assert.equal(exit.exitCode, 5);
    // A line the restart cut in two is a partial record and the rest: joined, as the kubelet reads them.
    const texts = await waitFor('all 100000 lines', async () => {
      const t = joinPartials(logTexts(await readLog(logPath)));
      return t.length >= 100000 && t;
    }, { timeoutMs: 60_000, intervalMs: 200 });
    assert.equal(texts.length, 100000);
    texts.forEach((t, i) => assert.equal(t.text, `line ${i + 1}`));
    await backend.stop(id, 0);
    await backend.delete(id);
    await backend.delete(quick);
  });

  test('containerd killed: restarted by the supervisor; the event stream comes back and exits are still seen', async () => {
    const id = newId('crash');
    await createAndStart(id, ['sh', '-c', 'sleep 3; exit 9']);
    const pid = conn.managedDaemon!.pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor('a new containerd', () => conn.managedDaemon!.pid !== pid && conn.managedDaemon!.pid, { timeoutMs: 20_000, intervalMs: 100 });
    const exit = await waitFor('exit', () => backend.exitOf(id).catch(() => undefined), { timeoutMs: 20_000, intervalMs: 200 });
    assert.equal(exit.exitCode, 9);
    await backend.delete(id);
  });
});
