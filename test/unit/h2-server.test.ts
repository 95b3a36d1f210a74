// The builtin HTTP/2 gRPC server (src/cri/h2/) behind CriServer: frame, flow-control and status edge
// cases seen from a raw socket, and real grpc-js clients for large requests, streams and concurrency.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CriServer, type CallContext } from '../../src/cri/server.js';
import { criProto } from '../../src/cri/grpc.js';
import { NodeletError } from '../../src/common/errors.js';
import { ErrorCode, Flag, FrameType, Setting, frame, frameHeader, FRAME_HEADER, windowUpdateFrame, rstStreamFrame } from '../../src/cri/h2/frames.js';
import { encodeHeaders } from '../../src/cri/h2/hpack.js';
import { RawH2Client } from '../helpers/raw-h2.js';
import { BuiltinGrpcServer } from '../../src/cri/h2/server.js';
import { DEFAULT_LIMITS } from '../../src/cri/h2/connection.js';
import { connectCri, type CriClient } from '../helpers/cri-client.js';

const proto = criProto();
const RUNTIME = proto.runtime.v1.RuntimeService.service;
const IMAGE = proto.runtime.v1.ImageService.service;

let dir: string;
let socket: string;
let server: CriServer;
let client: CriClient;
let listSize = 200;
/** Resolved with the abort reason when a waiting handler's signal fires. */
const aborted = new Map<string, (reason: unknown) => void>();
let eventCount = 0;

function waitAbort(key: string, ctx: CallContext): Promise<never> {
  return new Promise((_, reject) => {
    ctx.signal.addEventListener('abort', () => {
      aborted.get(key)?.(ctx.signal.reason);
      reject(ctx.signal.reason);
    });
  });
}

function abortedPromise(key: string, ms = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${key}: the handler's signal did not fire`)), ms);
    aborted.set(key, (reason) => {
      clearTimeout(t);
      resolve(reason);
    });
  });
}

function container(i: number) {
  return { id: i.toString(16).padStart(64, 'c'), pod_sandbox_id: 'p'.repeat(64), metadata: { name: `container-${i}`, attempt: 0 }, labels: { app: 'x'.repeat(300) }, state: 'CONTAINER_RUNNING' };
}

function startServer(): CriServer {
  return new CriServer({
    socket,
    transport: 'builtin',
    runtime: {
      unary: {
        Version: async () => ({ version: '0.1.0', runtime_name: 'nodelet', runtime_version: '1', runtime_api_version: 'v1' }),
        ListContainers: async () => ({ containers: Array.from({ length: listSize }, (_, i) => container(i)) }),
        ContainerStatus: async (req: { container_id: string }, ctx) => {
          if (req.container_id.startsWith('wait')) return waitAbort(req.container_id, ctx);
          if (req.container_id === 'slow') return new Promise((r) => setTimeout(() => r({ status: { id: 'slow' } }), 300));
          throw new NodeletError('NotFound', `container "${req.container_id}": ünïcode 100% gone\nsecond line`);
        },
      },
      stream: {
        GetContainerEvents: async (_req, write, ctx) => {
          if (eventCount === 0) return waitAbort('events', ctx);
          for (let i = 0; i < eventCount; i++) await write({ container_id: `${i}:${'e'.repeat(1000)}`, container_event_type: 'CONTAINER_STARTED_EVENT', created_at: i });
        },
      },
    },
    image: {
      unary: {
        ImageStatus: async (req: { image: { image: string } }) => ({ image: { id: `len:${req.image.image.length}` } }),
      },
    },
  });
}

before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-h2-'));
  socket = path.join(dir, 'cri.sock');
  server = startServer();
  await server.start();
  client = connectCri(socket);
});

after(async () => {
  client.close();
  await server.stop(100);
  await fsp.rm(dir, { recursive: true, force: true });
});

const versionRequest = () => RUNTIME.Version.requestSerialize({ version: 'v1' });
const statusRequest = (id: string) => RUNTIME.ContainerStatus.requestSerialize({ container_id: id });
const header = (f: { headers?: Array<[string, string]> } | undefined, name: string) => f?.headers?.find(([n]) => n === name)?.[1];

