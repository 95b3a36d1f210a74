// Real conmon + runc as root: create/start/state, CRI log lines, exit files, stop, exec, reopen-log,
// a container outliving the process that created it, pause rootfs, and full cleanup.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { RuncBackend } from '../../src/runtime/runc/backend.js';
import type { OciSpec } from '../../src/oci/types.js';
import { preparePauseRootfs, ensurePauseRootfs } from '../../src/runtime/pause/pause.js';
import { run } from '../../src/common/exec.js';
import { signalDisposition, waitFor as waitForCondition } from '../helpers/wait.js';

const runTag = randomBytes(4).toString('hex');
const BUSYBOX_APPLETS = ['sh', 'echo', 'sleep', 'cat', 'printf', 'ps', 'stty', 'head', 'tr', 'env', 'true'];

let tmp: string;
let backend: RuncBackend;
let busyboxRootfs: string;
const created = new Set<string>();

function newId(name: string): string {
  const id = `t${runTag}-${name}`;
  created.add(id);
  return id;
}

interface BundleOptions {
  tty?: boolean;
  /** No PID namespace of its own (the host's, as a hostPID pod's containers). */
  hostPid?: boolean;
  env?: string[];
  memoryLimit?: number;
  rootfs?: string;
}

/** A bundle from `runc spec`, patched: our args, a shared busybox rootfs, a unique cgroup. */
async function makeBundle(id: string, args: string[], opts: BundleOptions = {}): Promise<string> {
  const bundle = path.join(tmp, 'bundles', id);
  await fsp.mkdir(bundle, { recursive: true });
  await run('runc', ['spec', '--bundle', bundle]);
  const specPath = path.join(bundle, 'config.json');
  const spec = JSON.parse(await fsp.readFile(specPath, 'utf8'));
  spec.root = { path: opts.rootfs ?? busyboxRootfs, readonly: true };
  spec.process.args = args;
  spec.process.terminal = opts.tty ?? false;
  spec.process.env = [...spec.process.env, ...(opts.env ?? [])];
  spec.linux.cgroupsPath = `/nodelet-test-${id}`;
  if (opts.hostPid) spec.linux.namespaces = spec.linux.namespaces.filter((ns: { type: string }) => ns.type !== 'pid');
  if (opts.memoryLimit) {
    spec.linux.resources = { ...spec.linux.resources, memory: { limit: opts.memoryLimit, swap: opts.memoryLimit } };
  }
  await fsp.writeFile(specPath, JSON.stringify(spec, null, 1));
  return bundle;
}

/** The spec of a bundle made by makeBundle (the backend writes its own bundle from it). */
async function specOf(bundle: string): Promise<OciSpec> {
  return JSON.parse(await fsp.readFile(path.join(bundle, 'config.json'), 'utf8')) as OciSpec;
}

async function createAndStart(id: string, args: string[], opts: BundleOptions & { logName?: string } = {}) {
  const bundleDir = await makeBundle(id, args, opts);
  const logPath = path.join(tmp, 'logs', `${opts.logName ?? id}.log`);
  const res = await backend.create({ id, spec: await specOf(bundleDir), logPath, tty: opts.tty ?? false, stdin: false, stdinOnce: false });
  await backend.start(id);
  return { ...res, bundleDir, logPath };
}

/** The shared poller, checking every 50 ms with a 10 s bound unless told otherwise. */
function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  return waitForCondition(what, fn, { timeoutMs, intervalMs: 50 });
}

/** Waits until the container's process handles SIGTERM as its shell script says (a trap runs some ms after start). */
async function waitSigterm(pid: number, disposition: 'caught' | 'ignored'): Promise<void> {
  await waitFor(`pid ${pid} to have SIGTERM ${disposition}`, async () => (await signalDisposition(pid, 15)) === disposition);
}

async function readLog(file: string): Promise<string> {
  return fsp.readFile(file, 'utf8').catch(() => '');
}

async function parentPid(pid: number): Promise<number> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Pids of conmon processes working for our runtime root (must be none at the end). */
async function strayConmons(): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fsp.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0')[0]?.endsWith('conmon') && cmdline.includes(tmp)) found.push(Number(entry));
  }
  return found;
}

