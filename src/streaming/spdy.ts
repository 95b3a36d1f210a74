// A minimal SPDY/3.1 session over an upgraded HTTP connection, enough for what the Kubernetes
// streaming protocols use: SYN_STREAM / SYN_REPLY with zlib-compressed header blocks (the SPDY/3
// dictionary), DATA with FIN, RST_STREAM, PING, SETTINGS, WINDOW_UPDATE, GOAWAY.
// spdy-transport can't serve here: its parser refuses a SYN_STREAM without `:method`/`:path`, and the
// Go clients (kubectl, the kubelet's libraries) send only `streamtype`/`port`/`requestid`.
//
// Memory stays bounded whatever the peer sends: DATA payloads are handed on as they arrive (never a
// whole 16 MiB frame at once), reading stops while a stream's reader is full or our own output is not
// draining, and a header block may neither be sent as a huge frame nor inflate past a cap.
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
const RST_REFUSED_STREAM = 3;
const RST_CANCEL = 5;
const GOAWAY_PROTOCOL_ERROR = 1;
const MAX_DATA_FRAME = 16 * 1024;

/** The most a header block may inflate to (Go's http2 server allows about 1 MiB of header list; kubectl sends < 100 bytes). */
export const MAX_HEADER_BLOCK_BYTES = 256 * 1024;
/** The largest control frame read: a header block's compressed form never needs much more than its inflated size. */
export const MAX_CONTROL_FRAME_BYTES = MAX_HEADER_BLOCK_BYTES + 4096;
/** Streams open at once on one session; more are refused (RST_STREAM REFUSED_STREAM). */
export const MAX_CONCURRENT_STREAMS = 1000;
/** What a stream buffers for its reader before the session stops reading the connection. */
const STREAM_READ_BUFFER = 64 * 1024;
/** What may wait in the connection's write buffer before the session stops reading (its answers pile up there). */
const OUTBOUND_BUFFER = 1024 * 1024;

export type SpdyHeaders = Record<string, string>;

/** The peer broke the protocol; the session is closed with GOAWAY PROTOCOL_ERROR. */
export class SpdyProtocolError extends Error {
  override name = 'SpdyProtocolError';
}

/** One zlib context per direction, flushed (Z_SYNC_FLUSH) after each header block as SPDY requires. */
class HeaderCodec {
  private readonly deflate = zlib.createDeflate({ dictionary: SPDY3_DICTIONARY });
  private readonly inflate = zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
  private deflated: Buffer[] = [];
  private inflated: Buffer[] = [];
  private inflatedBytes = 0;
  /** The decode in progress: zlib errors and an oversized block end it at once. */
  private failDecode: ((err: Error) => void) | undefined;
  private broken: Error | undefined;

  constructor(private readonly maxBlock: number) {
    this.deflate.on('data', (chunk: Buffer) => this.deflated.push(chunk));
    this.inflate.on('data', (chunk: Buffer) => {
      this.inflatedBytes += chunk.length;
      if (this.inflatedBytes > this.maxBlock) {
        // Stop zlib before it inflates the rest: the context is lost, and with it the session.
        this.fail(new SpdyProtocolError(`header block inflates past ${this.maxBlock} bytes`));
        return;
      }
      this.inflated.push(chunk);
    });
    this.deflate.on('error', () => undefined);
    this.inflate.on('error', (err) => this.fail(new SpdyProtocolError(`header block does not inflate: ${err.message}`)));
  }

  private fail(err: Error): void {
    if (this.broken) return;
    this.broken = err;
    this.inflated = [];
    this.inflate.destroy();
    this.failDecode?.(err);
  }

  encode(headers: SpdyHeaders): Promise<Buffer> {
    const entries = Object.entries(headers);
    const parts: Buffer[] = [u32(entries.length)];
    for (const [name, value] of entries) {
      const n = Buffer.from(name.toLowerCase(), 'utf8');
      const v = Buffer.from(value, 'utf8');
      parts.push(u32(n.length), n, u32(v.length), v);
    }
    return new Promise((resolve) => {
      this.deflate.write(Buffer.concat(parts));
      this.deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        const out = Buffer.concat(this.deflated);
        this.deflated = [];
        resolve(out);
      });
    });
  }

  /** Inflates one header block (at most maxBlock bytes) and parses its name/value pairs. */
  async decode(block: Buffer): Promise<SpdyHeaders> {
    if (this.broken) throw this.broken;
    this.inflatedBytes = 0;
    const raw = await new Promise<Buffer>((resolve, reject) => {
      this.failDecode = reject;
      this.inflate.write(block);
      this.inflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        if (this.broken) return reject(this.broken);
        const out = Buffer.concat(this.inflated);
        this.inflated = [];
        resolve(out);
      });
    }).finally(() => {
      this.failDecode = undefined;
    });
    return parseHeaderBlock(raw);
  }

  close(): void {
    this.deflate.close();
    this.inflate.close();
  }
}

