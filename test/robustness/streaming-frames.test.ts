// Malformed WebSocket and SPDY frames, oversized header blocks and a flood of stdin, sent with raw
// sockets to every streaming endpoint (exec, attach, port-forward) of a real daemon. Only the session
// that broke the protocol may end, with the protocol's close code or GOAWAY; the daemon keeps
// answering CRI calls, sessions already open keep working, a fresh exec works, and its memory stays
// bounded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitFor } from '../helpers/pods.js';
import { FAMILIES, execCollect, readUntil, withTimeout } from '../helpers/stream-clients.js';
import { openRemoteCommand, type RemoteCommandSession } from '../../src/streaming/client.js';
import { SpdySession } from '../../src/streaming/spdy.js';
import {
  memoryOf,
  rawSpdy,
  rawWebSocket,
  resetPeakRss,
  spdyBomb,
  spdyCompress,
  spdyControl,
  spdyEncoder,
  spdyGoawayStatus,
  parseSpdyControlFrames,
  parseWsFrames,
  spdyHeaderBlock,
  spdySynStream,
  u32,
  wsCloseCode,
  wsCloseFrame,
  wsByteStream,
  wsFrame,
} from '../helpers/raw-streams.js';

const MiB = 1024 * 1024;

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;
let pod: { id: string; config: any };
let worker: string;
/** Sessions opened before the malformed frames, checked after them. */
const bystanders: Array<{ family: string; session: RemoteCommandSession }> = [];

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-robust-logs-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
  const config = sandboxConfig('robust', path.join(logDir, 'robust'));
  const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
  pod = { id: pod_sandbox_id as string, config };
  worker = await runContainer(d.client, pod.id, pod.config, containerConfig('worker', BUSYBOX, ['sleep', '3600']));
  // Something to port-forward to that keeps a connection open while frames arrive.
  await runContainer(d.client, pod.id, pod.config, containerConfig('httpd', BUSYBOX, ['httpd', '-f', '-p', '8080', '-h', '/etc']));
});

