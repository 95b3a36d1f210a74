// `nodelet exec -i/-t`, `nodelet attach` and `nodelet port-forward` as subprocesses, through a real
// daemon's streaming server over SPDY and WebSocket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../helpers/spawn.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { containerConfig, runContainer, sandboxConfig, waitFor } from '../helpers/pods.js';
import { FAMILIES, readUntil, withTimeout } from '../helpers/stream-clients.js';
import { parsePortMapping } from '../../src/cli/commands/port-forward.js';

// dist/test/integration → repository root.
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'nodelet');

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;
let pod: { id: string; config: any };
let worker: string;
const children = new Set<ReturnType<typeof spawnChild>>();

async function newPod(name: string) {
  const config = sandboxConfig(name, path.join(logDir, name));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  return { id: pod_sandbox_id as string, config };
}

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cli-stream-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
  pod = await newPod('cli-streams');
  worker = await runContainer(d.client, pod.id, pod.config, containerConfig('worker', BUSYBOX, ['sleep', '3600']));
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all([...children].map((c) => c.catch(() => undefined)));
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function nodelet(args: string[], input?: string): Promise<CliResult> {
  const res = await run(process.execPath, [BIN, '-r', `unix://${d.socket}`, ...args], { reject: false, timeoutMs: 60_000, ...(input !== undefined ? { input } : {}) });
  return { code: res.exitCode, stdout: res.stdout, stderr: res.stderr };
}

/** Starts the CLI in the background; the caller reads its streams and stops it. */
function startNodelet(args: string[]) {
  const child = spawnChild(process.execPath, [BIN, '-r', `unix://${d.socket}`, ...args], { timeout: 60_000, stdin: 'pipe', stripFinalNewline: false });
  children.add(child);
  void child.finally(() => children.delete(child));
  return child;
}

for (const family of FAMILIES) {
  test(`${family}: exec -i pipes stdin to cat and ends with it`, async () => {
    const input = 'first line\nsecond line\n' + 'y'.repeat(200_000) + '\n';
    const res = await nodelet(['exec', '-i', '--family', family, worker.slice(0, 12), 'cat'], input);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.length, input.length);
    assert.equal(res.stdout, input);
    assert.equal(res.stderr, '');
  });

  test(`${family}: exec -i keeps stdout and stderr apart and returns the exit code`, async () => {
    const res = await nodelet(['exec', '-i', '--family', family, worker, 'sh', '-c', 'read l; echo "out:$l"; echo err >&2; exit 7'], 'hello\n');
    assert.deepEqual(res, { code: 7, stdout: 'out:hello\n', stderr: 'err\n' });
  });

  test(`${family}: exec -t runs in a terminal`, async () => {
    const echo = await nodelet(['exec', '-t', '--family', family, worker, 'echo', 'over-a-tty']);
    assert.equal(echo.code, 0, echo.stderr);
    // The terminal turns \n into \r\n, once: there is one pty between the command and us.
    assert.equal(echo.stdout, 'over-a-tty\r\n');
    const shell = await nodelet(['exec', '-it', '--family', family, worker, 'sh'], 'tty; echo "err-too" >&2; exit 5\n');
    assert.equal(shell.code, 5);
    assert.match(shell.stdout, /\/dev\/pts\/\d+/);
    // A terminal has one output stream.
    assert.match(shell.stdout, /err-too/);
    assert.equal(shell.stderr, '');
  });
}

/**
 * Runs the CLI on a local pseudo-terminal (script(1)) of 33 rows x 111 columns and types `remote` into it. Once the
 * remote side has printed `33 111` (so the CLI is attached, in raw mode), the test reads the terminal's mode and resizes
 * it to 22 x 77, which sends the CLI a SIGWINCH. Returns the output with CRs removed and the modes before, during, after.
 */
async function onLocalTerminal(cliArgs: string[], remote: string) {
  const cli = [process.execPath, BIN, '-r', `unix://${d.socket}`, ...cliArgs].join(' ');
  const line = `stty cols 111 rows 33; echo "pty=$(tty)"; echo "before=$(stty -g)"; ${cli}; echo "rc=$?"; echo "after=$(stty -g)"`;
  const child = spawnChild('script', ['-q', '-e', '-c', line, '/dev/null'], { timeout: 60_000, stdin: 'pipe', stripFinalNewline: false });
  children.add(child);
  let out = '';
  (child.stdout as Readable).on('data', (c: Buffer) => (out += c.toString().replace(/\r/g, '')));
  let during: string | undefined;
  try {
    const pty = await waitFor('the local terminal', () => /^pty=(\/dev\/pts\/\d+)$/m.exec(out)?.[1], 15_000);
    child.stdin!.write(remote);
    await waitFor(`the remote side to see 33 111: ${JSON.stringify(out)}`, () => /^33 111$/m.test(out), 20_000);
    during = (await run('stty', ['-F', pty, '-g'])).stdout.trim();
    await run('stty', ['-F', pty, 'cols', '77', 'rows', '22']);
    await withTimeout(child, 30_000, `the CLI to end: ${JSON.stringify(out)}`);
  } finally {
    child.stdin?.end();
    child.kill('SIGKILL');
    await child.catch(() => undefined);
  }
  return {
    out,
    rc: /^rc=(\d+)$/m.exec(out)?.[1],
    sizes: [...out.matchAll(/^(\d+) (\d+)$/gm)].map((m) => `${m[1]} ${m[2]}`),
    before: /^before=(\S+)$/m.exec(out)?.[1],
    during,
    after: /^after=(\S+)$/m.exec(out)?.[1],
  };
}

