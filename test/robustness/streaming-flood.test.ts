// Backpressure through attach and port-forward, and toward a client that does not read: a sender
// faster than the container's reader, or a command faster than the client, must be held back at
// the connection instead of piling up in the daemon. The daemon's peak RSS (VmHWM, reset before)
// stays bounded while far more than the bound goes through, and every byte still arrives.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitFor } from '../helpers/pods.js';
import { FAMILIES, withTimeout } from '../helpers/stream-clients.js';
import { openPortForward, openRemoteCommand } from '../../src/streaming/client.js';
import { memoryOf, rawSpdy, rawWebSocket, resetPeakRss, spdyEncoder, spdyHeaderBlock, spdySynStream, type RawConnection } from '../helpers/raw-streams.js';

const MiB = 1024 * 1024;
const TOTAL = 128 * MiB;
/** A terminal is slower (two ptys and runc's relay): less goes through, against a lower bound. */
const TTY_TOTAL = 64 * MiB;
const TTY_BOUND = 40 * MiB;
const BOUND = 64 * MiB;
/** How long a client reads nothing, and what the daemon's peak may grow by meanwhile. */
const HOLD_SECONDS = 8;
const HOLD_BOUND = 16 * MiB;
/** What the daemon's peak may grow by while an attached client reads none of a container's output. */
const ATTACH_BOUND = 32 * MiB;
/** Reads stdin 2 MiB at a time with a pause in between, saying how far it got after each. */
const SLOW_READER = 'n=0; while c=$(dd bs=65536 count=32 iflag=fullblock 2>/dev/null | wc -c); [ "$c" -gt 0 ]; do n=$((n+c)); echo "at $n"; sleep 0.02; done; echo "read $n"';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;
let pod: { id: string; config: any };
let worker: string;
const readers = new Map<string, string>();

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-robust-flood-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
  const config = sandboxConfig('flood', path.join(logDir, 'flood'));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  pod = { id: pod_sandbox_id as string, config };
  worker = await runContainer(d.client, pod.id, pod.config, containerConfig('worker', BUSYBOX, ['sleep', '3600']));
  for (const family of FAMILIES) {
    readers.set(family, await runContainer(d.client, pod.id, pod.config, containerConfig(`reader-${family}`, BUSYBOX, ['sh', '-c', SLOW_READER], { stdin: true })));
  }
  // A slow reader per connection on port 9000, answering over the connection.
  await runContainer(d.client, pod.id, pod.config, containerConfig('nc', BUSYBOX, ['nc', '-ll', '-p', '9000', '-e', 'sh', '-c', SLOW_READER]));
  await waitFor('nc to listen on 9000', async () => (await psCount('netstat -ltn | grep -c ":9000 "')) === 1, 20_000);
});

/** Runs `sh -c script` in the worker container and returns the number it prints. */
async function psCount(script: string): Promise<number> {
  const url = (await d.client.runtime('Exec', { container_id: worker, cmd: ['sh', '-c', `${script} || true`], stdout: true, stderr: true })).url as string;
  const s = await openRemoteCommand({ url, family: 'websocket', stdin: false, stdout: true, stderr: true, tty: false });
  let out = '';
  s.stdout.on('data', (c: Buffer) => (out += c.toString()));
  s.stderr.resume();
  await withTimeout(s.done, 10_000, script);
  return Number(out.trim());
}

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

