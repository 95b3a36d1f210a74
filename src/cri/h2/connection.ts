// One HTTP/2 connection from a gRPC client: SETTINGS, PING, flow control in both directions, stream
// lifecycle, and GOAWAY. Speaks only what a gRPC server needs (no push, no priorities, no upgrade).
import type { Socket } from 'node:net';
import {
  ConnectionError,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  ErrorCode,
  FRAME_HEADER,
  Flag,
  FrameReader,
  FrameType,
  MAX_WINDOW,
  SETTINGS_ACK,
  Setting,
  frame,
  frameHeader,
  goawayFrame,
  rstStreamFrame,
  settingsFrame,
  unaryAnswerFrames,
  unpad,
  windowUpdateFrame,
} from './frames.js';
import { HeaderDecoder } from './hpack.js';
import { H2Stream, STREAM_HIGH_WATER, type StreamOwner } from './stream.js';
import { MAX_MESSAGE } from './grpc-wire.js';
import { GrpcStatus } from '../../common/grpc-status.js';

export interface ConnectionLimits {
  maxConcurrentStreams: number;
  /** Largest request body (all DATA of one stream) accepted; more answers RESOURCE_EXHAUSTED. */
  maxRequestBytes: number;
  /** Largest header block (HEADERS + CONTINUATION, compressed) and decoded header list. */
  maxHeaderBlock: number;
  maxHeaderList: number;
  /** A connection that has not sent its preface and SETTINGS this long after connecting is closed. */
  handshakeMs: number;
  /**
   * Bytes written to the socket but not yet taken by the kernel past which the client is dropped: it
   * keeps asking (PINGs, SETTINGS) without reading the answers. Responses wait for 'drain' instead.
   */
  maxUnsentBytes: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  maxConcurrentStreams: 1000,
  maxRequestBytes: MAX_MESSAGE + 5,
  maxHeaderBlock: 64 * 1024,
  maxHeaderList: 64 * 1024,
  handshakeMs: 10_000,
  maxUnsentBytes: 8 << 20,
};

/** Our receive windows: a stream's (advertised in SETTINGS) and the connection's (raised by WINDOW_UPDATE). */
const STREAM_RECV_WINDOW = 1 << 20;
const CONN_RECV_WINDOW = 16 << 20;
const MAX_FRAME = DEFAULT_MAX_FRAME; // what we accept; we never advertise more

export interface RequestSink {
  /** A stream's request arrived whole (headers and END_STREAM); `body` is all its DATA. */
  onRequest(stream: H2Stream, body: Buffer): void;
}

export class H2Connection implements StreamOwner {
  private readonly reader = new FrameReader(this, MAX_FRAME);
  private readonly decoder: HeaderDecoder;
  private readonly streams = new Map<number, H2Stream>();
  private readonly ready = new Set<H2Stream>();
  private lastStream = 0;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_MAX_FRAME;
  private connSendWindow = DEFAULT_WINDOW;
  private connRecvWindow = CONN_RECV_WINDOW;
  private connUnacked = 0;
  /** A header block in progress (HEADERS without END_HEADERS, then CONTINUATION). */
  private pendingBlock?: { stream: number; flags: number; parts: Buffer[]; size: number };
  private out: Buffer[] = [];
  private outBytes = 0;
  private writeScheduled = false;
  private socketBlocked = false;
  private goingAway = false;
  private closed = false;
  private readonly onClosed = new Set<() => void>();
  private handshakeTimer?: NodeJS.Timeout;
  /** Handlers still running for streams the client reset: they count against the stream limit. */
  private orphans = 0;

