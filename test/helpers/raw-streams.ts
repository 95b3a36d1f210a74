// Raw-socket clients for the streaming server, for sending what a well-behaved client never would:
// a WebSocket or SPDY/3.1 upgrade done by hand, frame builders that can break every rule, and a
// reader of what the server sends back (close codes, GOAWAY) until the connection ends.
import net from 'node:net';
import { Duplex } from 'node:stream';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';

const require = createRequire(import.meta.url);
export const SPDY3_DICTIONARY: Buffer = (require('spdy-transport/lib/spdy-transport/protocol/spdy/dictionary.js') as Record<number, Buffer>)[3]!;

/** A connection and everything it received; `closed` resolves when the server ended it. */
export class RawConnection {
  received: Buffer = Buffer.alloc(0);
  readonly closed: Promise<void>;
  isClosed = false;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket, initial: Buffer) {
    this.received = initial;
    socket.on('data', this.onData);
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  private readonly onData = (chunk: Buffer): void => {
    this.received = Buffer.concat([this.received, chunk]);
    this.wake();
  };

  /** Stops collecting: returns what was received so far; the caller reads the socket from here on. */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    const rest = this.received;
    this.received = Buffer.alloc(0);
    return rest;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with `test`'s answer once it gives one over the bytes received, or rejects after ms. */
  async waitFor<T>(what: string, test: (received: Buffer, closed: boolean) => T | undefined, ms = 10_000): Promise<T> {
    const until = Date.now() + ms;
    for (;;) {
      const v = test(this.received, this.isClosed);
      if (v !== undefined) return v;
      if (this.isClosed) throw new Error(`connection closed before ${what}; got ${this.received.length} bytes`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${this.received.length} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits (bounded) for the server to close the connection. */
  async waitClosed(ms = 10_000): Promise<void> {
    await this.waitFor('the server to close the connection', (_r, closed) => (closed ? true : undefined), ms).catch((err: Error) => {
      if (!this.isClosed) throw err;
    });
  }

  /** Writes, resolving when the socket took it (an error once the server hung up is ignored). */
  write(data: Buffer | string): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.write(data, () => resolve());
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Sends an HTTP upgrade request by hand; resolves with the status, the headers and the connection. */
export async function rawUpgrade(url: string, headers: Record<string, string>, method = 'GET'): Promise<{ status: number; head: string; conn: RawConnection }> {
  const u = new URL(url);
  const socket = net.connect(Number(u.port), u.hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const lines = [`${method} ${u.pathname}${u.search} HTTP/1.1`, `Host: ${u.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.write(lines.join('\r\n') + '\r\n\r\n');
  let buf = Buffer.alloc(0);
  const head = await new Promise<{ text: string; rest: Buffer }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no upgrade response within 10 s')), 10_000);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      resolve({ text: buf.subarray(0, end).toString('latin1'), rest: buf.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed during the upgrade: ${buf.toString('latin1')}`)));
  });
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head.text)?.[1] ?? 0);
  const conn = new RawConnection(socket, head.rest);
  socket.resume();
  return { status, head: head.text, conn };
}

export async function rawWebSocket(url: string, protocol: string): Promise<RawConnection> {
  const { status, head, conn } = await rawUpgrade(url, {
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Protocol': protocol,
  });
  if (status !== 101) throw new Error(`websocket upgrade refused: ${head}`);
  return conn;
}

export async function rawSpdy(url: string, protocol: string): Promise<RawConnection> {
  const { status, head, conn } = await rawUpgrade(
    url,
    { Upgrade: 'SPDY/3.1', Connection: 'Upgrade', 'X-Stream-Protocol-Version': protocol },
    'POST',
  );
  if (status !== 101) throw new Error(`spdy upgrade refused: ${head}`);
  return conn;
}

// ---- WebSocket frames ----

export interface WsFrameSpec {
  opcode: number;
  payload?: Buffer;
  fin?: boolean;
  /** RSV1..3 bits as 0x40, 0x20, 0x10. */
  rsv?: number;
  /** Client frames must be masked; false sends one unmasked. */
  mask?: boolean;
  /** Claims this length (as a 64-bit length) instead of the payload's. */
  claimedLength?: bigint;
}

export function wsFrame(spec: WsFrameSpec): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const mask = spec.mask ?? true;
  const b0 = ((spec.fin ?? true) ? 0x80 : 0) | (spec.rsv ?? 0) | spec.opcode;
  let head: Buffer;
  if (spec.claimedLength !== undefined) {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(spec.claimedLength, 2);
  } else if (payload.length < 126) {
    head = Buffer.alloc(2);
    head[1] = payload.length;
  } else if (payload.length < 65536) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(payload.length, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  head[0] = b0;
  if (!mask) return Buffer.concat([head, payload]);
  head[1]! |= 0x80;
  const key = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i]! ^= key[i % 4]!;
  return Buffer.concat([head, key, masked]);
}

export function wsCloseFrame(code: number, reason: Buffer = Buffer.alloc(0)): Buffer {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(code);
  return wsFrame({ opcode: 0x8, payload: Buffer.concat([p, reason]) });
}

/** Server frames (unmasked) parsed from the received bytes; a partial frame at the end is left out. */
export function parseWsFrames(buf: Buffer): Array<{ opcode: number; payload: Buffer }> {
  const frames: Array<{ opcode: number; payload: Buffer }> = [];
  let off = 0;
  while (off + 2 <= buf.length) {
    let len = buf[off + 1]! & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (p + 2 > buf.length) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (p + 8 > buf.length) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    if (p + len > buf.length) break;
    frames.push({ opcode: buf[off]! & 0x0f, payload: buf.subarray(p, p + len) });
    off = p + len;
  }
  return frames;
}