after(async () => {
  for (const b of bystanders) b.session.close();
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

async function execUrl(cmd: string[], stdin = false): Promise<string> {
  return (await d.client.runtime('Exec', { container_id: worker, cmd, stdin, stdout: true, stderr: true, tty: false })).url as string;
}

interface Endpoint {
  name: string;
  url(): Promise<string>;
  ws: string;
  spdy: string;
}

const ENDPOINTS: Endpoint[] = [
  { name: 'exec', url: () => execUrl(['sleep', '30'], true), ws: 'v5.channel.k8s.io', spdy: 'v4.channel.k8s.io' },
  {
    name: 'attach',
    url: async () => (await d.client.runtime('Attach', { container_id: worker, stdout: true, stderr: true })).url as string,
    ws: 'v5.channel.k8s.io',
    spdy: 'v4.channel.k8s.io',
  },
  {
    name: 'port-forward',
    url: async () => (await d.client.runtime('PortForward', { pod_sandbox_id: pod.id, port: [8080] })).url as string,
    ws: 'v2.portforward.k8s.io',
    spdy: 'portforward.k8s.io',
  },
];

function endpointUrl(name: string): Promise<string> {
  return ENDPOINTS.find((e) => e.name === name)!.url();
}

/** The daemon is up, answers CRI, and a fresh exec works over both families. */
async function assertDaemonServes(): Promise<void> {
  assert.equal(d.proc.exitCode, null, 'the daemon exited');
  assert.equal(d.proc.signalCode, null, 'the daemon was killed');
  const version = await d.client.runtime('Version', {});
  assert.equal(version.runtime_name, 'nodelet');
  for (const family of FAMILIES) {
    const res = await execCollect(await execUrl(['echo', 'fresh']), family);
    assert.equal(res.exitCode, 0, res.message);
    assert.equal(res.stdout, 'fresh\n');
  }
}

/** The sessions opened before are still open and echo what they get. */
async function assertBystandersWork(): Promise<void> {
  for (const { family, session } of bystanders) {
    const word = `still-${family}-${randomBytes(3).toString('hex')}`;
    const seen = readUntil(session.stdout, new RegExp(word), 10_000);
    session.stdin.write(`${word}\n`);
    await seen;
  }
}

test('open two long sessions (websocket and spdy) that must outlive every malformed one', async () => {
  for (const family of FAMILIES) {
    const session = await openRemoteCommand({ url: await execUrl(['cat'], true), family, stdin: true, stdout: true, stderr: true, tty: false });
    session.stderr.resume();
    bystanders.push({ family, session });
  }
  await assertBystandersWork();
});

const text = (s: string): Buffer => Buffer.from(s);
const WS_CASES: Array<{ name: string; bytes: () => Buffer; code: number }> = [
  { name: 'reserved data opcode 0x3', bytes: () => wsFrame({ opcode: 0x3, payload: text('\x00x') }), code: 1002 },
  { name: 'reserved control opcode 0xB', bytes: () => wsFrame({ opcode: 0xb }), code: 1002 },
  { name: 'RSV1 set without an extension', bytes: () => wsFrame({ opcode: 0x2, rsv: 0x40, payload: text('\x00x') }), code: 1002 },
  { name: 'RSV2 and RSV3 set', bytes: () => wsFrame({ opcode: 0x2, rsv: 0x30, payload: text('\x00x') }), code: 1002 },
  { name: 'unmasked client frame', bytes: () => wsFrame({ opcode: 0x2, mask: false, payload: text('\x00x') }), code: 1002 },
  { name: 'payload length 2^62', bytes: () => wsFrame({ opcode: 0x2, claimedLength: 2n ** 62n }), code: 1009 },
  { name: 'payload length 2^63 (top bit set)', bytes: () => wsFrame({ opcode: 0x2, claimedLength: 2n ** 63n }), code: 1009 },
  { name: 'message over the 32 MiB limit', bytes: () => wsFrame({ opcode: 0x2, claimedLength: BigInt(33 * MiB) }), code: 1009 },
  { name: 'close code 1005 (reserved)', bytes: () => wsCloseFrame(1005), code: 1002 },
  { name: 'close code 999 (out of range)', bytes: () => wsCloseFrame(999), code: 1002 },
  { name: 'close frame with a 1-byte payload', bytes: () => wsFrame({ opcode: 0x8, payload: Buffer.from([3]) }), code: 1002 },
  { name: 'invalid UTF-8 in a text frame', bytes: () => wsFrame({ opcode: 0x1, payload: Buffer.from([0x30, 0xc3, 0x28]) }), code: 1007 },
  { name: 'invalid UTF-8 in a close reason', bytes: () => wsCloseFrame(1000, Buffer.from([0xff, 0xfe, 0xfd])), code: 1007 },
  { name: 'fragmented ping', bytes: () => wsFrame({ opcode: 0x9, fin: false, payload: text('p') }), code: 1002 },
  { name: 'ping longer than 125 bytes', bytes: () => wsFrame({ opcode: 0x9, payload: Buffer.alloc(126) }), code: 1002 },
  { name: 'continuation with no message begun', bytes: () => wsFrame({ opcode: 0x0, payload: text('\x00x') }), code: 1002 },
  {
    name: 'new data frame inside a fragmented message',
    bytes: () => Buffer.concat([wsFrame({ opcode: 0x2, fin: false, payload: text('\x00a') }), wsFrame({ opcode: 0x2, payload: text('\x00b') })]),
    code: 1002,
  },
];

for (const endpoint of ENDPOINTS) {
  test(`websocket ${endpoint.name}: ${WS_CASES.length} malformed frames each end only their session, with the right close code`, async () => {
    for (const c of WS_CASES) {
      const conn = await rawWebSocket(await endpoint.url(), endpoint.ws);
      try {
        await conn.write(c.bytes());
        const code = await conn.waitFor(`a close frame after "${c.name}"`, (buf) => wsCloseCode(buf));
        assert.equal(code, c.code, `${endpoint.name}, ${c.name}: close code`);
        await conn.waitClosed();
      } finally {
        conn.destroy();
      }
    }
    await assertDaemonServes();
    await assertBystandersWork();
  });
}

const SPDY_CASES: Array<{ name: string; bytes: () => Buffer | Promise<Buffer>; goaway?: boolean }> = [
  { name: 'control frame of SPDY version 2', bytes: () => spdyControl(4, u32(0), { version: 2 }) },
  { name: 'control frame claiming 16 MiB (only its header sent)', bytes: () => spdyControl(1, Buffer.alloc(0), { claimedLength: 0xffffff }) },
  // The server stops reading at the length; what it left unread may turn its close into a reset.
  { name: 'SYN_STREAM with a 1 MiB compressed header block', bytes: () => spdySynStream(1, randomBytes(MiB)), goaway: false },
  { name: 'SYN_STREAM whose header block is not zlib', bytes: () => spdySynStream(1, text('this is not a zlib stream at all')) },
  { name: 'SYN_STREAM whose header block inflates to 200 MiB', bytes: () => spdyBomb(200 * MiB).then((block) => spdySynStream(1, block)) },
  { name: 'SYN_STREAM shorter than its fixed fields', bytes: () => spdyControl(1, Buffer.alloc(4)) },
  { name: 'header block claiming 2^32-1 headers', bytes: () => spdySynStream(1, spdyCompress(u32(0xffffffff))) },
  { name: 'header name length running past the block', bytes: () => spdySynStream(1, spdyCompress(Buffer.concat([u32(1), u32(1000), text('abc')]))) },
  { name: 'SYN_STREAM for stream 0', bytes: () => spdySynStream(0, spdyCompress(spdyHeaderBlock({ streamtype: 'error' }))) },
  { name: 'RST_STREAM of 2 bytes', bytes: () => spdyControl(3, Buffer.alloc(2)) },
  { name: 'PING of 0 bytes', bytes: () => spdyControl(6, Buffer.alloc(0)) },
];

for (const endpoint of ENDPOINTS) {
  test(`spdy ${endpoint.name}: ${SPDY_CASES.length} malformed frames and oversized header blocks each end only their session (GOAWAY PROTOCOL_ERROR)`, async () => {
    const pid = d.proc.pid!;
    const before = await memoryOf(pid);
    await resetPeakRss(pid);
    for (const c of SPDY_CASES) {
      const conn = await rawSpdy(await endpoint.url(), endpoint.spdy);
      try {
        const bytes = await c.bytes();
        void conn.write(bytes);
        if (c.goaway !== false) {
          const status = await conn.waitFor(`GOAWAY after "${c.name}"`, (buf) => spdyGoawayStatus(buf));
          assert.equal(status, 1, `${endpoint.name}, ${c.name}: GOAWAY status`);
        }
        await conn.waitClosed();
      } finally {
        conn.destroy();
      }
    }
    // The 200 MiB header block was cut at 256 KiB: the daemon's peak never came near it.
    const { hwm } = await memoryOf(pid);
    assert.ok(hwm - before.rss < 64 * MiB, `daemon peak RSS grew by ${((hwm - before.rss) / MiB).toFixed(1)} MiB`);
    await assertDaemonServes();
    await assertBystandersWork();
  });
}

test('websocket port-forward tunnelling SPDY (SPDY/3.1+portforward.k8s.io) is negotiated and forwards', async () => {
  const conn = await rawWebSocket(await endpointUrl('port-forward'), 'SPDY/3.1+portforward.k8s.io');
  const session = new SpdySession(wsByteStream(conn), 'client');
  try {
    const error = session.openStream({ streamtype: 'error', port: '8080', requestid: '0' });
    error.end();
    error.resume();
    const data = session.openStream({ streamtype: 'data', port: '8080', requestid: '0' });
    const response = readUntil(data, /^HTTP\/1\.[01] \d{3}/, 10_000);
    data.write('GET /hostname HTTP/1.0\r\nHost: localhost\r\n\r\n');
    await response;
  } finally {
    session.destroy();
  }
});

test(`websocket port-forward tunnelling SPDY (SPDY/3.1+portforward.k8s.io): the ${SPDY_CASES.length} malformed SPDY inputs end only their session`, async () => {
  const binary = (buf: Buffer): Buffer => Buffer.concat(parseWsFrames(buf).filter((f) => f.opcode === 0x2).map((f) => f.payload));
  for (const c of SPDY_CASES) {
    const conn = await rawWebSocket(await endpointUrl('port-forward'), 'SPDY/3.1+portforward.k8s.io');
    try {
      await conn.write(wsFrame({ opcode: 0x2, payload: await c.bytes() }));
      if (c.goaway !== false) {
        const status = await conn.waitFor(`GOAWAY after "${c.name}"`, (buf) => spdyGoawayStatus(binary(buf)));
        assert.equal(status, 1, `tunnel, ${c.name}: GOAWAY status`);
      }
      await conn.waitClosed();
    } finally {
      conn.destroy();
    }
  }
  await assertDaemonServes();
  await assertBystandersWork();
});

test('spdy: a 200 KiB header block is served, one of 300 KiB (over the 256 KiB cap) closes the session', async () => {
  const conn = await rawSpdy(await endpointUrl('port-forward'), 'portforward.k8s.io');
  const encoder = spdyEncoder();
  const fill = (n: number): Buffer => spdyHeaderBlock({ streamtype: 'error', port: '8080', requestid: String(n), 'x-fill': 'a'.repeat(n * 1024) });
  try {
    await conn.write(spdySynStream(1, await encoder.encode(fill(200))));
    await conn.waitFor('SYN_REPLY to the 200 KiB block', (buf) => (parseSpdyControlFrames(buf).some((f) => f.type === 2) ? true : undefined));
    await conn.write(spdySynStream(3, await encoder.encode(fill(300))));
    const status = await conn.waitFor('GOAWAY', (buf) => spdyGoawayStatus(buf));
    assert.equal(status, 1);
    await conn.waitClosed();
  } finally {
    encoder.close();
    conn.destroy();
  }
  await assertDaemonServes();
});

// ---- stdin flood into a slow reader ----

/** Reads its stdin 2 MiB at a time with a pause in between, then says how much it read (dd never reads ahead). */
const SLOW_READER = [
  'sh',
  '-c',
  'n=0; while true; do c=$(dd bs=65536 count=32 2>/dev/null | wc -c); [ "$c" -gt 0 ] || break; n=$((n+c)); sleep 0.02; done; echo "read $n"',
];

for (const family of FAMILIES) {
  test(`${family}: 208 MiB of exec stdin into a slow reader keeps the daemon's memory bounded`, async () => {
    const pid = d.proc.pid!;
    const total = Number(process.env.NODELET_FLOOD_MIB ?? 208) * MiB;
    const session = await openRemoteCommand({ url: await execUrl(SLOW_READER, true), family, stdin: true, stdout: true, stderr: true, tty: false });
    let out = '';
    let err = '';
    session.stdout.on('data', (c: Buffer) => (out += c.toString()));
    session.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const before = await memoryOf(pid);
    await resetPeakRss(pid);
    let maxRss = before.rss;
    const sampler = setInterval(() => {
      memoryOf(pid).then(
        (m) => (maxRss = Math.max(maxRss, m.rss)),
        () => undefined,
      );
    }, 100);
    const started = Date.now();
    try {
      const chunk = Buffer.alloc(64 * 1024, 0x78);
      await withTimeout(
        (async () => {
          for (let sent = 0; sent < total; sent += chunk.length) {
            if (!session.stdin.write(chunk)) await once(session.stdin, 'drain');
          }
          session.stdin.end();
        })(),
        120_000,
        'the stdin to be taken',
      );
      const outcome = await withTimeout(session.done, 60_000, 'the exec to finish');
      assert.equal(outcome.exitCode, 0, outcome.message);
    } finally {
      clearInterval(sampler);
      session.close();
    }
    const { hwm } = await memoryOf(pid);
    const grew = Math.max(hwm, maxRss) - before.rss;
    const seconds = (Date.now() - started) / 1000;
    process.stderr.write(`# ${family}: ${total / MiB} MiB of stdin in ${seconds.toFixed(1)} s; daemon RSS ${(before.rss / MiB).toFixed(0)} MiB, peak +${(grew / MiB).toFixed(1)} MiB\n`);
    assert.equal(out.trim(), `read ${total}`, `every byte reached the process (stderr: ${err})`);
    assert.ok(grew < 64 * MiB, `daemon peak RSS grew by ${(grew / MiB).toFixed(1)} MiB while ${total / MiB} MiB went through`);
    await waitFor('the daemon to answer', async () => (await d.client.runtime('Version', {})).version);
  });
}