/** Pushes `total` bytes into `to` as fast as it takes them, while tracking the daemon's peak RSS. */
async function flood(to: Writable, output: Readable, total: number, what: string): Promise<{ grew: number; seconds: number }> {
  const pid = d.proc.pid!;
  let tail = '';
  output.on('data', (c: Buffer) => (tail = (tail + c.toString()).slice(-200)));
  const before = await memoryOf(pid);
  await resetPeakRss(pid);
  const started = Date.now();
  const chunk = Buffer.alloc(64 * 1024, 0x78);
  await withTimeout(
    (async () => {
      for (let sent = 0; sent < total; sent += chunk.length) {
        if (!to.write(chunk)) await once(to, 'drain');
      }
    })(),
    120_000,
    `${what}: the input to be taken`,
  );
  await waitFor(`${what}: the reader to report ${total} bytes`, async () => new RegExp(`at ${total}\\r?\\n`).test(tail), 60_000).catch((err: Error) => {
    throw new Error(`${err.message}; last output ${JSON.stringify(tail)}`);
  });
  const { hwm } = await memoryOf(pid);
  const grew = hwm - before.rss;
  const seconds = (Date.now() - started) / 1000;
  process.stderr.write(`# ${what}: ${total / MiB} MiB in ${seconds.toFixed(1)} s, daemon peak RSS +${(grew / MiB).toFixed(1)} MiB\n`);
  return { grew, seconds };
}