/** Count, then (length, name, length, value) pairs; every length is checked against what is left. */
function parseHeaderBlock(raw: Buffer): SpdyHeaders {
  const headers: SpdyHeaders = {};
  if (raw.length === 0) return headers;
  const take = (off: number, what: string): [string, number] => {
    if (off + 4 > raw.length) throw new SpdyProtocolError(`header block ends inside a ${what} length`);
    const len = raw.readUInt32BE(off);
    if (len > raw.length - off - 4) throw new SpdyProtocolError(`header ${what} length ${len} runs past the block`);
    return [raw.toString('utf8', off + 4, off + 4 + len), off + 4 + len];
  };
  if (raw.length < 4) throw new SpdyProtocolError('header block shorter than its count');
  const count = raw.readUInt32BE(0);
  if (count > (raw.length - 4) / 8) throw new SpdyProtocolError(`header block claims ${count} headers in ${raw.length} bytes`);
  let off = 4;
  for (let i = 0; i < count; i++) {
    const [name, afterName] = take(off, 'name');
    const [value, afterValue] = take(afterName, 'value');
    // Several values of one name are NUL-separated; the k8s headers carry one.
    headers[name.toLowerCase()] = value.split('\0')[0] ?? '';
    off = afterValue;
  }
  return headers;
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
  /** The peer sent RST_STREAM: what we still write is dropped. */
  private resetByPeer = false;

  constructor(private readonly session: SpdySession, id: number, headers: SpdyHeaders) {
    super({ allowHalfOpen: true, readableHighWaterMark: STREAM_READ_BUFFER });
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
  reset(status = RST_CANCEL): void {
    if (!this.destroyed) this.session.sendReset(this.id, status);
    this.destroy();
  }

  override _read(): void {
    // Data is pushed as frames arrive; a reader asking for more lets the session read on.
    this.session.unblock(this);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.resetByPeer) return cb();
    if (this.localClosed) return cb(new Error(`spdy stream ${this.id} is closed for writing`));
    this.session.sendData(this.id, chunk, false).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.resetByPeer) return cb();
    this.localClosed = true;
    this.session.sendData(this.id, Buffer.alloc(0), true).then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.session.forget(this);
    cb(err);
  }

  /** @internal */
  onReply(headers: SpdyHeaders): void {
    this.resolveReply(headers);
  }

  /**
   * @internal The peer reset the stream. Before its FIN that aborts the stream; after it (spdy-transport
   * resets a stream it has finished when our window update for it arrives late), everything it sent has
   * arrived: the reader still gets all of it and its end, and only our sending stops.
   */
  onReset(): void {
    this.resetByPeer = true;
    if (!this.remoteClosed || this.readableEnded) {
      this.remoteClosed = true;
      this.destroy();
      return;
    }
    this.once('end', () => this.destroy());
  }

  /** @internal Returns false when the reader is full and the session should stop reading. */
  onData(payload: Buffer, fin: boolean): boolean {
    if (this.remoteClosed || this.destroyed) return true;
    let more = true;
    if (payload.length) more = this.push(payload);
    if (fin) {
      this.remoteClosed = true;
      this.push(null);
    }
    return more || fin;
  }
}

export interface SpdySessionEvents {
  stream: [SpdyStream];
  close: [];
  /** The peer broke the protocol (the session is closing). */
  protocolError: [SpdyProtocolError];
}

