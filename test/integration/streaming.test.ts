// Exec, attach and port-forward through a real daemon's streaming server, over SPDY and WebSocket.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, testBackends, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitFor } from '../helpers/pods.js';
import { FAMILIES, execCollect, fetchThroughPortForward, readUntil, withTimeout } from '../helpers/stream-clients.js';
import { StreamUpgradeError, openPortForward, openRemoteCommand } from '../../src/streaming/client.js';
import { rawUpgrade } from '../helpers/raw-streams.js';
import { randomBytes } from 'node:crypto';

/** Asks the shell on the terminal for its size until it reports rows x cols (a resize arrives asynchronously). */
async function waitTerminalSize(stdin: NodeJS.WritableStream, output: () => string, rows: number, cols: number): Promise<void> {
  // The terminal echoes the command; only its output has the size right after `size=`.
  const reported = new RegExp(`size=${rows} ${cols}\\r\\n`);
  await waitFor(`the terminal to report ${rows} ${cols}`, () => {
    if (reported.test(output())) return true;
    stdin.write('echo "size=$(stty size)"\n');
    return false;
  }, { timeoutMs: 10_000, intervalMs: 250 }).catch((err) => {
    throw new Error(`${err.message}; the terminal showed ${JSON.stringify(output().slice(-400))}`);
  });
}