/** A byte stream over a client WebSocket: writes go out as masked binary messages, binary messages come in. */
export function wsByteStream(conn: RawConnection): Duplex {
  let buf = conn.detach();
  const duplex = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      conn.socket.write(wsFrame({ opcode: 0x2, payload: chunk }), () => cb());
    },
    final(cb) {
      conn.socket.end(wsCloseFrame(1000), () => cb());
    },
  });
  const take = (): void => {
    for (;;) {
      const frames = parseWsFrames(buf);
      if (frames.length === 0) return;
      const f = frames[0]!;
      // parseWsFrames gives whole frames in order; drop the first one's bytes.
      const len = f.payload.length;
      const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
      buf = buf.subarray(head + len);
      if (f.opcode === 0x2 || f.opcode === 0x0) duplex.push(f.payload);
      if (f.opcode === 0x8) duplex.push(null);
    }
  };
  take();
  conn.socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    take();
  });
  conn.socket.once('close', () => duplex.destroy());
  return duplex;
}

/** The code of the server's close frame, once one arrived. */
export function wsCloseCode(buf: Buffer): number | undefined {
  const close = parseWsFrames(buf).find((f) => f.opcode === 0x8);
  if (!close) return undefined;
  return close.payload.length >= 2 ? close.payload.readUInt16BE(0) : 1005;
}

// ---- SPDY frames ----

export function spdyControl(type: number, payload: Buffer, opts: { version?: number; flags?: number; claimedLength?: number } = {}): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16BE(0x8000 | (opts.version ?? 3), 0);
  head.writeUInt16BE(type, 2);
  head.writeUInt32BE(opts.claimedLength ?? payload.length, 4);
  head[4] = opts.flags ?? 0;
  return Buffer.concat([head, payload]);
}

export function spdyData(id: number, payload: Buffer, fin = false): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(id & 0x7fffffff, 0);
  head.writeUInt32BE(payload.length, 4);
  head[4] = fin ? 1 : 0;
  return Buffer.concat([head, payload]);
}

/** The uncompressed name/value block of SPDY/3 headers. */
export function spdyHeaderBlock(headers: Record<string, string>): Buffer {
  const entries = Object.entries(headers);
  const parts: Buffer[] = [u32(entries.length)];
  for (const [k, v] of entries) parts.push(u32(Buffer.byteLength(k)), Buffer.from(k), u32(Buffer.byteLength(v)), Buffer.from(v));
  return Buffer.concat(parts);
}

/** Compresses raw header-block bytes as the first block of a session (SPDY dictionary, sync flush). */
export function spdyCompress(raw: Buffer): Buffer {
  return zlib.deflateSync(raw, { dictionary: SPDY3_DICTIONARY, finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

/** A compressed block that inflates to `inflatedBytes` of zeros, made a MiB at a time (never whole in memory). */
export async function spdyBomb(inflatedBytes: number): Promise<Buffer> {
  const deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY, level: 9 });
  const out: Buffer[] = [];
  deflate.on('data', (c: Buffer) => out.push(c));
  const mib = Buffer.alloc(1024 * 1024);
  for (let left = inflatedBytes; left > 0; left -= mib.length) {
    if (!deflate.write(left >= mib.length ? mib : mib.subarray(0, left))) await new Promise((r) => deflate.once('drain', r));
  }
  await new Promise<void>((resolve) => deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
  deflate.close();
  return Buffer.concat(out);
}

/** A session's header compression context: each call compresses one more block of the same zlib stream. */
export function spdyEncoder(): { encode(raw: Buffer): Promise<Buffer>; close(): void } {
  const deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });
  let out: Buffer[] = [];
  deflate.on('data', (c: Buffer) => out.push(c));
  return {
    encode: (raw) =>
      new Promise((resolve) => {
        deflate.write(raw);
        deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          const block = Buffer.concat(out);
          out = [];
          resolve(block);
        });
      }),
    close: () => deflate.close(),
  };
}

export function spdySynStream(id: number, block: Buffer, fin = false): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt32BE(id, 0);
  return spdyControl(1, Buffer.concat([head, block]), { flags: fin ? 1 : 0 });
}

/** Control frames the server sent, parsed from the received bytes. */
export function parseSpdyControlFrames(buf: Buffer): Array<{ type: number; payload: Buffer }> {
  const frames: Array<{ type: number; payload: Buffer }> = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off + 4) & 0xffffff;
    if (off + 8 + len > buf.length) break;
    if (buf[off]! & 0x80) frames.push({ type: buf.readUInt16BE(off + 2), payload: buf.subarray(off + 8, off + 8 + len) });
    off += 8 + len;
  }
  return frames;
}

/** The status of the server's GOAWAY, once one arrived. */
export function spdyGoawayStatus(buf: Buffer): number | undefined {
  const g = parseSpdyControlFrames(buf).find((f) => f.type === 7);
  if (!g) return undefined;
  return g.payload.length >= 8 ? g.payload.readUInt32BE(4) : 0;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** VmRSS / VmHWM of a process, in bytes. */
export async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const { promises: fsp } = await import('node:fs');
  const text = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Resets a process's peak RSS (VmHWM) to its current RSS (clear_refs 5; needs root). */
export async function resetPeakRss(pid: number): Promise<void> {
  const { promises: fsp } = await import('node:fs');
  await fsp.writeFile(`/proc/${pid}/clear_refs`, '5');
}