/** A SPDY/3.1 session in the server or client role over a byte stream (an upgraded socket). */
export class SpdySession extends EventEmitter<SpdySessionEvents> {
  private readonly streams = new Map<number, SpdyStream>();
  private readonly codec = new HeaderCodec(MAX_HEADER_BLOCK_BYTES);
  private nextId: number;
  private inbound: Buffer = Buffer.alloc(0);
  /** The DATA frame whose payload is being handed on: its stream, bytes still to come, FIN. */
  private data: { id: number; left: number; fin: boolean } | undefined;
  private pumping = false;
  /** Something (bytes, a reader, a drain) asked to read on while a pass was running. */
  private pumpAgain = false;
  /** A stream whose reader is full: nothing more is read until it asks for more. */
  private blockedBy: SpdyStream | undefined;
  private readingPaused = false;
  private drained: Promise<void> | undefined;
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
        this.inbound = Buffer.alloc(0);
        this.codec.close();
        this.emit('close');
        resolve();
      };
      socket.once('close', done);
      socket.on('error', done); // kept: a stream over a WebSocket may report more than one
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
  async close(status = 0): Promise<void> {
    if (this.ended) return;
    this.enqueue(() => controlFrame(TYPE_GOAWAY, 0, Buffer.concat([u32(this.lastRemoteId), u32(status)])));
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
  forget(stream: SpdyStream): void {
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
    this.unblock(stream);
  }

  /** @internal The stream's reader wants more (or the stream is gone): read on if it held us. */
  unblock(stream: SpdyStream): void {
    if (this.blockedBy !== stream) return;
    this.blockedBy = undefined;
    this.pump();
  }

  /** @internal */
  sendReply(id: number, headers: SpdyHeaders): void {
    this.enqueue(async () => controlFrame(TYPE_SYN_REPLY, 0, Buffer.concat([u32(id), await this.codec.encode(headers)])));
  }

  /** @internal */
  sendReset(id: number, status: number): void {
    this.enqueue(() => controlFrame(TYPE_RST_STREAM, 0, Buffer.concat([u32(id), u32(status)])));
  }

  /** @internal Resolves once the data is written and the connection can take more. */
  async sendData(id: number, data: Buffer, fin: boolean): Promise<void> {
    if (data.length === 0) return this.enqueue(() => dataFrame(id, fin ? FLAG_FIN : 0, data));
    let last: Promise<void> = Promise.resolve();
    for (let off = 0; off < data.length; off += MAX_DATA_FRAME) {
      const piece = data.subarray(off, off + MAX_DATA_FRAME);
      const isLast = off + MAX_DATA_FRAME >= data.length;
      last = this.enqueue(() => dataFrame(id, fin && isLast ? FLAG_FIN : 0, piece));
    }
    await last;
    await this.writable();
  }

  /** Resolves when the connection's write buffer has drained (or the connection is gone). */
  private writable(): Promise<void> {
    if (this.ended || this.socket.destroyed || !this.socket.writableNeedDrain) return Promise.resolve();
    this.drained ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        this.drained = undefined;
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
    return this.drained;
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
    if (this.ended) return;
    this.inbound = this.inbound.length ? Buffer.concat([this.inbound, chunk]) : chunk;
    this.adjustReading();
    this.pump();
  }

  /** Reads frames off the inbound buffer, one at a time, until it runs dry or something must wait. */
  private pump(): void {
    if (this.ended) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.pumpAgain = false;
    this.readFrames()
      .catch((err: unknown) => this.protocolError(err instanceof SpdyProtocolError ? err : new SpdyProtocolError(String((err as Error)?.message ?? err))))
      .finally(() => {
        this.pumping = false;
        this.adjustReading();
        if (this.pumpAgain) this.pump();
      });
  }

  private async readFrames(): Promise<void> {
    for (;;) {
      if (this.ended || this.blockedBy) return;
      if (this.socket.writableLength > OUTBOUND_BUFFER) {
        // Our answers (window updates, pings) pile up unread: read on once they are gone.
        void this.writable().then(() => this.pump());
        return;
      }
      if (this.data) {
        if (this.inbound.length === 0) return;
        const n = Math.min(this.data.left, this.inbound.length);
        const piece = this.inbound.subarray(0, n);
        this.inbound = this.inbound.subarray(n);
        this.data.left -= n;
        const { id } = this.data;
        const fin = this.data.left === 0 && this.data.fin;
        if (this.data.left === 0) this.data = undefined;
        this.onDataPiece(id, piece, fin);
        continue;
      }
      if (this.inbound.length < 8) return;
      const length = this.inbound.readUInt32BE(4) & 0xffffff;
      if ((this.inbound[0]! & 0x80) === 0) {
        const id = this.inbound.readUInt32BE(0) & 0x7fffffff;
        const fin = (this.inbound[4]! & FLAG_FIN) !== 0;
        this.inbound = this.inbound.subarray(8);
        if (length === 0) this.onDataPiece(id, Buffer.alloc(0), fin);
        else this.data = { id, left: length, fin };
        continue;
      }
      if (length > MAX_CONTROL_FRAME_BYTES) throw new SpdyProtocolError(`control frame of ${length} bytes (at most ${MAX_CONTROL_FRAME_BYTES})`);
      if (this.inbound.length < 8 + length) return;
      const frame = this.inbound.subarray(0, 8 + length);
      this.inbound = this.inbound.subarray(8 + length);
      await this.onControlFrame(frame);
    }
  }

  /** Pauses the connection while frames must wait (a full reader, a large unread backlog), resumes otherwise. */
  private adjustReading(): void {
    if (this.ended) return;
    const wait = this.blockedBy !== undefined || this.inbound.length > MAX_CONTROL_FRAME_BYTES + 8 || this.socket.writableLength > OUTBOUND_BUFFER;
    if (wait && !this.readingPaused) {
      this.readingPaused = true;
      this.socket.pause();
    } else if (!wait && this.readingPaused) {
      this.readingPaused = false;
      this.socket.resume();
    }
  }

  private onDataPiece(id: number, payload: Buffer, fin: boolean): void {
    const stream = this.streams.get(id);
    const open = stream !== undefined && !stream.remoteClosed && !stream.destroyed;
    if (payload.length) this.windowUpdate(id, payload.length, open && !fin);
    if (!stream) return;
    if (!stream.onData(payload, fin)) {
      this.blockedBy = stream;
      this.adjustReading();
    }
    this.maybeForget(stream);
  }

  private protocolError(err: SpdyProtocolError): void {
    if (this.ended) return;
    this.emit('protocolError', err);
    this.inbound = Buffer.alloc(0);
    this.data = undefined;
    this.socket.pause();
    this.readingPaused = true;
    void this.close(GOAWAY_PROTOCOL_ERROR);
    // A peer that keeps the connection open after GOAWAY loses it shortly.
    const timer = setTimeout(() => this.socket.destroy(), 1000);
    timer.unref();
  }

  private async onControlFrame(frame: Buffer): Promise<void> {
    const version = frame.readUInt16BE(0) & 0x7fff;
    if (version !== VERSION) throw new SpdyProtocolError(`SPDY version ${version} (want ${VERSION})`);
    const type = frame.readUInt16BE(2);
    const flags = frame[4]!;
    const payload = frame.subarray(8);
    const need = (n: number): void => {
      if (payload.length < n) throw new SpdyProtocolError(`control frame type ${type} of ${payload.length} bytes (want at least ${n})`);
    };
    switch (type) {
      case TYPE_SYN_STREAM: {
        need(10);
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.codec.decode(payload.subarray(10));
        if (id === 0) throw new SpdyProtocolError('SYN_STREAM for stream 0');
        this.lastRemoteId = Math.max(this.lastRemoteId, id);
        if (this.streams.has(id) || id % 2 === (this.role === 'server' ? 0 : 1)) {
          this.sendReset(id, RST_PROTOCOL_ERROR);
          return;
        }
        if (this.streams.size >= MAX_CONCURRENT_STREAMS) {
          this.sendReset(id, RST_REFUSED_STREAM);
          return;
        }
        const stream = new SpdyStream(this, id, headers);
        this.streams.set(id, stream);
        if (flags & FLAG_FIN) stream.onData(Buffer.alloc(0), true);
        this.emit('stream', stream);
        return;
      }
      case TYPE_SYN_REPLY: {
        need(4);
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        const headers = await this.codec.decode(payload.subarray(4));
        const stream = this.streams.get(id);
        stream?.onReply(headers);
        if (stream && flags & FLAG_FIN) stream.onData(Buffer.alloc(0), true);
        return;
      }
      case TYPE_HEADERS: {
        need(4);
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        await this.codec.decode(payload.subarray(4)); // keeps the compression context in step
        const stream = this.streams.get(id);
        if (stream && flags & FLAG_FIN) stream.onData(Buffer.alloc(0), true);
        return;
      }
      case TYPE_RST_STREAM: {
        need(8);
        const id = payload.readUInt32BE(0) & 0x7fffffff;
        this.streams.get(id)?.onReset();
        return;
      }
      case TYPE_PING: {
        need(4);
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
        return; // windows are not enforced on send (as spdystream), so nothing to track; unknown types are ignored
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