for (const backend of testBackends()) {
describe(`streaming (${backend})`, { concurrency: false }, () => {
  let d: TestDaemon;
  let reg: Registries;
  let logDir: string;
  let BUSYBOX: string;
  let pod: { id: string; config: any };
  let worker: string;

  before(async () => {
    reg = await useRegistries();
    d = await startTestDaemon({ backend });
    logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-stream-logs-'));
    BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
    await d.client.image('PullImage', { image: { image: BUSYBOX } });
    pod = await newPod('streams');
    worker = await runContainer(d.client, pod.id, pod.config, containerConfig('worker', BUSYBOX, ['sleep', '3600']));
  });

  after(async () => {
    await d?.cleanup();
    await reg?.stop();
    if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
  });

  async function newPod(name: string) {
    const config = sandboxConfig(name, path.join(logDir, name));
    const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
    return { id: pod_sandbox_id as string, config };
  }

  async function execUrl(cmd: string[], opts: { stdin?: boolean; tty?: boolean; stderr?: boolean } = {}, container = worker): Promise<string> {
    const res = await d.client.runtime('Exec', {
      container_id: container,
      cmd,
      stdin: opts.stdin ?? false,
      stdout: true,
      stderr: opts.stderr ?? !opts.tty,
      tty: opts.tty ?? false,
    });
    return res.url as string;
  }

  async function expectCode(p: Promise<unknown>, code: grpc.status, mentions?: string) {
    await assert.rejects(p, (err: grpc.ServiceError) => {
      assert.equal(err.code, code, `want ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
      if (mentions) assert.match(err.details, new RegExp(mentions));
      return true;
    });
  }

  test('Exec/Attach/PortForward validate their requests', async () => {
    await expectCode(d.client.runtime('Exec', { container_id: 'nope', cmd: ['true'], stdout: true }), grpc.status.NOT_FOUND, 'nope');
    await expectCode(d.client.runtime('Exec', { container_id: worker, cmd: ['true'] }), grpc.status.INVALID_ARGUMENT, 'stdin, stdout or stderr');
    await expectCode(d.client.runtime('Exec', { container_id: worker, cmd: ['true'], stdout: true, stderr: true, tty: true }), grpc.status.INVALID_ARGUMENT, 'tty');
    await expectCode(d.client.runtime('Attach', { container_id: 'gone', stdout: true }), grpc.status.NOT_FOUND, 'gone');
    await expectCode(d.client.runtime('PortForward', { pod_sandbox_id: 'nosuchpod', port: [80] }), grpc.status.NOT_FOUND, 'nosuchpod');
    const quick = await runContainer(d.client, pod.id, pod.config, containerConfig('quick', BUSYBOX, ['true']));
    await waitFor('quick to exit', async () => (await d.client.runtime('ContainerStatus', { container_id: quick })).status.state === 'CONTAINER_EXITED');
    await expectCode(d.client.runtime('Exec', { container_id: quick, cmd: ['true'], stdout: true }), grpc.status.FAILED_PRECONDITION, 'not running');
    const url = await execUrl(['true']);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]{20,}$/);
  });

  test('unknown and used tokens are refused with 404', async () => {
    for (const family of FAMILIES) {
      const url = await execUrl(['echo', 'once']);
      const bad = url.replace(/\/exec\/.*$/, '/exec/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
      await assert.rejects(openRemoteCommand({ url: bad, family, stdin: false, stdout: true, stderr: true, tty: false }), (err: unknown) => {
        assert.ok(err instanceof StreamUpgradeError, String(err));
        assert.equal(err.statusCode, 404);
        return true;
      });
      const first = await execCollect(url, family);
      assert.equal(first.stdout, 'once\n');
      await assert.rejects(execCollect(url, family), (err: unknown) => err instanceof StreamUpgradeError && err.statusCode === 404);
    }
    const plain = await fetch((await execUrl(['true'])).replace(/[^/]+$/, 'bogus'));
    assert.equal(plain.status, 404);
  });

  for (const family of FAMILIES) {
    test(`${family}: exec echo, stdout and stderr apart, protocol negotiated`, async () => {
      const res = await execCollect(await execUrl(['sh', '-c', 'echo hello; echo oops >&2']), family);
      assert.equal(res.exitCode, 0, res.message);
      assert.equal(res.stdout, 'hello\n');
      assert.equal(res.stderr, 'oops\n');
      assert.equal(res.protocol, family === 'spdy' ? 'v4.channel.k8s.io' : 'v5.channel.k8s.io');
    });

    test(`${family}: exec with stdin piped to cat`, async () => {
      const input = 'line one\nline two\n' + 'x'.repeat(100_000) + '\n';
      const res = await execCollect(await execUrl(['cat'], { stdin: true }), family, { input });
      assert.equal(res.exitCode, 0, res.message);
      assert.equal(res.stdout, input);
    });

    test(`${family}: exit code 7 comes back in the Status`, async () => {
      const res = await execCollect(await execUrl(['sh', '-c', 'echo bye; exit 7']), family);
      assert.equal(res.exitCode, 7);
      assert.match(res.message ?? '', /non-zero exit code/);
      assert.equal(res.stdout, 'bye\n');
    });

    test(`${family}: TTY execs in a row each see a sized terminal and end lines in exactly CR LF`, async () => {
      // The terminal's size and line discipline are set before the command runs: its first output is
      // translated once, and `stty size` never finds a 0x0 terminal. (They used to race, one exec in five.)
      const outputs: string[] = [];
      for (let i = 0; i < 15; i++) {
        const res = await execCollect(await execUrl(['sh', '-c', 'stty size; echo over-a-tty'], { tty: true }), family, { tty: true });
        assert.equal(res.exitCode, 0, res.message);
        outputs.push(res.stdout);
      }
      assert.deepEqual(outputs, Array(15).fill('24 80\r\nover-a-tty\r\n'));
    });

    test(`${family}: exec with a TTY follows a resize`, async () => {
      const session = await openRemoteCommand({ url: await execUrl(['sh'], { stdin: true, tty: true }), family, stdin: true, stdout: true, stderr: false, tty: true });
      let out = '';
      session.stdout.on('data', (c: Buffer) => (out += c.toString()));
      session.resize({ width: 123, height: 45 });
      await waitTerminalSize(session.stdin, () => out, 45, 123);
      session.stdin.write('tty\n');
      await waitFor('tty to name the terminal', () => /\/dev\/pts\/\d+/.test(out), 10_000);
      session.resize({ width: 77, height: 22 });
      await waitTerminalSize(session.stdin, () => out, 22, 77);
      session.stdin.write('exit 3\n');
      const outcome = await withTimeout(session.done, 10_000, 'the tty exec to end');
      assert.equal(outcome.exitCode, 3);
    });

    test(`${family}: two execs at once`, async () => {
      const [a, b] = await Promise.all([
        execCollect(await execUrl(['sh', '-c', 'sleep 0.5; echo first']), family),
        execCollect(await execUrl(['sh', '-c', 'sleep 0.5; echo second']), family),
      ]);
      assert.equal(a.stdout, 'first\n');
      assert.equal(b.stdout, 'second\n');
    });

    for (const tty of [false, true]) {
      test(`${family}: a client gone mid-exec leaves no process behind (tty ${tty})`, async () => {
        const marker = String(4240 + (family === 'spdy' ? 0 : 2) + (tty ? 1 : 0));
        const url = await execUrl(['sleep', marker], { stdin: true, tty });
        const session = await openRemoteCommand({ url, family, stdin: true, stdout: true, stderr: !tty, tty });
        const ps = async () => (await d.client.runtime('ExecSync', { container_id: worker, cmd: ['ps'], timeout: 10 })).stdout.toString() as string;
        await waitFor('the exec to run', async () => (await ps()).includes(`sleep ${marker}`));
        session.close();
        await waitFor('the exec to be killed', async () => !(await ps()).includes(`sleep ${marker}`));
      });
    }
  }

  test('older subprotocols: SPDY v3 and v2 report exits as text, base64 WebSocket, unknown protocols refused', async () => {
    for (const protocol of ['v3.channel.k8s.io', 'v2.channel.k8s.io']) {
      const res = await execCollect(await execUrl(['sh', '-c', 'echo old; exit 7']), 'spdy', { protocols: [protocol] });
      assert.equal(res.protocol, protocol);
      assert.equal(res.stdout, 'old\n');
      assert.equal(res.exitCode, 7);
      const ok = await execCollect(await execUrl(['true']), 'spdy', { protocols: [protocol] });
      assert.equal(ok.exitCode, 0);
    }
    const v4 = await execCollect(await execUrl(['sh', '-c', 'exit 7']), 'websocket', { protocols: ['v4.channel.k8s.io'] });
    assert.equal(v4.protocol, 'v4.channel.k8s.io');
    assert.equal(v4.exitCode, 7);
    await assert.rejects(execCollect(await execUrl(['true']), 'spdy', { protocols: ['v9.channel.k8s.io'] }), (err: unknown) => err instanceof StreamUpgradeError && err.statusCode === 403);
    await assert.rejects(execCollect(await execUrl(['true']), 'websocket', { protocols: ['v9.channel.k8s.io'] }), (err: unknown) => err instanceof StreamUpgradeError && err.statusCode === 400);
    // base64.channel.k8s.io: an ASCII channel digit, then base64 text.
    const { WebSocket } = await import('ws');
    const ws = new WebSocket((await execUrl(['echo', 'b64'])).replace(/^http/, 'ws'), ['base64.channel.k8s.io']);
    const messages: string[] = [];
    ws.on('message', (m: Buffer) => messages.push(m.toString()));
    await new Promise((resolve) => ws.once('close', resolve));
    const stdout = messages.filter((m) => m[0] === '1').map((m) => Buffer.from(m.slice(1), 'base64').toString()).join('');
    assert.equal(stdout, 'b64\n');
  });

  test('attach to a container printing lines, write to its stdin, detach leaves it running', async () => {
    const talker = await runContainer(
      d.client,
      pod.id,
      pod.config,
      containerConfig('talker', BUSYBOX, ['sh', '-c', '(while true; do echo tick; sleep 0.3; done) & while read l; do echo got:$l; done'], { stdin: true, stdin_once: false }),
    );
    for (const family of FAMILIES) {
      const { url } = await d.client.runtime('Attach', { container_id: talker, stdin: true, stdout: true, stderr: true, tty: false });
      const session = await openRemoteCommand({ url, family, stdin: true, stdout: true, stderr: true, tty: false });
      await readUntil(session.stdout, /tick/);
      const reply = readUntil(session.stdout, new RegExp(`got:hello-${family}`));
      session.stdin.write(`hello-${family}\n`);
      await reply;
      session.close();
    }
    // Detaching closed neither the container nor its stdin: a new attach still gets answers.
    const { url } = await d.client.runtime('Attach', { container_id: talker, stdin: true, stdout: true, stderr: true, tty: false });
    const again = await openRemoteCommand({ url, family: 'websocket', stdin: true, stdout: true, stderr: true, tty: false });
    const reply = readUntil(again.stdout, /got:after-detach/);
    again.stdin.write('after-detach\n');
    await reply;
    again.close();
    const { status } = await d.client.runtime('ContainerStatus', { container_id: talker });
    assert.equal(status.state, 'CONTAINER_RUNNING');
  });

  test('attach to a TTY container: resize reaches its terminal', async () => {
    const shell = await runContainer(
      d.client,
      pod.id,
      pod.config,
      containerConfig('shell', BUSYBOX, ['sh'], { stdin: true, stdin_once: false, tty: true }),
    );
    for (const family of FAMILIES) {
      const { url } = await d.client.runtime('Attach', { container_id: shell, stdin: true, stdout: true, stderr: false, tty: true });
      const session = await openRemoteCommand({ url, family, stdin: true, stdout: true, stderr: false, tty: true });
      let out = '';
      session.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const size = family === 'spdy' ? { width: 101, height: 33 } : { width: 88, height: 29 };
      session.resize(size);
      await waitTerminalSize(session.stdin, () => out, size.height, size.width);
      session.close();
    }
    const { status } = await d.client.runtime('ContainerStatus', { container_id: shell });
    assert.equal(status.state, 'CONTAINER_RUNNING');
  });

  test('port-forward to a busybox httpd in a pod, several connections, an error when nothing listens', async () => {
    const web = await newPod('pf-web');
    await runContainer(d.client, web.id, web.config, containerConfig('httpd', BUSYBOX, ['httpd', '-f', '-p', '8080', '-h', '/etc']));
    const pfUrl = async () => (await d.client.runtime('PortForward', { pod_sandbox_id: web.id, port: [8080] })).url as string;
    await waitFor(
      'httpd to answer',
      async () => {
        const r = await fetchThroughPortForward(await pfUrl(), 'spdy', 8080, '/hostname');
        return r.response.includes('200 OK');
      },
      15_000,
    );
    for (const family of FAMILIES) {
      const res = await fetchThroughPortForward(await pfUrl(), family, 8080, '/hostname');
      assert.equal(res.error, '');
      assert.match(res.response, /^HTTP\/1\.[01] 200 OK/);
      assert.match(res.response, /\r\n\r\npf-web\n?$/);
    }
    // SPDY: several connections, to several ports, over one session.
    const session = await openPortForward({ url: await pfUrl(), family: 'spdy' });
    const dials = [session.dial(8080), session.dial(8080), session.dial(9)];
    const responses = await Promise.all(
      dials.slice(0, 2).map(
        ({ data }) =>
          new Promise<string>((resolve) => {
            let text = '';
            data.on('data', (c: Buffer) => (text += c.toString()));
            data.once('end', () => resolve(text));
            data.write('GET /hostname HTTP/1.0\r\n\r\n');
          }),
      ),
    );
    for (const r of responses) assert.match(r, /pf-web/);
    const refused = await withTimeout(dials[2]!.error, 10_000, 'the error for a closed port');
    assert.match(refused, /error forwarding port 9 to pod .*connection refused/);
    session.close();
    // WebSocket: the error channel names a port nothing listens on.
    const ws = await fetchThroughPortForward(
      (await d.client.runtime('PortForward', { pod_sandbox_id: web.id, port: [9] })).url,
      'websocket',
      9,
      '/',
    );
    assert.match(ws.error, /error forwarding port 9 .*connection refused/);
  });

  test('port-forward over WebSocket tunnelling SPDY (critest -websocket-portforward): SPDY/3.1+portforward.k8s.io is accepted and answered', async () => {
    const url = (await d.client.runtime('PortForward', { pod_sandbox_id: pod.id, port: [80] })).url as string;
    // client-go offers the tunnel first; the '/' in its name is not an RFC 7230 token (ws alone answered 400).
    const { status, head, conn } = await rawUpgrade(url, {
      Upgrade: 'websocket',
      Connection: 'Upgrade',
      'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
      'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Protocol': 'SPDY/3.1+portforward.k8s.io, v2.portforward.k8s.io',
    });
    conn.destroy();
    assert.equal(status, 101, head);
    assert.match(head, /\r\nSec-WebSocket-Protocol: SPDY\/3\.1\+portforward\.k8s\.io(\r\n|$)/i);
  });
});
}