test('a unary call: SETTINGS (1000 streams) and ACK, then response HEADERS, DATA and grpc-status 0 trailers', async () => {
  const c = await RawH2Client.connect(socket);
  try {
    c.request(1, '/runtime.v1.RuntimeService/Version', versionRequest());
    await c.until(() => c.ended(1));
    const settings = c.frames.find((f) => f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK))!;
    const values = new Map<number, number>();
    for (let at = 0; at < settings.payload.length; at += 6) values.set(settings.payload.readUInt16BE(at), settings.payload.readUInt32BE(at + 2));
    assert.equal(values.get(Setting.MAX_CONCURRENT_STREAMS), 1000);
    assert.ok(c.frames.some((f) => f.type === FrameType.SETTINGS && f.flags & Flag.ACK), 'our SETTINGS acknowledged');
    const [headers, data, trailers] = c.streamFrames(1);
    assert.equal(headers!.type, FrameType.HEADERS);
    assert.equal(header(headers, ':status'), '200');
    assert.equal(header(headers, 'content-type'), 'application/grpc');
    assert.equal(data!.type, FrameType.DATA);
    assert.deepEqual(RUNTIME.Version.responseDeserialize(c.messages(1)[0]!), { version: '0.1.0', runtime_name: 'nodelet', runtime_version: '1', runtime_api_version: 'v1' });
    assert.equal(trailers!.type, FrameType.HEADERS);
    assert.equal(trailers!.flags & Flag.END_STREAM, Flag.END_STREAM);
    assert.equal(header(trailers, 'grpc-status'), '0');
  } finally {
    c.close();
  }
});

test('an empty response message (every field default) is sent as its prefix alone, then the trailers', async () => {
  listSize = 0;
  for (let i = 0; i < 3; i++) assert.deepEqual((await client.runtime('ListContainers', {})).containers, []);
  const c = await RawH2Client.connect(socket);
  try {
    c.request(1, '/runtime.v1.RuntimeService/ListContainers', RUNTIME.ListContainers.requestSerialize({}));
    await c.until(() => c.ended(1));
    assert.deepEqual(c.messages(1).map((m) => m.length), [0]);
    assert.equal(c.status(1).code, '0');
  } finally {
    c.close();
  }
});

test('a request split over HEADERS + CONTINUATION, with priority, padding and an empty END_STREAM DATA, is one call', async () => {
  const c = await RawH2Client.connect(socket);
  try {
    const block = encodeHeaders([[':method', 'POST'], [':scheme', 'http'], [':path', '/runtime.v1.RuntimeService/Version'], [':authority', 'x'], ['content-type', 'application/grpc+proto'], ['x-long', 'l'.repeat(3000)]], false);
    const priority = Buffer.from([0, 0, 0, 0, 16]);
    const padded = (payload: Buffer, pad: number) => Buffer.concat([Buffer.from([pad]), payload, Buffer.alloc(pad)]);
    const message = versionRequest();
    const body = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
    c.write(Buffer.concat([
      frame(FrameType.HEADERS, Flag.PRIORITY | Flag.PADDED, 1, padded(Buffer.concat([priority, block.subarray(0, 1000)]), 7)),
      frame(FrameType.CONTINUATION, 0, 1, block.subarray(1000, 2000)),
      frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block.subarray(2000)),
      frame(FrameType.DATA, Flag.PADDED, 1, padded(body.subarray(0, 3), 20)),
      frame(FrameType.DATA, 0, 1, body.subarray(3)),
      frame(FrameType.DATA, Flag.END_STREAM, 1),
    ]));
    await c.until(() => c.ended(1));
    assert.equal(c.status(1).code, '0');
    assert.equal((RUNTIME.Version.responseDeserialize(c.messages(1)[0]!) as { runtime_name: string }).runtime_name, 'nodelet');
  } finally {
    c.close();
  }
});

test('PING is answered with an ACK carrying the same 8 bytes', async () => {
  const c = await RawH2Client.connect(socket);
  try {
    c.write(frame(FrameType.PING, 0, 0, Buffer.from('bdp-ping')));
    await c.until((fs) => fs.some((f) => f.type === FrameType.PING));
    const ping = c.frames.find((f) => f.type === FrameType.PING)!;
    assert.equal(ping.flags, Flag.ACK);
    assert.equal(ping.payload.toString(), 'bdp-ping');
  } finally {
    c.close();
  }
});