describe('runc backend (conmon + runc)', { concurrency: false }, () => {
  before(async () => {
    // Short base dir: the attach socket path <socketDir>/<id>/attach must fit 108 bytes.
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nlrb-'));
    busyboxRootfs = path.join(tmp, 'rootfs');
    await fsp.mkdir(path.join(busyboxRootfs, 'bin'), { recursive: true });
    for (const dir of ['proc', 'dev', 'sys', 'tmp', 'etc']) await fsp.mkdir(path.join(busyboxRootfs, dir));
    await fsp.copyFile('/bin/busybox', path.join(busyboxRootfs, 'bin', 'busybox'));
    for (const applet of BUSYBOX_APPLETS) await fsp.symlink('busybox', path.join(busyboxRootfs, 'bin', applet));
    backend = new RuncBackend({
      conmonPath: 'conmon',
      runtimePath: 'runc',
      runtimeRoot: path.join(tmp, 'runc'),
      exitDir: path.join(tmp, 'exits'),
      socketDir: path.join(tmp, 's'),
      persistRoot: path.join(tmp, 'conmon'),
    });
  });

  after(async () => {
    for (const id of created) await backend.delete(id).catch(() => undefined);
    for (const pid of await strayConmons()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    const left = await backend.cli.list();
    await fsp.rm(tmp, { recursive: true, force: true });
    assert.deepEqual(left.map((c) => c.id), [], 'runc list under our root is empty');
  });

  test('create → created, start → running, CRI log lines, exit code in the exit file', async (t) => {
    const id = newId('life');
    const bundleDir = await makeBundle(id, ['sh', '-c', 'echo hello; printf partial; sleep 1; echo oops >&2; exit 3']);
    const logPath = path.join(tmp, 'logs', `${id}.log`);
    const t0 = performance.now();
    const { pid, monitorPid: conmonPid } = await backend.create({ id, spec: await specOf(bundleDir), logPath, tty: false, stdin: false, stdinOnce: false });
    const t1 = performance.now();
    assert.ok(pid > 0 && conmonPid > 0);
    await assert.rejects(
      backend.create({ id, spec: await specOf(bundleDir), logPath, tty: false, stdin: false, stdinOnce: false }),
      { kind: 'FailedPrecondition' },
    );
    const createdState = await backend.state(id);
    assert.equal(createdState?.status, 'created');
    assert.equal(createdState?.pid, pid);
    const t2 = performance.now();
    await backend.start(id);
    const t3 = performance.now();
    t.diagnostic(`create ${(t1 - t0).toFixed(0)} ms, start ${(t3 - t2).toFixed(0)} ms`);
    const runningState = await backend.state(id);
    assert.ok(runningState?.status === 'running' || runningState?.status === 'stopped');
    // Started through runc's exec fifo (no runc child): the fifo is gone, so runc itself sees it started.
    assert.equal(await fsp.stat(path.join(backend.paths.runtimeRoot, id, 'exec.fifo')).then(() => true, () => false), false, 'the exec fifo was consumed');
    await assert.rejects(backend.start(id), { kind: 'FailedPrecondition' }, 'a second start is refused by the runtime');

    const stat = await fsp.stat(backend.paths.attachSocket(id));
    assert.ok(stat.isSocket(), 'attach socket exists');
    assert.notEqual(await parentPid(conmonPid), process.pid, 'conmon is not our child');

    const exit = await backend.exitFiles.wait(id, AbortSignal.timeout(10_000));
    assert.equal(exit.exitCode, 3);
    assert.ok(Math.abs(exit.finishedAt.getTime() - Date.now()) < 10_000);
    assert.deepEqual(await backend.exitFiles.read(id), exit);
    assert.equal((await backend.state(id))?.status, 'stopped');

    const lines = (await readLog(logPath)).trimEnd().split('\n');
    const cri = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$/;
    for (const line of lines) assert.match(line, cri);
    const parsed = lines.map((line) => line.match(cri)!.slice(3, 6));
    assert.deepEqual(parsed, [
      ['stdout', 'F', 'hello'],
      ['stdout', 'P', 'partial'],
      ['stderr', 'F', 'oops'],
    ]);
    assert.equal(await backend.exitFiles.oomKilled(id), false);

    await backend.delete(id);
    await backend.delete(id);
    assert.equal(await backend.state(id), undefined);
    assert.equal(await backend.exitFiles.read(id), undefined);
    await assert.rejects(fsp.stat(backend.paths.persistDir(id)), { code: 'ENOENT' });
  });

  test('stop: SIGTERM ignored → SIGKILL after the timeout; timeout 0 kills at once; stopped is a no-op', async () => {
    const stubborn = newId('stubborn');
    const { pid: stubbornPid } = await createAndStart(stubborn, ['sh', '-c', "trap '' TERM; while :; do sleep 1; done"]);
    await waitFor('running', async () => (await backend.state(stubborn))?.status === 'running');
    await waitSigterm(stubbornPid, 'ignored');
    let t0 = Date.now();
    await backend.stop(stubborn, 2);
    let elapsed = Date.now() - t0;
    assert.ok(elapsed >= 1900 && elapsed < 8000, `stopped after ${elapsed} ms`);
    assert.equal((await backend.exitFiles.read(stubborn))?.exitCode, 137);
    assert.equal((await backend.state(stubborn))?.status, 'stopped');
    t0 = Date.now();
    await backend.stop(stubborn, 10); // already stopped: no wait for the 10 s
    assert.ok(Date.now() - t0 < 5000);

    const polite = newId('polite');
    const { pid: politePid } = await createAndStart(polite, ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1 & wait; done']);
    await waitFor('running', async () => (await backend.state(polite))?.status === 'running');
    await waitSigterm(politePid, 'caught');
    t0 = Date.now();
    await backend.stop(polite, 10);
    assert.ok(Date.now() - t0 < 5000);
    assert.equal((await backend.exitFiles.read(polite))?.exitCode, 0);

    const instant = newId('instant');
    await createAndStart(instant, ['sleep', '1000']);
    t0 = Date.now();
    await backend.stop(instant, 0);
    elapsed = Date.now() - t0;
    // Not a speed check: only far below a grace period (the polite stop above had 10 s).
    assert.ok(elapsed < 5000, `timeout 0 took ${elapsed} ms`);
    assert.equal((await backend.exitFiles.read(instant))?.exitCode, 137);

    await assert.rejects(backend.stop(`t${runTag}-never`, 1), { kind: 'NotFound' });
    for (const id of [stubborn, polite, instant]) await backend.delete(id);
  });

  test('stop reaches containers runc must signal itself: one paused by hand, one in the host PID namespace', async () => {
    // The stop signal goes straight to the init while conmon holds it; these two take the runtime's path.
    const paused = newId('paused');
    await createAndStart(paused, ['sleep', '1000']);
    await run('runc', ['--root', backend.paths.runtimeRoot, 'pause', paused]);
    assert.equal((await backend.state(paused))?.status, 'paused');
    let t0 = Date.now();
    await backend.stop(paused, 1);
    let elapsed = Date.now() - t0;
    assert.ok(elapsed < 15_000, `paused container stopped after ${elapsed} ms`);
    assert.equal((await backend.exitFiles.read(paused))?.exitCode, 137);

    const hostPid = newId('hostpid');
    const { pid } = await createAndStart(hostPid, ['sleep', '1000'], { hostPid: true });
    t0 = Date.now();
    await backend.stop(hostPid, 0);
    elapsed = Date.now() - t0;
    assert.ok(elapsed < 10_000, `host-PID container stopped after ${elapsed} ms`);
    assert.equal((await backend.exitFiles.read(hostPid))?.exitCode, 137);
    assert.equal(await fsp.stat(`/proc/${pid}`).then(() => 'alive', () => 'gone'), 'gone');
    for (const id of [paused, hostPid]) await backend.delete(id);
  });

  test('execSync: output, exit code, env and container env, timeout kills the process', async () => {
    const id = newId('exec');
    await createAndStart(id, ['sleep', '1000'], { env: ['FROM_SPEC=spec-value'] });
    await waitFor('running', async () => (await backend.state(id))?.status === 'running');

    const hello = await backend.execSync(id, ['echo', 'hello'], { timeoutSec: 10 });
    assert.equal(hello.stdout.toString(), 'hello\n');
    assert.equal(hello.exitCode, 0);
    assert.equal(hello.timedOut, false);

    const failing = await backend.execSync(id, ['sh', '-c', 'echo bad >&2; exit 5'], { timeoutSec: 10 });
    assert.equal(failing.exitCode, 5);
    assert.equal(failing.stderr.toString(), 'bad\n');

    const env = await backend.execSync(id, ['sh', '-c', 'echo "$FROM_SPEC $EXTRA"'], { timeoutSec: 10, env: ['EXTRA=extra-value'] });
    assert.equal(env.stdout.toString(), 'spec-value extra-value\n');

    const t0 = Date.now();
    const slow = await backend.execSync(id, ['sleep', '100'], { timeoutSec: 1 });
    const elapsed = Date.now() - t0;
    assert.equal(slow.timedOut, true);
    assert.ok(elapsed >= 900 && elapsed < 5000, `timed out after ${elapsed} ms`);
    const ps = await backend.execSync(id, ['ps'], { timeoutSec: 10 });
    assert.doesNotMatch(ps.stdout.toString(), /sleep 100$/m);

    const big = await backend.execSync(id, ['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x'], { timeoutSec: 20 });
    assert.equal(big.stdout.length, 3_000_000);

    // A command that cannot be run is the shell's answer, 127 with runc's reason, not an error of the runtime.
    const missing = await backend.execSync(id, ['/no/such/cmd'], { timeoutSec: 10 });
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr.toString(), /no such file/);
    await backend.stop(id, 0);
    await assert.rejects(backend.execSync(id, ['true'], { timeoutSec: 10 }), { kind: 'FailedPrecondition' });
    await backend.delete(id);
    await assert.rejects(backend.execSync(id, ['true'], { timeoutSec: 10 }), { kind: 'NotFound' });
  });

  test('the container outlives the process that created it', async () => {
    const id = newId('orphan');
    const bundleDir = await makeBundle(id, ['sleep', '1000']);
    const logPath = path.join(tmp, 'logs', `${id}.log`);
    const backendModule = new URL('../../src/runtime/runc/backend.js', import.meta.url).href;
    const options = { conmonPath: 'conmon', runtimePath: 'runc', runtimeRoot: backend.paths.runtimeRoot, exitDir: backend.paths.exitDir, socketDir: backend.paths.socketDir, persistRoot: backend.paths.persistRoot };
    const script = `
      const { RuncBackend } = await import(${JSON.stringify(backendModule)});
      const b = new RuncBackend(${JSON.stringify(options)});
      const r = await b.create(${JSON.stringify({ id, spec: await specOf(bundleDir), logPath, tty: false, stdin: false, stdinOnce: false })});
      await b.start(${JSON.stringify(id)});
      process.stdout.write(JSON.stringify(r));`;
    const res = await run(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 30_000 });
    const { pid, monitorPid: conmonPid } = JSON.parse(res.stdout) as { pid: number; monitorPid: number };
    // Its creator has exited: the container still runs and answers an exec from this process.
    assert.equal(res.exitCode, 0);
    const alive = await backend.execSync(id, ['echo', 'still-here'], { timeoutSec: 10 });
    assert.equal(alive.stdout.toString(), 'still-here\n');
    const state = await backend.state(id);
    assert.equal(state?.status, 'running');
    assert.equal(state?.pid, pid);
    assert.equal(await backend.monitorPid(id), conmonPid);
    assert.notEqual(await parentPid(conmonPid), process.pid);
    await backend.stop(id, 0);
    assert.equal((await backend.exitFiles.read(id))?.exitCode, 137);
    await backend.delete(id);
    assert.equal(await backend.monitorPid(id), undefined);
  });

  test('reopenLog after rotation writes to a new file', async () => {
    const id = newId('rotate');
    const { logPath } = await createAndStart(id, ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done']);
    await waitFor('first lines', async () => (await readLog(logPath)).includes('tick 2'));
    await fsp.rename(logPath, `${logPath}.1`);
    await backend.reopenLog(id);
    const fresh = await waitFor('lines in the new file', async () => {
      const text = await readLog(logPath);
      return text.includes('stdout F tick') ? text : undefined;
    });
    const firstNew = Number(fresh.match(/tick (\d+)/)![1]);
    const rotated = await readLog(`${logPath}.1`);
    const lastOld = Math.max(...[...rotated.matchAll(/tick (\d+)/g)].map((m) => Number(m[1])));
    assert.ok(firstNew > lastOld, `new file starts after the old one (${firstNew} > ${lastOld})`);
    await backend.stop(id, 0);
    await backend.delete(id);
    await assert.rejects(backend.reopenLog(id));
  });

  test('tty container: resizeTerminal sets the window size', async () => {
    const id = newId('tty');
    const bundleDir = await makeBundle(id, ['sh', '-c', 'sleep 1; stty size'], { tty: true });
    const logPath = path.join(tmp, 'logs', `${id}.log`);
    await backend.create({ id, spec: await specOf(bundleDir), logPath, tty: true, stdin: true, stdinOnce: true });
    await backend.resize(id, 100, 40);
    await backend.start(id);
    const exit = await backend.exitFiles.wait(id, AbortSignal.timeout(10_000));
    assert.equal(exit.exitCode, 0);
    assert.match(await readLog(logPath), /stdout F 40 100\r?$/m);
    await assert.rejects(backend.resize(id, 5000, 1), { kind: 'InvalidArgument' });
    await backend.delete(id);
  });

  test('attach: stdin in, stdout and stderr out, stdin close ends a stdinOnce container', async () => {
    const id = newId('attach');
    const bundleDir = await makeBundle(id, ['sh', '-c', 'cat; echo bye >&2']);
    const logPath = path.join(tmp, 'logs', `${id}.log`);
    await backend.create({ id, spec: await specOf(bundleDir), logPath, tty: false, stdin: true, stdinOnce: true });
    const session = await backend.attach(id);
    let out = '';
    let err = '';
    session.stdout.on('data', (b: Buffer) => (out += b.toString()));
    session.stderr.on('data', (b: Buffer) => (err += b.toString()));
    await backend.start(id);
    session.stdin.write('hi there\n');
    await waitFor('echo on stdout', async () => out === 'hi there\n');
    session.stdin.end();
    const exit = await backend.exitFiles.wait(id, AbortSignal.timeout(10_000));
    assert.equal(exit.exitCode, 0);
    await waitFor('stderr line', async () => err === 'bye\n');
    const closedInTime = await Promise.race([
      session.closed.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 5000).unref()),
    ]);
    assert.ok(closedInTime, 'conmon closes the attach connection when the container exits');
    session.close();
    assert.match(await readLog(logPath), /stdout F hi there\n.*stderr F bye/s);
    await backend.delete(id);
    await assert.rejects(backend.attach(id), { kind: 'FailedPrecondition' });
  });

  test('delete of a running container kills it and its conmon and leaves no files', async () => {
    const id = newId('delrun');
    const { monitorPid: conmonPid } = await createAndStart(id, ['sleep', '1000']);
    await backend.delete(id);
    assert.equal(await backend.state(id), undefined);
    assert.equal(await backend.monitorPid(id), undefined);
    const cmdline = await fsp.readFile(`/proc/${conmonPid}/cmdline`, 'utf8').catch(() => '');
    assert.ok(!cmdline.includes(id), 'the container\'s conmon has exited');
    assert.equal(await backend.exitFiles.read(id), undefined);
    await assert.rejects(fsp.lstat(path.join(backend.paths.socketDir, id)), { code: 'ENOENT' });
    await assert.rejects(fsp.stat(backend.paths.persistDir(id)), { code: 'ENOENT' });
  });

  test('a failing create reports the runtime error and leaves nothing behind', async () => {
    const id = newId('broken');
    const bundleDir = await makeBundle(id, ['/no/such/binary']);
    await assert.rejects(
      backend.create({ id, spec: await specOf(bundleDir), logPath: path.join(tmp, 'logs', `${id}.log`), tty: false, stdin: false, stdinOnce: false }),
      (err: Error) => /no such file|not found|executable/i.test(err.message),
    );
    assert.equal(await backend.state(id), undefined);
    await assert.rejects(fsp.stat(backend.paths.persistDir(id)), { code: 'ENOENT' });
    await assert.rejects(
      backend.create({ id: '../evil', spec: await specOf(bundleDir), logPath: '/tmp/x.log', tty: false, stdin: false, stdinOnce: false }),
      { kind: 'InvalidArgument' },
    );
  });

  test('OOM kill is recorded', async () => {
    const id = newId('oom');
    await createAndStart(id, ['sh', '-c', 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'], {
      memoryLimit: 16 * 1024 * 1024,
    });
    const exit = await backend.exitFiles.wait(id, AbortSignal.timeout(30_000));
    assert.notEqual(exit.exitCode, 0);
    assert.equal(await backend.exitFiles.oomKilled(id), true);
    await backend.delete(id);
  });

  test('pause rootfs: built once, runs as a container, exits 0 on SIGTERM', async (t) => {
    for (const forceBusybox of [false, true]) {
      const dir = path.join(tmp, forceBusybox ? 'pause-bb' : 'pause');
      const pause = await preparePauseRootfs(dir, { forceBusybox });
      t.diagnostic(`pause kind: ${pause.kind}`);
      assert.equal(pause.kind, forceBusybox ? 'busybox' : 'static-pause');
      assert.deepEqual(await preparePauseRootfs(dir, { forceBusybox }), pause);
      assert.equal(await ensurePauseRootfs(dir), pause.rootfs);
      const id = newId(forceBusybox ? 'pausebb' : 'pause');
      const { pid } = await createAndStart(id, [pause.pausePath], { rootfs: pause.rootfs });
      await waitFor('running', async () => (await backend.state(id))?.status === 'running');
      // Settled: its SIGTERM handler is installed, and it is still running.
      await waitSigterm(pid, 'caught');
      assert.equal((await backend.state(id))?.status, 'running');
      const t0 = Date.now();
      await backend.stop(id, 10);
      assert.ok(Date.now() - t0 < 3000, 'pause stops promptly on SIGTERM');
      assert.equal((await backend.exitFiles.read(id))?.exitCode, 0);
      await backend.delete(id);
    }
  });

  test('no conmon is left for our root', async () => {
    assert.deepEqual(await strayConmons(), []);
    assert.deepEqual(await backend.cli.list(), []);
  });
});

