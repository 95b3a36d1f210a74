// gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md): length-prefixed messages, grpc-timeout, status trailers.
import { encodeHeaders, type HeaderList } from './hpack.js';

/** Largest request message accepted (as grpc.max_receive_message_length on the grpc-js server). */
export const MAX_MESSAGE = 16 * 1024 * 1024;

/** The 5-byte prefix of an uncompressed message: compressed flag 0, big-endian length. */
export function messagePrefix(length: number): Buffer {
  const out = Buffer.allocUnsafe(5);
  out[0] = 0;
  out.writeUInt32BE(length, 1);
  return out;
}

/** The 5-byte prefix and the message, as one buffer. */
export function frameMessage(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** grpc-timeout ("1S", "100m", up to 8 digits and a unit) in ms, or undefined when malformed. */
export function parseTimeout(value: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  return m ? Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]! : undefined;
}

/** grpc-message is percent-encoded: everything outside printable ASCII, and '%' itself (over UTF-8 bytes). */
export function percentEncode(message: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(message)) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const RESPONSE_HEADERS: HeaderList = [['content-type', 'application/grpc']];
/** `:status 200` and content-type: the same for every response, encoded once. */
export const RESPONSE_HEADER_BLOCK = encodeHeaders(RESPONSE_HEADERS, true);
const OK_TRAILER_BLOCK = encodeHeaders([['grpc-status', '0']], false);

/** The trailers ending a call; with `headersToo`, a trailers-only response (no headers were sent). */
export function statusBlock(code: number, message: string | undefined, headersToo: boolean): Buffer {
  if (code === 0 && !message && !headersToo) return OK_TRAILER_BLOCK;
  const list: HeaderList = headersToo ? [...RESPONSE_HEADERS] : [];
  list.push(['grpc-status', String(code)]);
  if (message) list.push(['grpc-message', percentEncode(message)]);
  return encodeHeaders(list, headersToo);
}