test('a response larger than the windows is sent as WINDOW_UPDATEs allow, in frames no larger than allowed', async () => {
  listSize = 200; // ~80 KB encoded: more than the connection's initial 65535
  const c = await RawH2Client.connect(socket, [[Setting.INITIAL_WINDOW_SIZE, 1000]]);
  const sent = () => c.streamFrames(1).filter((f) => f.type === FrameType.DATA).reduce((n, f) => n + f.payload.length, 0);
  const settle = () => new Promise((r) => setTimeout(r, 200));
  try {
    c.request(1, '/runtime.v1.RuntimeService/ListContainers', RUNTIME.ListContainers.requestSerialize({}));
    await c.until(() => sent() === 1000);
    await settle();
    assert.equal(sent(), 1000, 'the stream window (INITIAL_WINDOW_SIZE 1000) stops the response');
    c.write(windowUpdateFrame(1, 1 << 20));
    await c.until(() => sent() === 65_535);
    await settle();
    assert.equal(sent(), 65_535, 'then the connection window (65535, never raised) stops it');
    assert.equal(c.ended(1), false);
    c.write(windowUpdateFrame(0, 1 << 20));
    await c.until(() => c.ended(1));
    for (const f of c.streamFrames(1)) if (f.type === FrameType.DATA) assert.ok(f.payload.length <= 16_384, `DATA of ${f.payload.length} over the default frame size`);
    const res = RUNTIME.ListContainers.responseDeserialize(c.messages(1)[0]!) as { containers: unknown[] };
    assert.equal(res.containers.length, 200);
    assert.equal(c.status(1).code, '0');
  } finally {
    c.close();
  }
});

test('a larger MAX_FRAME_SIZE from the client is used for DATA', async () => {
  listSize = 200;
  const c = await RawH2Client.connect(socket, [[Setting.MAX_FRAME_SIZE, 40_000], [Setting.INITIAL_WINDOW_SIZE, 1 << 20]]);
  try {
    c.write(windowUpdateFrame(0, 1 << 20));
    c.request(1, '/runtime.v1.RuntimeService/ListContainers', RUNTIME.ListContainers.requestSerialize({}));
    await c.until(() => c.ended(1));
    const sizes = c.streamFrames(1).filter((f) => f.type === FrameType.DATA).map((f) => f.payload.length);
    assert.ok(Math.max(...sizes) > 16_384 && Math.max(...sizes) <= 40_000, `DATA sizes ${sizes}`);
  } finally {
    c.close();
  }
});

test('an unknown method and a grpc-encoding other than identity answer UNIMPLEMENTED, trailers only', async () => {
  const c = await RawH2Client.connect(socket);
  try {
    c.request(1, '/runtime.v1.RuntimeService/NoSuchCall', versionRequest());
    c.request(3, '/runtime.v1.RuntimeService/Version', versionRequest(), [['grpc-encoding', 'gzip']]);
    await c.until(() => c.ended(1) && c.ended(3));
    for (const id of [1, 3]) {
      const headers = c.streamFrames(id).filter((f) => f.type === FrameType.HEADERS);
      assert.equal(headers.length, 1, 'one HEADERS: trailers-only');
      assert.equal(headers[0]!.flags & Flag.END_STREAM, Flag.END_STREAM);
      assert.equal(header(headers[0], ':status'), '200');
      assert.equal(c.status(id).code, String(grpc.status.UNIMPLEMENTED));
      assert.equal(c.streamFrames(id).some((f) => f.type === FrameType.DATA), false);
    }
    assert.match(c.status(1).message!, /NoSuchCall/);
    assert.match(c.status(3).message!, /gzip/);
  } finally {
    c.close();
  }
});

test('errors map through toStatus; grpc-message is percent-encoded on the wire and decodes back', async () => {
  const c = await RawH2Client.connect(socket);
  try {
    c.request(1, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('abc'));
    await c.until(() => c.ended(1));
    assert.equal(c.status(1).code, String(grpc.status.NOT_FOUND));
    assert.equal(c.status(1).message, 'container "abc": %C3%BCn%C3%AFcode 100%25 gone%0Asecond line');
  } finally {
    c.close();
  }
  await assert.rejects(client.runtime('ContainerStatus', { container_id: 'abc' }), (err: grpc.ServiceError) => {
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.equal(err.details, 'container "abc": ünïcode 100% gone\nsecond line');
    return true;
  });
});

test("the client's RST_STREAM and its grpc-timeout abort the handler's signal", async () => {
  const c = await RawH2Client.connect(socket);
  try {
    const reset = abortedPromise('wait-reset');
    c.request(1, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('wait-reset'));
    await new Promise((r) => setTimeout(r, 100));
    c.write(rstStreamFrame(1, ErrorCode.CANCEL));
    assert.ok((await reset) instanceof NodeletError);
    const timedOut = abortedPromise('wait-timeout');
    const t0 = Date.now();
    c.request(3, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('wait-timeout'), [['grpc-timeout', '200m']]);
    await timedOut;
    assert.ok(Date.now() - t0 >= 150, 'not before the deadline');
    await c.until(() => c.ended(3));
    assert.equal(c.status(3).code, String(grpc.status.DEADLINE_EXCEEDED));
    assert.equal(c.ended(1), false, 'nothing is sent on a reset stream');
  } finally {
    c.close();
  }
});