// Remote side: wait (bounded) for the local size, print it, wait for the new size, print it again.
// `stty cols 77 rows 22` is two resizes (33x77 comes first), so wait for the final size itself.
const FOLLOW_SIZE = 'i=0; while [ "$(stty size)" != "33 111" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; stty size; ' +
  'i=0; while [ "$(stty size)" != "22 77" ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; stty size';

test('exec -it on a local terminal: raw mode while it runs, restored after, window size and SIGWINCH resizes', async () => {
  const t = await onLocalTerminal(['exec', '-it', worker, 'sh'], `${FOLLOW_SIZE}; exit 4\n`);
  assert.equal(t.rc, '4', t.out);
  assert.deepEqual(t.sizes, ['33 111', '22 77'], t.out);
  assert.ok(t.before, t.out);
  assert.equal(t.after, t.before, 'the terminal mode is restored');
  assert.ok(t.during && t.during !== t.before, `raw while the exec ran: ${t.out}`);
});

test('exec without -i/-t stays on ExecSync; streaming flags are checked', async () => {
  assert.deepEqual(await nodelet(['exec', worker, 'sh', '-c', 'echo sync; exit 3']), { code: 3, stdout: 'sync\n', stderr: '' });
  const timeout = await nodelet(['exec', '-i', '--timeout', '5', worker, 'cat'], '');
  assert.equal(timeout.code, 2);
  assert.match(timeout.stderr, /--timeout cannot be used with -i or -t/);
  const family = await nodelet(['exec', '-i', '--family', 'carrier-pigeon', worker, 'cat'], '');
  assert.equal(family.code, 2);
  assert.match(family.stderr, /--family must be one of spdy, websocket/);
  const missing = await nodelet(['exec', '-i', 'nosuchcontainer', 'cat'], '');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^nodelet: no container matches id "nosuchcontainer"/);
});

test('attach follows a container printing lines; -i writes to its stdin', async () => {
  const talker = await runContainer(
    d.client,
    pod.id,
    pod.config,
    containerConfig('talker', BUSYBOX, ['sh', '-c', '(while true; do echo tick; sleep 0.2; done) & while read l; do echo got:$l; done'], { stdin: true, stdin_once: false }),
  );
  for (const family of FAMILIES) {
    const watcher = startNodelet(['attach', '--family', family, talker.slice(0, 12)]);
    await readUntil(watcher.stdout as Readable, /tick\ntick\ntick\n/, 15_000);
    watcher.kill('SIGTERM');
    const res = await withTimeout(watcher, 10_000, 'attach to end');
    assert.equal(res.stderr, '');
    assert.equal(res.exitCode, 143);

    const talk = startNodelet(['attach', '-i', '--family', family, talker]);
    const reply = readUntil(talk.stdout as Readable, new RegExp(`got:hello-${family}`), 15_000);
    talk.stdin!.write(`hello-${family}\n`);
    await reply;
    talk.kill('SIGTERM');
    await withTimeout(talk, 10_000, 'attach -i to end');
  }
  // Detaching leaves the container running.
  const { status } = await d.client.runtime('ContainerStatus', { container_id: talker });
  assert.equal(status.state, 'CONTAINER_RUNNING');
  // -i on a container without stdin: a warning, then output only.
  const quiet = startNodelet(['attach', '-i', worker]);
  await readUntil(quiet.stderr as Readable, /was created without stdin/, 15_000);
  quiet.kill('SIGTERM');
  await withTimeout(quiet, 10_000, 'attach to end');
});

test('attach without -t to a TTY container follows the container: one terminal stream', async () => {
  const shell = await runContainer(d.client, pod.id, pod.config, containerConfig('shell', BUSYBOX, ['sh'], { stdin: true, stdin_once: false, tty: true }));
  const session = startNodelet(['attach', '-i', shell]);
  let out = '';
  (session.stdout as Readable).on('data', (c: Buffer) => (out += c.toString()));
  // Typed until the answer shows: nothing tells the client when the runtime has connected the attach.
  await waitFor('tty to answer through the attach', () => {
    if (/\/dev\/pts\/\d+\r\n/.test(out)) return true;
    session.stdin!.write('tty\n');
    return false;
  }, { timeoutMs: 15_000, intervalMs: 300 });
  session.kill('SIGTERM');
  const res = await withTimeout(session, 10_000, 'attach to end');
  assert.equal(res.stderr, '', 'no warning: the container has a TTY');
});