for (const family of FAMILIES) {
  test(`${family} attach: ${TOTAL / MiB} MiB of stdin into a slow container keeps the daemon's memory bounded`, async () => {
    const url = (await d.client.runtime('Attach', { container_id: readers.get(family), stdin: true, stdout: true, stderr: true })).url as string;
    const session = await openRemoteCommand({ url, family, stdin: true, stdout: true, stderr: true, tty: false });
    session.stderr.resume();
    try {
      const { grew } = await flood(session.stdin, session.stdout, TOTAL, `${family} attach`);
      assert.ok(grew < BOUND, `daemon peak RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
    } finally {
      session.close();
    }
  });

  test(`${family} port-forward: ${TOTAL / MiB} MiB into a slow reader in the pod keeps the daemon's memory bounded`, async () => {
    const url = (await d.client.runtime('PortForward', { pod_sandbox_id: pod.id, port: [9000] })).url as string;
    const session = await openPortForward({ url, family, ports: [9000] });
    try {
      const { data } = session.dial(9000);
      const { grew } = await flood(data, data, TOTAL, `${family} port-forward`);
      assert.ok(grew < BOUND, `daemon peak RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
    } finally {
      session.close();
    }
  });
}

for (const family of FAMILIES) {
  test(`${family} exec with a TTY: ${TTY_TOTAL / MiB} MiB of stdin into a slow reader keeps the daemon's memory bounded`, async () => {
    const url = (await d.client.runtime('Exec', { container_id: worker, cmd: ['sh', '-c', `stty raw -echo; ${SLOW_READER}`], stdin: true, stdout: true, stderr: false, tty: true }))
      .url as string;
    const session = await openRemoteCommand({ url, family, stdin: true, stdout: true, stderr: false, tty: true });
    try {
      // The reader's terminal must be raw before the flood, or its line discipline would eat it.
      await waitFor('the terminal to be raw', async () => (await psCount('ps | grep -c "[d]d bs=65536"')) >= 1, 10_000);
      const { grew } = await flood(session.stdin, session.stdout, TTY_TOTAL, `${family} tty exec`);
      assert.ok(grew < TTY_BOUND, `daemon peak RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
    } finally {
      session.close();
    }
  });
}

/** An exec of 200 MiB of output whose client reads nothing: opened by hand so nothing reads for it. */
async function nonReadingExec(family: string, cmd: string[]): Promise<RawConnection> {
  const url = (await d.client.runtime('Exec', { container_id: worker, cmd, stdout: true, stderr: true })).url as string;
  if (family === 'websocket') return rawWebSocket(url, 'v5.channel.k8s.io');
  const conn = await rawSpdy(url, 'v4.channel.k8s.io');
  const encoder = spdyEncoder();
  // As kubectl: error, stdout, stderr, each closed at once from our side.
  let id = 1;
  for (const streamtype of ['error', 'stdout', 'stderr']) {
    await conn.write(spdySynStream(id, await encoder.encode(spdyHeaderBlock({ streamtype })), true));
    id += 2;
  }
  encoder.close();
  return conn;
}

for (const family of FAMILIES) {
  test(`${family}: a client that reads none of a command's output holds the command back, not the daemon's memory`, async () => {
    const pid = d.proc.pid!;
    const bytes = family === 'spdy' ? 200 * MiB : 200 * MiB + 1; // tells the two commands apart
    const running = (): Promise<number> => psCount(`ps | grep -c "[h]ead -c ${bytes} /dev/zero"`);
    const conn = await nonReadingExec(family, ['head', '-c', String(bytes), '/dev/zero']);
    try {
      conn.socket.pause();
      const before = await memoryOf(pid);
      await resetPeakRss(pid);
      // Unheld, the daemon takes the output from the pipe as fast as it comes, into its own memory.
      await new Promise((r) => setTimeout(r, HOLD_SECONDS * 1000));
      const { hwm } = await memoryOf(pid);
      const grew = hwm - before.rss;
      process.stderr.write(`# ${family} non-reading client: daemon peak RSS +${(grew / MiB).toFixed(1)} MiB over ${HOLD_SECONDS} s\n`);
      assert.ok(grew < HOLD_BOUND, `daemon peak RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
      assert.equal(await running(), 1, 'the command is held at its output while nobody reads it');
    } finally {
      conn.destroy();
    }
    // Dropping the connection kills the held-back command.
    await waitFor('the held-back exec to be killed', async () => (await running()) === 0, 20_000);
  });
}

/** Runs `sh -c script` in a container and resolves with its exit code. */
async function execIn(container: string, script: string): Promise<number> {
  const url = (await d.client.runtime('Exec', { container_id: container, cmd: ['sh', '-c', script], stdout: true, stderr: true })).url as string;
  const s = await openRemoteCommand({ url, family: 'websocket', stdin: false, stdout: true, stderr: true, tty: false });
  s.stdout.resume();
  s.stderr.resume();
  return (await withTimeout(s.done, 10_000, script)).exitCode ?? -1;
}

for (const family of FAMILIES) {
  test(`${family}: a container writing ${TOTAL / MiB} MiB to an attached client that reads nothing is not held back, nor is the daemon's memory`, async () => {
    const pid = d.proc.pid!;
    // Writes once told to (so the client is attached first), then says it is through.
    const flooder = await runContainer(d.client, pod.id, pod.config, containerConfig(`flooder-${family}`, BUSYBOX, [
      'sh', '-c', `while [ ! -e /flood-go ]; do sleep 0.05; done; head -c ${TOTAL} /dev/zero; touch /flood-done; sleep 3600`,
    ]));
    const url = (await d.client.runtime('Attach', { container_id: flooder, stdin: false, stdout: true, stderr: true })).url as string;
    const conn = family === 'websocket' ? await rawWebSocket(url, 'v5.channel.k8s.io') : await rawSpdy(url, 'v4.channel.k8s.io');
    try {
      if (family === 'spdy') {
        const encoder = spdyEncoder();
        let id = 1;
        for (const streamtype of ['error', 'stdout', 'stderr']) {
          await conn.write(spdySynStream(id, await encoder.encode(spdyHeaderBlock({ streamtype })), true));
          id += 2;
        }
        encoder.close();
      }
      conn.socket.pause();
      const before = await memoryOf(pid);
      await resetPeakRss(pid);
      assert.equal(await execIn(flooder, 'touch /flood-go'), 0);
      // conmon drops what a slow attach client can't take; the container and its log go on.
      await waitFor('the container to write all its output', async () => (await execIn(flooder, 'test -e /flood-done')) === 0, 60_000);
      const { hwm } = await memoryOf(pid);
      const grew = hwm - before.rss;
      process.stderr.write(`# ${family} attach, non-reading client: ${TOTAL / MiB} MiB written, daemon peak RSS +${(grew / MiB).toFixed(1)} MiB\n`);
      assert.ok(grew < ATTACH_BOUND, `daemon peak RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
    } finally {
      conn.destroy();
      await d.client.runtime('RemoveContainer', { container_id: flooder }).catch(() => undefined);
    }
  });
}