async function expectGoaway(c: RawH2Client, code: ErrorCode): Promise<void> {
  await c.until((fs) => fs.some((f) => f.type === FrameType.GOAWAY)).catch(() => undefined);
  const goaway = c.frames.find((f) => f.type === FrameType.GOAWAY);
  assert.ok(goaway, 'a GOAWAY before the close');
  assert.equal(goaway.payload.readUInt32BE(4), code);
  await c.untilClosed();
}

test('protocol errors answer GOAWAY and close the connection; the server serves the next one', async () => {
  const bad = await RawH2Client.connect(socket, [], false);
  bad.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await expectGoaway(bad, ErrorCode.PROTOCOL_ERROR);

  const big = await RawH2Client.connect(socket);
  const hdr = Buffer.alloc(FRAME_HEADER);
  frameHeader(hdr, 0, 20_000, FrameType.DATA, 0, 1);
  big.write(hdr);
  await expectGoaway(big, ErrorCode.FRAME_SIZE_ERROR);

  const even = await RawH2Client.connect(socket);
  even.write(frame(FrameType.HEADERS, Flag.END_HEADERS, 2, encodeHeaders([[':method', 'POST']], false)));
  await expectGoaway(even, ErrorCode.PROTOCOL_ERROR);

  const flood = await RawH2Client.connect(socket);
  flood.write(frame(FrameType.HEADERS, 0, 1, encodeHeaders([['x-a', 'a'.repeat(16_000)]], false)));
  for (let i = 0; i < 5; i++) flood.write(frame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(16_000, 0x41)));
  await expectGoaway(flood, ErrorCode.ENHANCE_YOUR_CALM);

  const garbage = await RawH2Client.connect(socket);
  garbage.write(frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
  await expectGoaway(garbage, ErrorCode.COMPRESSION_ERROR);

  assert.equal((await client.runtime('Version', {})).runtime_name, 'nodelet');
});

test('requests up to 16 MiB arrive whole (window updates as read); larger ones are RESOURCE_EXHAUSTED', async () => {
  const name = 'i'.repeat(15 * 1024 * 1024);
  assert.equal((await client.image('ImageStatus', { image: { image: name } })).image.id, `len:${name.length}`);
  await assert.rejects(client.image('ImageStatus', { image: { image: 'i'.repeat(17 * 1024 * 1024) } }), (err: grpc.ServiceError) => err.code === grpc.status.RESOURCE_EXHAUSTED);
  assert.equal((await client.runtime('Version', {})).runtime_name, 'nodelet', 'the connection is still good');
});

test('server streaming: 3000 messages of 1 KB arrive in order; a cancelled stream aborts its handler', async () => {
  eventCount = 3000;
  const got: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const s = client.runtimeStream('GetContainerEvents', {});
    s.on('data', (e: { container_id: string }) => got.push(e.container_id.split(':')[0]!));
    s.on('error', reject);
    s.on('end', resolve);
  });
  assert.equal(got.length, 3000);
  assert.deepEqual(got.slice(0, 3), ['0', '1', '2']);
  assert.equal(got.at(-1), '2999');

  eventCount = 0;
  const abortedEvents = abortedPromise('events');
  const s = client.runtimeStream('GetContainerEvents', {});
  s.on('error', () => undefined);
  await new Promise((r) => setTimeout(r, 100));
  s.cancel();
  await abortedEvents;
});

test('300 concurrent calls on one connection all succeed', async () => {
  listSize = 20;
  const results = await Promise.all(Array.from({ length: 300 }, (_, i) => (i % 2 ? client.runtime('Version', {}) : client.runtime('ListContainers', {}))));
  assert.equal(results.filter((r) => r.runtime_name === 'nodelet').length, 150);
  assert.equal(results.filter((r) => r.containers?.length === 20).length, 150);
});

