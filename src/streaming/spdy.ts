// A minimal SPDY/3.1 session over an upgraded HTTP connection, enough for what the Kubernetes
// streaming protocols use: SYN_STREAM / SYN_REPLY with zlib-compressed header blocks (the SPDY/3
// dictionary), DATA with FIN, RST_STREAM, PING, SETTINGS, WINDOW_UPDATE, GOAWAY.
// spdy-transport can't serve here: its parser refuses a SYN_STREAM without `:method`/`:path`, and the
// Go clients (kubectl, the kubelet's libraries) send only `streamtype`/`port`/`requestid`.
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
/** The SPDY/3 header compression dictionary (data only) from spdy-transport. */
const SPDY3_DICTIONARY: Buffer = (require('spdy-transport/lib/spdy-transport/protocol/spdy/dictionary.js') as Record<number, Buffer>)[3]!;

const VERSION = 3;
const TYPE_SYN_STREAM = 1;
const TYPE_SYN_REPLY = 2;
const TYPE_RST_STREAM = 3;
const TYPE_SETTINGS = 4;
const TYPE_PING = 6;
const TYPE_GOAWAY = 7;
const TYPE_HEADERS = 8;
const TYPE_WINDOW_UPDATE = 9;
const FLAG_FIN = 0x01;
const RST_PROTOCOL_ERROR = 1;
const RST_CANCEL = 5;
const MAX_DATA_FRAME = 16 * 1024;
const MAX_FRAME_LENGTH = 16 * 1024 * 1024;

export type SpdyHeaders = Record<string, string>;

/** One zlib context per direction, flushed (Z_SYNC_FLUSH) after each header block as SPDY requires. */
class HeaderCodec {
  private readonly deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });
  private readonly inflate = zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
  private deflated: Buffer[] = [];
  private inflated: Buffer[] = [];
  constructor() {
    this.deflate.on('data', (chunk: Buffer) => this.deflated.push(chunk));
    this.inflate.on('data', (chunk: Buffer) => this.inflated.push(chunk));
    this.deflate.on('error', () => undefined);
    this.inflate.on('error', () => undefined);
  }
  encode(headers: SpdyHeaders): Promise<Buffer> {
    const entries = Object.entries(headers);
    const parts: Buffer[] = [u32(entries.length)];
    for (const [name, value] of entries) {
      const n = Buffer.from(name.toLowerCase(), 'utf8');
      const v = Buffer.from(value, 'utf8');
      parts.push(u32(n.length), n, u32(v.length), v);
    }
    return this.run(this.deflate, Buffer.concat(parts), () => {
      const out = Buffer.concat(this.deflated);
      this.deflated = [];
      return out;
    });
  }
  async decode(block: Buffer): Promise<SpdyHeaders> {
    const raw = await this.run(this.inflate, block, () => {
      const out = Buffer.concat(this.inflated);
      this.inflated = [];
      return out;
    });
    const headers: SpdyHeaders = {};
    if (raw.length < 4) return headers;
    const count = raw.readUInt32BE(0);
    let off = 4;
    for (let i = 0; i < count; i++) {
      const nl = raw.readUInt32BE(off);
      const name = raw.toString('utf8', off + 4, off + 4 + nl).toLowerCase();
      off += 4 + nl;
      const vl = raw.readUInt32BE(off);
      // Several values of one name are NUL-separated; the k8s headers carry one.
      headers[name] = raw.toString('utf8', off + 4, off + 4 + vl).split('\0')[0] ?? '';
      off += 4 + vl;
    }
    return headers;
  }
  private run(stream: zlib.Deflate | zlib.Inflate, input: Buffer, take: () => Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      stream.write(input, (err) => {
        if (err) reject(err);
      });
      stream.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve(take()));
    });
  }
  close(): void {
    this.deflate.close();
    this.inflate.close();
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function controlFrame(type: number, flags: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16BE(0x8000 | VERSION, 0);
  head.writeUInt16BE(type, 2);
  head.writeUInt32BE(payload.length, 4);
  head[4] = flags;
  return Buffer.concat([head, payload]);
}

function dataFrame(id: number, flags: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(id & 0x7fffffff, 0);
  head.writeUInt32BE(payload.length, 4);
  head[4] = flags;
  return payload.length ? Buffer.concat([head, payload]) : head;
}

/** One SPDY stream: a Duplex whose writes become DATA frames and whose end() sends FIN. */
export class SpdyStream extends Duplex {
  readonly id: number;
  headers: SpdyHeaders;
  /** Resolves with the peer's SYN_REPLY headers (streams we opened). */
  readonly replied: Promise<SpdyHeaders>;
  private resolveReply: (h: SpdyHeaders) => void = () => undefined;
  remoteClosed = false;
  localClosed = false;

  constructor(private readonly session: SpdySession, id: number, headers: SpdyHeaders) {
    super({ allowHalfOpen: true });
    this.id = id;
    this.headers = headers;
    this.replied = new Promise((resolve) => {
      this.resolveReply = resolve;
    });
    this.replied.catch(() => undefined);
  }

  /** Sends SYN_REPLY (every stream the peer opens must be answered). */
  respond(headers: SpdyHeaders = {}): void {
    this.session.sendReply(this.id, headers);
  }

  /** Aborts the stream in both directions (RST_STREAM CANCEL). */
  reset(): void {
    if (!this.destroyed) this.session.sendReset(this.id, RST_CANCEL);
    this.destroy();
  }

  override _read(): void {
    // data is pushed as frames arrive
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.localClosed) return cb(new Error(`spdy stream ${this.id} is closed for writing`));
    this.session.sendData(this.id, chunk, false).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.localClosed = true;
    this.session.sendData(this.id, Buffer.alloc(0), true).then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.session.forget(this.id);
    cb(err);
  }

  /** @internal */
  onReply(headers: SpdyHeaders): void {
    this.resolveReply(headers);
  }

  /** @internal */
  onData(payload: Buffer, fin: boolean): void {
    if (this.remoteClosed) return;
    if (payload.length) this.push(payload);
    if (fin) {
      this.remoteClosed = true;
      this.push(null);
    }
  }
}

