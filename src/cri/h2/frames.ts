// HTTP/2 frame layout (RFC 9113 §4, §6): the 9-byte header, the types and flags gRPC uses, and the builders.

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME_HEADER = 9;

export const enum FrameType {
  DATA = 0x0,
  HEADERS = 0x1,
  PRIORITY = 0x2,
  RST_STREAM = 0x3,
  SETTINGS = 0x4,
  PUSH_PROMISE = 0x5,
  PING = 0x6,
  GOAWAY = 0x7,
  WINDOW_UPDATE = 0x8,
  CONTINUATION = 0x9,
}

export const enum Flag {
  END_STREAM = 0x1,
  ACK = 0x1,
  END_HEADERS = 0x4,
  PADDED = 0x8,
  PRIORITY = 0x20,
}

export const enum Setting {
  HEADER_TABLE_SIZE = 0x1,
  ENABLE_PUSH = 0x2,
  MAX_CONCURRENT_STREAMS = 0x3,
  INITIAL_WINDOW_SIZE = 0x4,
  MAX_FRAME_SIZE = 0x5,
  MAX_HEADER_LIST_SIZE = 0x6,
}

export const enum ErrorCode {
  NO_ERROR = 0x0,
  PROTOCOL_ERROR = 0x1,
  INTERNAL_ERROR = 0x2,
  FLOW_CONTROL_ERROR = 0x3,
  STREAM_CLOSED = 0x5,
  FRAME_SIZE_ERROR = 0x6,
  REFUSED_STREAM = 0x7,
  CANCEL = 0x8,
  COMPRESSION_ERROR = 0x9,
  ENHANCE_YOUR_CALM = 0xb,
}

/** Protocol defaults before any SETTINGS (RFC 9113 §6.5.2). */
export const DEFAULT_WINDOW = 65_535;
export const DEFAULT_MAX_FRAME = 16_384;
export const MAX_WINDOW = 2 ** 31 - 1;

/** A connection-level protocol error: the connection answers GOAWAY with `code` and closes. */
export class ConnectionError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function frameHeader(out: Buffer, at: number, length: number, type: FrameType, flags: number, stream: number): void {
  out[at] = length >>> 16;
  out[at + 1] = (length >>> 8) & 0xff;
  out[at + 2] = length & 0xff;
  out[at + 3] = type;
  out[at + 4] = flags;
  out.writeUInt32BE(stream & 0x7fffffff, at + 5);
}

/** A whole frame whose payload is `payload` (copied once into the frame's buffer). */
export function frame(type: FrameType, flags: number, stream: number, payload?: Uint8Array): Buffer {
  const length = payload?.length ?? 0;
  const out = Buffer.allocUnsafe(FRAME_HEADER + length);
  frameHeader(out, 0, length, type, flags, stream);
  if (payload) out.set(payload, FRAME_HEADER);
  return out;
}

/**
 * A whole unary answer as one buffer: HEADERS (`headers`, END_HEADERS), one DATA frame holding `data`
 * (`dataLength` bytes in all), and HEADERS with the trailers (END_HEADERS | END_STREAM). The caller has
 * checked that each block and the data fit one frame and the windows.
 */
export function unaryAnswerFrames(stream: number, headers: Buffer, data: readonly Buffer[], dataLength: number, trailers: Buffer): Buffer {
  const out = Buffer.allocUnsafe(3 * FRAME_HEADER + headers.length + dataLength + trailers.length);
  let at = 0;
  frameHeader(out, at, headers.length, FrameType.HEADERS, Flag.END_HEADERS, stream);
  at += FRAME_HEADER;
  out.set(headers, at);
  at += headers.length;
  frameHeader(out, at, dataLength, FrameType.DATA, 0, stream);
  at += FRAME_HEADER;
  for (const piece of data) {
    out.set(piece, at);
    at += piece.length;
  }
  frameHeader(out, at, trailers.length, FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, stream);
  out.set(trailers, at + FRAME_HEADER);
  return out;
}

export function settingsFrame(settings: Array<[Setting, number]>): Buffer {
  const payload = Buffer.allocUnsafe(6 * settings.length);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, payload);
}

export const SETTINGS_ACK = frame(FrameType.SETTINGS, Flag.ACK, 0);

export function windowUpdateFrame(stream: number, increment: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4);
  frameHeader(out, 0, 4, FrameType.WINDOW_UPDATE, 0, stream);
  out.writeUInt32BE(increment, FRAME_HEADER);
  return out;
}

export function rstStreamFrame(stream: number, code: ErrorCode): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4);
  frameHeader(out, 0, 4, FrameType.RST_STREAM, 0, stream);
  out.writeUInt32BE(code, FRAME_HEADER);
  return out;
}

export function goawayFrame(lastStream: number, code: ErrorCode, debug = ''): Buffer {
  const text = Buffer.from(debug.slice(0, 256), 'utf8');
  const out = Buffer.allocUnsafe(FRAME_HEADER + 8 + text.length);
  frameHeader(out, 0, 8 + text.length, FrameType.GOAWAY, 0, 0);
  out.writeUInt32BE(lastStream & 0x7fffffff, FRAME_HEADER);
  out.writeUInt32BE(code, FRAME_HEADER + 4);
  text.copy(out, FRAME_HEADER + 8);
  return out;
}

/** The payload of a frame with PADDED set, without its pad length byte and padding. */
export function unpad(payload: Buffer, flags: number): Buffer {
  if (!(flags & Flag.PADDED)) return payload;
  if (payload.length < 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'padded frame without a pad length');
  const pad = payload[0]!;
  if (pad >= payload.length) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'padding longer than the frame');
  return payload.subarray(1, payload.length - pad);
}

export interface FrameSink {
  onFrame(type: number, flags: number, stream: number, payload: Buffer): void;
}

/**
 * Cuts a byte stream into frames. A frame split across reads is held until complete; a frame longer
 * than `maxFrame` is a connection error, so at most one frame's bytes are ever held.
 */
export class FrameReader {
  private held?: Buffer;
  private prefaceLeft: number;

  /** `expectPreface`: a server's reader, where the client's connection preface comes first. */
  constructor(
    private readonly sink: FrameSink,
    private readonly maxFrame: number,
    expectPreface = true,
  ) {
    this.prefaceLeft = expectPreface ? PREFACE.length : 0;
  }

  push(chunk: Buffer): void {
    let buf = this.held ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = undefined;
    let at = 0;
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, buf.length);
      const from = PREFACE.length - this.prefaceLeft;
      if (!buf.subarray(0, n).equals(PREFACE.subarray(from, from + n))) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'not an HTTP/2 connection preface');
      this.prefaceLeft -= n;
      at = n;
    }
    while (buf.length - at >= FRAME_HEADER) {
      const length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
      if (length > this.maxFrame) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes exceeds ${this.maxFrame}`);
      if (buf.length - at < FRAME_HEADER + length) break;
      const type = buf[at + 3]!;
      const flags = buf[at + 4]!;
      const stream = buf.readUInt32BE(at + 5) & 0x7fffffff;
      this.sink.onFrame(type, flags, stream, buf.subarray(at + FRAME_HEADER, at + FRAME_HEADER + length));
      at += FRAME_HEADER + length;
    }
    if (at < buf.length) this.held = Buffer.from(buf.subarray(at));
  }
}
