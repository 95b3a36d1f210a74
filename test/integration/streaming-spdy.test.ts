// Our SPDY/3.1 framer against an independent implementation (spdy-transport) over real TCP sockets:
// header compression with the SPDY dictionary, SYN_STREAM/SYN_REPLY, DATA with FIN, in both roles.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createRequire } from 'node:module';
import { SpdySession, type SpdyStream } from '../../src/streaming/spdy.js';

const require = createRequire(import.meta.url);
const transport = require('spdy-transport') as any;

function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    stream.on('data', (c: Buffer) => (text += c.toString()));
    stream.once('end', () => resolve(text));
    stream.once('error', reject);
  });
}

async function socketPair(): Promise<{ client: net.Socket; server: net.Socket; close: () => void }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const server = await accepted;
  return {
    client,
    server,
    close: () => {
      client.destroy();
      server.destroy();
      listener.close();
    },
  };
}

test('our SPDY client against a spdy-transport server', async () => {
  const { client, server, close } = await socketPair();
  try {
    const peer = transport.connection.create(server, { protocol: 'spdy', isServer: true });
    peer.start(3.1);
    const seen: Array<Record<string, string>> = [];
    peer.on('stream', (stream: any) => {
      seen.push(stream.headers);
      stream.respond(200, { answer: stream.headers.streamtype });
      void readAll(stream).then((text) => stream.end(`echo:${text}`));
    });
    const session = new SpdySession(client, 'client');
    // Several DATA frames, yet within the peer's 64 KiB initial window: like Go's spdystream (the kubelet's
    // and kubectl's SPDY), we do not hold sends for window updates, and spdy-transport resets a stream that
    // overflows its window (1 run in ~30 hung on 200 KB).
    const big = 'y'.repeat(60_000);
    const streams: SpdyStream[] = ['stdin', 'stdout'].map((t) => session.openStream({ ':method': 'POST', ':path': '/x', ':version': 'HTTP/1.1', ':host': 'h', ':scheme': 'http', streamtype: t }));
    streams[0]!.end('hello');
    streams[1]!.end(big);
    const [a, b] = await Promise.all(streams.map(readAll));
    assert.equal(a, 'echo:hello');
    assert.equal(b, `echo:${big}`);
    assert.deepEqual(seen.map((h) => h.streamtype).sort(), ['stdin', 'stdout']);
    const reply = await streams[0]!.replied;
    assert.equal(reply.answer, 'stdin');
  } finally {
    close();
  }
});

test('our SPDY server against a spdy-transport client', async () => {
  const { client, server, close } = await socketPair();
  try {
    const session = new SpdySession(server, 'server');
    session.on('stream', (stream) => {
      stream.respond({ ':status': '200', ':version': 'HTTP/1.1', got: stream.headers.streamtype ?? '' });
      void readAll(stream).then((text) => stream.end(`${stream.headers.streamtype}:${text.length}`));
    });
    const peer = transport.connection.create(client, { protocol: 'spdy', isServer: false });
    peer.start(3.1);
    const request = (type: string, body: string) =>
      new Promise<{ text: string; headers: Record<string, string> }>((resolve, reject) => {
        peer.request({ method: 'POST', path: '/', host: 'h', headers: { streamtype: type } }, (err: Error | null, stream: any) => {
          if (err) return reject(err);
          let headers: Record<string, string> = {};
          stream.on('response', (_code: number, h: Record<string, string>) => (headers = h));
          stream.end(body);
          void readAll(stream).then((text) => resolve({ text, headers }), reject);
        });
      });
    const results = await Promise.all([request('error', ''), request('stdin', 'z'.repeat(50_000)), request('resize', '{"Width":1,"Height":2}')]);
    assert.deepEqual(
      results.map((r) => r.text),
      ['error:0', 'stdin:50000', 'resize:22'],
    );
    assert.equal(results[1]!.headers.got, 'stdin');
  } finally {
    close();
  }
});