  constructor(
    private readonly socket: Socket,
    private readonly sink: RequestSink,
    private readonly limits: ConnectionLimits = DEFAULT_LIMITS,
  ) {
    this.decoder = new HeaderDecoder(4096, limits.maxHeaderList);
    socket.setNoDelay?.(true);
    this.queue(
      settingsFrame([
        [Setting.MAX_CONCURRENT_STREAMS, limits.maxConcurrentStreams],
        [Setting.INITIAL_WINDOW_SIZE, STREAM_RECV_WINDOW],
        [Setting.MAX_HEADER_LIST_SIZE, limits.maxHeaderList],
        [Setting.ENABLE_PUSH, 0],
      ]),
    );
    this.queue(windowUpdateFrame(0, CONN_RECV_WINDOW - DEFAULT_WINDOW));
    this.handshakeTimer = setTimeout(() => this.fail(new ConnectionError(ErrorCode.PROTOCOL_ERROR, `no preface and SETTINGS within ${limits.handshakeMs} ms`)), limits.handshakeMs);
    this.handshakeTimer.unref();
    socket.on('data', (chunk: Buffer) => {
      try {
        this.reader.push(chunk);
      } catch (err) {
        this.fail(err);
      }
    });
    socket.on('drain', () => {
      this.socketBlocked = false;
      this.pump();
    });
    socket.on('error', () => undefined); // 'close' follows
    socket.on('close', () => this.teardown());
  }

  get activeStreams(): number {
    return this.streams.size;
  }

  whenClosed(fn: () => void): void {
    if (this.closed) fn();
    else this.onClosed.add(fn);
  }

  /** Graceful shutdown: no new streams; the connection closes once the running ones finish. */
  goaway(): void {
    if (this.closed || this.goingAway) return;
    this.goingAway = true;
    this.queue(goawayFrame(this.lastStream, ErrorCode.NO_ERROR));
    this.closeIfIdle();
  }

  destroy(): void {
    this.socket.destroy();
  }

  // --- reading ---

  onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.pendingBlock && type !== FrameType.CONTINUATION) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'header block interrupted by another frame');
    switch (type) {
      case FrameType.DATA:
        return this.onData(flags, id, payload);
      case FrameType.HEADERS:
        return this.onHeaders(flags, id, payload);
      case FrameType.CONTINUATION:
        return this.onContinuation(flags, id, payload);
      case FrameType.RST_STREAM:
        if (id === 0 || payload.length !== 4) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'malformed RST_STREAM');
        return this.closeStream(this.streams.get(id), true);
      case FrameType.SETTINGS:
        return this.onSettings(flags, id, payload);
      case FrameType.PING:
        if (id !== 0 || payload.length !== 8) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'malformed PING');
        if (!(flags & Flag.ACK)) this.queue(frame(FrameType.PING, Flag.ACK, 0, payload));
        return;
      case FrameType.GOAWAY:
        this.goingAway = true;
        return this.closeIfIdle();
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      case FrameType.PRIORITY:
        if (id === 0 || payload.length !== 5) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'malformed PRIORITY');
        return;
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      default:
        return; // unknown frame types are ignored (RFC 9113 §4.1)
    }
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & Flag.ACK) {
      if (payload.length) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    clearTimeout(this.handshakeTimer); // the client's first SETTINGS follows its preface
    if (payload.length % 6) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS length not a multiple of 6');
    for (let at = 0; at < payload.length; at += 6) {
      const key = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (key === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'INITIAL_WINDOW_SIZE above 2^31-1');
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const s of this.streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'stream window above 2^31-1');
        }
      } else if (key === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME || value > 16_777_215) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'MAX_FRAME_SIZE out of range');
        this.peerMaxFrame = value;
      } else if (key === Setting.ENABLE_PUSH && value > 1) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'ENABLE_PUSH not 0 or 1');
      }
      // HEADER_TABLE_SIZE: our blocks never index, so any table size suits them.
    }
    this.queue(SETTINGS_ACK);
    this.pump();
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'WINDOW_UPDATE not 4 bytes');
    const inc = payload.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (inc === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.connSendWindow += inc;
      if (this.connSendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'connection window above 2^31-1');
    } else {
      const s = this.streams.get(id);
      if (!s) return;
      if (inc === 0) return this.resetStream(s, ErrorCode.PROTOCOL_ERROR);
      s.sendWindow += inc;
      if (s.sendWindow > MAX_WINDOW) return this.resetStream(s, ErrorCode.FLOW_CONTROL_ERROR);
    }
    this.pump();
  }

  private onHeaders(flags: number, id: number, payload: Buffer): void {
    if (id === 0 || id % 2 === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `HEADERS on stream ${id}`);
    let block = unpad(payload, flags);
    if (flags & Flag.PRIORITY) {
      if (block.length < 5) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'HEADERS priority truncated');
      block = block.subarray(5);
    }
    if (flags & Flag.END_HEADERS) return this.onHeaderBlock(id, flags, block);
    this.pendingBlock = { stream: id, flags, parts: [Buffer.from(block)], size: block.length };
    this.checkBlockSize(this.pendingBlock.size);
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    const p = this.pendingBlock;
    if (!p || p.stream !== id) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION without a header block in progress');
    p.size += payload.length;
    this.checkBlockSize(p.size);
    p.parts.push(Buffer.from(payload));
    if (flags & Flag.END_HEADERS) {
      this.pendingBlock = undefined;
      this.onHeaderBlock(id, p.flags, Buffer.concat(p.parts));
    }
  }

  private checkBlockSize(size: number): void {
    if (size > this.limits.maxHeaderBlock) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `header block exceeds ${this.limits.maxHeaderBlock} bytes`);
  }

  private onHeaderBlock(id: number, flags: number, block: Buffer): void {
    // Decoded whatever becomes of the stream: the decoder's table must see every block.
    const headers = this.decoder.decode(block);
    const endStream = (flags & Flag.END_STREAM) !== 0;
    const existing = this.streams.get(id);
    if (existing) {
      // Request trailers: only END_STREAM matters to a gRPC server.
      if (!endStream) return this.resetStream(existing, ErrorCode.PROTOCOL_ERROR);
      return this.onRemoteEnd(existing);
    }
    if (id <= this.lastStream) return; // a stream we already closed
    this.lastStream = id;
    // Reset streams whose handlers still run count too: a client resetting every call it makes
    // cannot keep starting handlers without bound.
    if (this.goingAway || this.streams.size + this.orphans >= this.limits.maxConcurrentStreams) {
      this.queue(rstStreamFrame(id, ErrorCode.REFUSED_STREAM));
      return;
    }
    const s = new H2Stream(id, this, this.peerInitialWindow, STREAM_RECV_WINDOW);
    s.headers = headers;
    this.streams.set(id, s);
    let method = '';
    let contentType = '';
    let encoding = '';
    for (const [name, value] of headers) {
      if (name === ':path') s.path = value;
      else if (name === ':method') method = value;
      else if (name === 'content-type') contentType = value;
      else if (name === 'grpc-encoding') encoding = value;
    }
    if (method !== 'POST' || !s.path || !contentType.startsWith('application/grpc')) {
      return this.refuse(s, GrpcStatus.INTERNAL, `not a gRPC request (method ${method || 'none'}, content-type ${contentType || 'none'})`);
    }
    if (encoding && encoding !== 'identity') return this.refuse(s, GrpcStatus.UNIMPLEMENTED, `grpc-encoding ${encoding} is not supported (identity only)`);
    if (endStream) this.onRemoteEnd(s);
  }

  private onData(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'DATA on stream 0');
    // The whole frame, padding included, counts against the windows (RFC 9113 §6.9.1).
    this.connRecvWindow -= payload.length;
    if (this.connRecvWindow < 0) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'client overran the connection window');
    this.connUnacked += payload.length;
    if (this.connUnacked >= CONN_RECV_WINDOW / 2) {
      this.queue(windowUpdateFrame(0, this.connUnacked));
      this.connRecvWindow += this.connUnacked;
      this.connUnacked = 0;
    }
    const s = this.streams.get(id);
    if (!s || s.remoteEnded) {
      if (id > this.lastStream) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      return; // a closed or answered stream: the bytes still counted for the connection
    }
    s.recvWindow -= payload.length;
    if (s.recvWindow < 0) return this.resetStream(s, ErrorCode.FLOW_CONTROL_ERROR);
    const data = unpad(payload, flags);
    s.received += data.length;
    if (s.received > this.limits.maxRequestBytes) {
      return this.refuse(s, GrpcStatus.RESOURCE_EXHAUSTED, `request larger than ${this.limits.maxRequestBytes - 5} bytes`);
    }
    if (data.length) s.chunks.push(Buffer.from(data));
    if (flags & Flag.END_STREAM) return this.onRemoteEnd(s);
    // The body is copied out as it arrives, so the stream window is given back at once (half at a time).
    s.unackedRecv += payload.length;
    if (s.unackedRecv >= STREAM_RECV_WINDOW / 2) {
      this.queue(windowUpdateFrame(id, s.unackedRecv));
      s.recvWindow += s.unackedRecv;
      s.unackedRecv = 0;
    }
  }

  private onRemoteEnd(s: H2Stream): void {
    if (s.remoteEnded) return;
    s.remoteEnded = true;
    const body = s.chunks.length === 1 ? s.chunks[0]! : Buffer.concat(s.chunks);
    s.chunks.length = 0;
    if (s.ended) return this.maybeClose(s);
    this.sink.onRequest(s, body);
  }

  /** Answers a stream with a status before its request was read, and stops its request. */
  private refuse(s: H2Stream, code: number, message: string): void {
    s.sendStatus(code, message);
    s.chunks.length = 0;
    if (!s.remoteEnded) {
      s.remoteEnded = true;
      s.refused = true;
    }
  }

  private resetStream(s: H2Stream, code: ErrorCode): void {
    this.queue(rstStreamFrame(s.id, code));
    this.closeStream(s, true);
  }

  private closeStream(s: H2Stream | undefined, cancel: boolean): void {
    if (!s || !this.streams.has(s.id)) return;
    this.streams.delete(s.id);
    this.ready.delete(s);
    if (cancel) {
      if (s.unaryRunning && !s.ended) {
        this.orphans++;
        s.onHandlerEnd = () => this.orphans--;
      }
      s.cancel();
    }
    this.closeIfIdle();
  }

  private maybeClose(s: H2Stream): void {
    if (s.ended && s.remoteEnded && !s.trailersBlock && !s.data.length) this.closeStream(s, false);
  }

  // --- writing ---

  schedule(s: H2Stream): void {
    if (!this.streams.has(s.id)) return;
    this.ready.add(s);
    this.pump();
  }

  /** Moves what the windows allow from ready streams into the output. */
  private pump(): void {
    if (this.closed) return;
    for (const s of this.ready) {
      if (this.socketBlocked) break;
      if (this.sendWholeAnswer(s)) continue;
      if (s.headersBlock) {
        this.queueHeaders(s.id, s.headersBlock, false);
        s.headersBlock = undefined;
        s.sentHeaders = true;
      }
      // One DATA frame per window-sized slice, gathering queued pieces (message prefixes, messages) into it.
      while (s.queued > 0 && s.sendWindow > 0 && this.connSendWindow > 0) {
        const n = Math.min(s.queued, s.sendWindow, this.connSendWindow, this.peerMaxFrame);
        const hdr = Buffer.allocUnsafe(FRAME_HEADER);
        frameHeader(hdr, 0, n, FrameType.DATA, 0, s.id);
        this.queue(hdr);
        for (let left = n; left > 0; ) {
          const head = s.data[0]!;
          if (head.length <= left) {
            this.queue(head);
            s.data.shift();
            left -= head.length;
          } else {
            this.queue(head.subarray(0, left));
            s.data[0] = head.subarray(left);
            left = 0;
          }
        }
        s.queued -= n;
        s.sendWindow -= n;
        this.connSendWindow -= n;
        if (this.outBytes > STREAM_HIGH_WATER * 4) this.flush();
        if (this.socketBlocked) break;
      }
      if (s.wantDrain && s.queued <= STREAM_HIGH_WATER) s.drained();
      if (s.data.length) continue;
      this.ready.delete(s);
      if (s.trailersBlock) {
        this.queueHeaders(s.id, s.trailersBlock, true);
        s.trailersBlock = undefined;
        if (s.refused) this.queue(rstStreamFrame(s.id, ErrorCode.NO_ERROR)); // the client may stop sending its request
        this.maybeClose(s);
      }
    }
  }

  /**
   * A unary answer queued whole (headers, message, trailers) that fits one frame of each kind and the
   * windows goes out as one buffer: the common case, without the general path's pieces.
   */
  private sendWholeAnswer(s: H2Stream): boolean {
    const headers = s.headersBlock;
    const trailers = s.trailersBlock;
    const max = this.peerMaxFrame;
    if (!headers || !trailers || s.refused || headers.length > max || trailers.length > max) return false;
    const n = s.queued;
    if (n > max || n > s.sendWindow || n > this.connSendWindow) return false;
    this.queue(unaryAnswerFrames(s.id, headers, s.data, n, trailers));
    s.headersBlock = undefined;
    s.sentHeaders = true;
    s.trailersBlock = undefined;
    s.data.length = 0;
    s.queued = 0;
    s.sendWindow -= n;
    this.connSendWindow -= n;
    this.ready.delete(s);
    this.maybeClose(s);
    return true;
  }

  /** A header block as HEADERS and, past the peer's frame size, CONTINUATION frames. */
  private queueHeaders(id: number, block: Buffer, endStream: boolean): void {
    const max = this.peerMaxFrame;
    let first = true;
    for (let at = 0; first || at < block.length; first = false) {
      const n = Math.min(max, block.length - at);
      const last = at + n >= block.length;
      const type = first ? FrameType.HEADERS : FrameType.CONTINUATION;
      const flags = (last ? Flag.END_HEADERS : 0) | (first && endStream ? Flag.END_STREAM : 0);
      this.queue(frame(type, flags, id, block.subarray(at, at + n)));
      at += n;
    }
  }

  private queue(buf: Buffer): void {
    if (this.closed) return;
    this.out.push(buf);
    this.outBytes += buf.length;
    if (!this.writeScheduled) {
      this.writeScheduled = true;
      process.nextTick(() => this.flush());
    }
  }

  /** Writes everything queued as one buffer (small) or one writev (large). */
  private flush(): void {
    this.writeScheduled = false;
    if (this.closed || !this.out.length) return;
    const out = this.out;
    const bytes = this.outBytes;
    this.out = [];
    this.outBytes = 0;
    let ok: boolean;
    if (out.length === 1) ok = this.socket.write(out[0]!);
    else if (bytes <= 16 * 1024) ok = this.socket.write(Buffer.concat(out, bytes));
    else {
      this.socket.cork();
      for (const b of out) this.socket.write(b);
      this.socket.uncork();
      ok = !this.socket.writableNeedDrain;
    }
    if (!ok) this.socketBlocked = true;
    if (this.socket.writableLength > this.limits.maxUnsentBytes) this.socket.destroy();
  }

  // --- closing ---

  private closeIfIdle(): void {
    if (this.goingAway && this.streams.size === 0 && !this.closed) {
      this.flush();
      this.socket.end();
    }
  }

  private fail(err: unknown): void {
    const code = err instanceof ConnectionError ? err.code : ErrorCode.INTERNAL_ERROR;
    const message = err instanceof Error ? err.message : String(err);
    this.out = [];
    this.outBytes = 0;
    this.queue(goawayFrame(this.lastStream, code, message));
    this.flush();
    this.socket.end();
    this.teardown();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    for (const s of this.streams.values()) s.cancel();
    this.streams.clear();
    this.ready.clear();
    for (const fn of this.onClosed) fn();
    this.onClosed.clear();
  }
}