test('stop(grace): GOAWAY, the running call finishes, the connection closes, the socket is removed', async () => {
  const s2 = path.join(dir, 'stop.sock');
  const other = new CriServer({ socket: s2, transport: 'builtin', runtime: { unary: { ContainerStatus: async () => new Promise((r) => setTimeout(() => r({ status: { id: 'slow' } }), 300)) } }, image: { unary: {} } });
  await other.start();
  const c = await RawH2Client.connect(s2);
  try {
    c.request(1, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('slow'));
    await new Promise((r) => setTimeout(r, 50));
    const stopped = other.stop(5000);
    await c.until((fs) => fs.some((f) => f.type === FrameType.GOAWAY));
    const goaway = c.frames.find((f) => f.type === FrameType.GOAWAY)!;
    assert.equal(goaway.payload.readUInt32BE(0), 1, 'last stream id: the running call');
    assert.equal(goaway.payload.readUInt32BE(4), ErrorCode.NO_ERROR);
    await c.until(() => c.ended(1));
    assert.equal(c.status(1).code, '0');
    await c.untilClosed();
    await stopped;
    await assert.rejects(fsp.stat(s2), /ENOENT/);
  } finally {
    c.close();
  }
});

test('a connection that sends no preface and SETTINGS in time is closed with GOAWAY; one that does stays', async () => {
  const s3 = path.join(dir, 'handshake.sock');
  const quick = new BuiltinGrpcServer({ ...DEFAULT_LIMITS, handshakeMs: 200 });
  await quick.listen(s3);
  try {
    const silent = await RawH2Client.connect(s3, [], false);
    const polite = await RawH2Client.connect(s3);
    await expectGoaway(silent, ErrorCode.PROTOCOL_ERROR);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(polite.closed, false);
    polite.close();
  } finally {
    await quick.stop(100);
  }
});

test('a client that keeps sending PINGs without reading the ACKs is dropped once the unsent bytes pass the bound', async () => {
  const s4 = path.join(dir, 'flood.sock');
  const small = new BuiltinGrpcServer({ ...DEFAULT_LIMITS, maxUnsentBytes: 64 * 1024 });
  await small.listen(s4);
  try {
    const c = await RawH2Client.connect(s4);
    c.socket.pause(); // reads nothing until the server gave up on it
    const ping = frame(FrameType.PING, 0, 0, Buffer.alloc(8));
    c.write(Buffer.concat(Array.from({ length: 100_000 }, () => ping)));
    for (let i = 0; i < 200 && small.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(small.connectionCount, 0, 'the server dropped the connection');
    c.socket.resume();
    await c.untilClosed(10_000);
    assert.ok(c.frames.filter((f) => f.type === FrameType.PING).length < 100_000, 'not every ACK was sent');
  } finally {
    await small.stop(100);
  }
});

test('streams the client reset count against the stream limit until their handlers end', async () => {
  const s5 = path.join(dir, 'reset.sock');
  const limited = new BuiltinGrpcServer({ ...DEFAULT_LIMITS, maxConcurrentStreams: 2 });
  let running = 0;
  let most = 0;
  limited.addService(RUNTIME, {
    ContainerStatus: (_call: unknown, callback: (err: null, res: unknown) => void) => {
      most = Math.max(most, ++running);
      setTimeout(() => {
        running--;
        callback(null, {});
      }, 300); // ignores the cancellation
    },
    GetContainerEvents: () => undefined, // never ends the call, as a stream handler on a cancelled call
  });
  await limited.listen(s5);
  const c = await RawH2Client.connect(s5);
  try {
    for (const id of [1, 3, 5, 7]) {
      c.request(id, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('x'));
      c.write(rstStreamFrame(id, ErrorCode.CANCEL));
    }
    await c.until((fs) => fs.filter((f) => f.type === FrameType.RST_STREAM).length === 2);
    const refused = c.frames.filter((f) => f.type === FrameType.RST_STREAM);
    assert.deepEqual(refused.map((f) => [f.stream, f.payload.readUInt32BE(0)]), [[5, ErrorCode.REFUSED_STREAM], [7, ErrorCode.REFUSED_STREAM]]);
    assert.equal(most, 2);
    await new Promise((r) => setTimeout(r, 400));
    c.request(9, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('x'));
    await c.until(() => c.ended(9));
    assert.equal(c.status(9).code, '0', 'once the handlers ended, new calls run');
    for (const id of [11, 13]) {
      c.request(id, '/runtime.v1.RuntimeService/GetContainerEvents', RUNTIME.GetContainerEvents.requestSerialize({}));
      c.write(rstStreamFrame(id, ErrorCode.CANCEL));
    }
    c.request(15, '/runtime.v1.RuntimeService/ContainerStatus', statusRequest('x'));
    await c.until(() => c.ended(15));
    assert.equal(c.status(15).code, '0', 'reset server streams do not hold slots');
  } finally {
    c.close();
    await limited.stop(100);
  }
});