export interface SpdySessionEvents {
  stream: [SpdyStream];
  close: [];
}

/** A SPDY/3.1 session in the server or client role over a byte stream (an upgraded socket). */
export class SpdySession extends EventEmitter<SpdySessionEvents> {
  private readonly streams = new Map<number, SpdyStream>();
  private readonly codec = new HeaderCodec();
  private nextId: number;
  private inbound: Buffer = Buffer.alloc(0);
  private processing: Promise<void> = Promise.resolve();
  private outgoing: Promise<void> = Promise.resolve();
  private lastRemoteId = 0;
  private ended = false;
  readonly closed: Promise<void>;

  constructor(private readonly socket: Duplex, readonly role: 'server' | 'client') {
    super();
    this.nextId = role === 'client' ? 1 : 2;
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        if (this.ended) return;
        this.ended = true;
        for (const s of [...this.streams.values()]) {
          if (!s.remoteClosed) s.destroy();
        }
        this.streams.clear();
        this.codec.close();
        this.emit('close');
        resolve();
      };
      socket.once('close', done);
      socket.once('error', done);
      socket.once('end', () => {
        // the peer is gone for reading; finish our side too
        socket.end();
        done();
      });
    });
    socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** Opens a stream (SYN_STREAM) with the given headers. */
  openStream(headers: SpdyHeaders, fin = false): SpdyStream {
    const id = this.nextId;
    this.nextId += 2;
    const stream = new SpdyStream(this, id, headers);
    this.streams.set(id, stream);
    this.enqueue(async () => {
      const block = await this.codec.encode(headers);
      const head = Buffer.alloc(10);
      head.writeUInt32BE(id, 0);
      head.writeUInt32BE(0, 4);
      head[8] = 0; // priority
      head[9] = 0; // slot
      return controlFrame(TYPE_SYN_STREAM, fin ? FLAG_FIN : 0, Buffer.concat([head, block]));
    });
    if (fin) stream.localClosed = true;
    return stream;
  }

  /** GOAWAY after everything queued so far, then closes the connection. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.enqueue(() => {
      const p = Buffer.alloc(8);
      p.writeUInt32BE(this.lastRemoteId, 0);
      return controlFrame(TYPE_GOAWAY, 0, p);
    });
    await this.outgoing;
    this.socket.end();
    const timer = setTimeout(() => this.socket.destroy(), 5000);
    timer.unref();
    await this.closed;
    clearTimeout(timer);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** @internal */
  forget(id: number): void {
    this.streams.delete(id);
  }

  /** @internal */
  sendReply(id: number, headers: SpdyHeaders): void {
    this.enqueue(async () => controlFrame(TYPE_SYN_REPLY, 0, Buffer.concat([u32(id), await this.codec.encode(headers)])));
  }

  /** @internal */
  sendReset(id: number, status: number): void {
    this.enqueue(() => controlFrame(TYPE_RST_STREAM, 0, Buffer.concat([u32(id), u32(status)])));
  }

  /** @internal */
  sendData(id: number, data: Buffer, fin: boolean): Promise<void> {
    if (data.length === 0) return this.enqueue(() => dataFrame(id, fin ? FLAG_FIN : 0, data));
    let last: Promise<void> = Promise.resolve();
    for (let off = 0; off < data.length; off += MAX_DATA_FRAME) {
      const piece = data.subarray(off, off + MAX_DATA_FRAME);
      const isLast = off + MAX_DATA_FRAME >= data.length;
      last = this.enqueue(() => dataFrame(id, fin && isLast ? FLAG_FIN : 0, piece));
    }
    return last;
  }

  /** Frames leave in the order they were queued (header blocks share one compression context). */
  private enqueue(build: () => Buffer | Promise<Buffer>): Promise<void> {
    const next = this.outgoing.then(async () => {
      if (this.ended || this.socket.destroyed || this.socket.writableEnded) return;
      const frame = await build();
      this.socket.write(frame);
    });
    this.outgoing = next.catch(() => undefined);
    return next;
  }

  private onBytes(chunk: Buffer): void {
    this.inbound = this.inbound.length ? Buffer.concat([this.inbound, chunk]) : chunk;
    while (this.inbound.length >= 8) {
      const length = this.inbound.readUInt32BE(4) & 0xffffff;
      if (length > MAX_FRAME_LENGTH) {
        this.socket.destroy();
        return;
      }
      if (this.inbound.length < 8 + length) break;
      const frame = this.inbound.subarray(0, 8 + length);
      this.inbound = this.inbound.subarray(8 + length);
      this.processing = this.processing.then(() => this.onFrame(frame)).catch(() => {
        this.socket.destroy();
      });
    }
  }

  private async onFrame(frame: Buffer): Promise<void> {
    const flags = frame[4]!;
    const payload = frame.subarray(8);
    if ((frame[0]! & 0x80) === 0) {
      const id = frame.readUInt32BE(0) & 0x7fffffff;
      const stream = this.streams.get(id);
      if (payload.length) this.windowUpdate(id, payload.length, stream !== undefined && !stream.remoteClosed && (flags & FLAG_FIN) === 0);
      if (!stream) return;
      stream.onData(payload, (flags & FLAG_FIN) !== 0);
      this.maybeForget(stream);
      return;
    }
    const type = frame.readUInt16BE(2);
    switch (type) {
      case TYPE_SYN_STREAM: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.codec.decode(payload.subarray(10));
        this.lastRemoteId = Math.max(this.lastRemoteId, id);
        if (this.streams.has(id)) {
          this.sendReset(id, RST_PROTOCOL_ERROR);
          return;
        }
        const stream = new SpdyStream(this, id, headers);
        this.streams.set(id, stream);
        if (flags & FLAG_FIN) stream.onData(Buffer.alloc(0), true);
        this.emit('stream', stream);
        return;
      }
      case TYPE_SYN_REPLY: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.codec.decode(payload.subarray(4));
        const stream = this.streams.get(id);
        stream?.onReply(headers);
        if (stream && flags & FLAG_FIN) stream.onData(Buffer.alloc(0), true);
        return;
      }
      case TYPE_HEADERS: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        await this.codec.decode(payload.subarray(4)); // keeps the compression context in step
        const stream = this.streams.get(id);
        if (stream && flags & FLAG_FIN) stream.onData(Buffer.alloc(0), true);
        return;
      }
      case TYPE_RST_STREAM: {
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const stream = this.streams.get(id);
        if (stream) {
          stream.remoteClosed = true;
          stream.destroy();
        }
        return;
      }
      case TYPE_PING: {
        const id = payload.readUInt32BE(0);
        // Answer the peer's pings (ids of the other parity); ours coming back need nothing.
        if ((id % 2 === 1) === (this.role === 'server')) this.enqueue(() => controlFrame(TYPE_PING, 0, u32(id)));
        return;
      }
      case TYPE_GOAWAY:
        this.socket.end();
        return;
      case TYPE_SETTINGS:
      case TYPE_WINDOW_UPDATE:
      default:
        return; // windows are not enforced on send (as spdystream), so nothing to track
    }
  }

  private windowUpdate(id: number, delta: number, perStream: boolean): void {
    this.enqueue(() => controlFrame(TYPE_WINDOW_UPDATE, 0, Buffer.concat([u32(0), u32(delta)])));
    if (perStream) this.enqueue(() => controlFrame(TYPE_WINDOW_UPDATE, 0, Buffer.concat([u32(id), u32(delta)])));
  }

  private maybeForget(stream: SpdyStream): void {
    if (stream.remoteClosed && stream.localClosed) this.streams.delete(stream.id);
  }
}