test('attach -it on a local terminal: raw mode while attached, restored after, the terminal size reaches the container', async () => {
  const shell = await runContainer(d.client, pod.id, pod.config, containerConfig('tty-shell', BUSYBOX, ['sh'], { stdin: true, stdin_once: false, tty: true }));
  // `exit` ends the container's own shell, and with it the attach.
  const t = await onLocalTerminal(['attach', '-it', shell], `${FOLLOW_SIZE}; exit 6\n`);
  assert.ok(t.rc !== undefined, t.out);
  assert.deepEqual(t.sizes, ['33 111', '22 77'], t.out);
  assert.ok(t.before, t.out);
  assert.equal(t.after, t.before, 'the terminal mode is restored');
  assert.ok(t.during && t.during !== t.before, `raw while attached: ${t.out}`);
  const status = (await waitFor('the container to exit', async () => {
    const { status } = await d.client.runtime('ContainerStatus', { container_id: shell });
    return status.state === 'CONTAINER_EXITED' ? status : undefined;
  }, 10_000)) as any;
  assert.equal(status.exit_code, 6);
  // -t on a container without a TTY: a warning, then its plain streams.
  const plain = startNodelet(['attach', '-t', worker]);
  await readUntil(plain.stderr as Readable, /has no TTY; attaching without one/, 15_000);
  plain.kill('SIGTERM');
  await withTimeout(plain, 10_000, 'attach to end');
});

test('port-forward to a busybox httpd: fetch through the local port, several ports, stop on SIGINT', async () => {
  const web = await newPod('cli-pf-web');
  await runContainer(d.client, web.id, web.config, containerConfig('httpd', BUSYBOX, ['httpd', '-f', '-p', '8080', '-h', '/etc']));
  for (const family of FAMILIES) {
    const forwarder = startNodelet(['port-forward', '--family', family, web.id.slice(0, 12), ':8080', '0:8080']);
    const banner = await readUntil(forwarder.stdout as Readable, /(Forwarding from .*\n){2}/, 15_000);
    const ports = [...banner.matchAll(/^Forwarding from 127\.0\.0\.1:(\d+) -> 8080$/gm)].map((m) => Number(m[1]));
    assert.equal(ports.length, 2, banner);
    const body = await waitFor(
      'httpd to answer through the forward',
      async () => {
        const res = await fetch(`http://127.0.0.1:${ports[0]}/hostname`);
        return res.status === 200 ? res.text() : undefined;
      },
      15_000,
    );
    assert.equal(body.trim(), 'cli-pf-web');
    // More connections, over both listeners.
    for (const port of [ports[0], ports[1], ports[1]]) {
      const res = await fetch(`http://127.0.0.1:${port}/hostname`, { headers: { connection: 'close' } });
      assert.equal((await res.text()).trim(), 'cli-pf-web');
    }
    forwarder.kill('SIGINT');
    const res = await withTimeout(forwarder, 10_000, 'port-forward to stop');
    assert.equal(res.exitCode, 0, String(res.stderr));
    await assert.rejects(fetch(`http://127.0.0.1:${ports[0]}/hostname`));
  }
  // Nothing listens on port 9: the connection is dropped and the error reported.
  const refused = startNodelet(['port-forward', web.id, ':9']);
  const banner = await readUntil(refused.stdout as Readable, /Forwarding from 127\.0\.0\.1:(\d+) -> 9\n/, 15_000);
  const port = Number(/:(\d+) -> 9/.exec(banner)![1]);
  const reported = readUntil(refused.stderr as Readable, new RegExp(`error forwarding 127\\.0\\.0\\.1:${port} -> 9: .*connection refused`), 15_000);
  await assert.rejects(fetch(`http://127.0.0.1:${port}/`));
  await reported;
  refused.kill('SIGINT');
  await withTimeout(refused, 10_000, 'port-forward to stop');
});

test('port-forward usage errors and unknown pods', async () => {
  assert.deepEqual(parsePortMapping('8080'), { localPort: 8080, remotePort: 8080 });
  assert.deepEqual(parsePortMapping('9000:80'), { localPort: 9000, remotePort: 80 });
  assert.deepEqual(parsePortMapping(':80'), { localPort: 0, remotePort: 80 });
  assert.deepEqual(parsePortMapping('0:80'), { localPort: 0, remotePort: 80 });
  for (const bad of ['0', '70000', '1:2:3', 'http', '80:', '-1:80']) assert.throws(() => parsePortMapping(bad), /port/, bad);
  const bad = await nodelet(['port-forward', pod.id, '80:x']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /remote port "x" is not a port number/);
  const none = await nodelet(['port-forward', pod.id]);
  assert.equal(none.code, 2);
  const unknown = await nodelet(['port-forward', 'nosuchpod', '80']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^nodelet: no pod matches id "nosuchpod"/);
});
