// Header blocks: request blocks decoded with hpack.js (its integer/Huffman decoder and its table);
// response blocks written as literals without indexing and without Huffman, so no encoder state is kept.
import { createRequire } from 'node:module';
import { ConnectionError, ErrorCode } from './frames.js';

interface HpackDecoder {
  push(chunk: Buffer): void;
  isEmpty(): boolean;
  decodeBit(): number;
  decodeInt(): number;
  decodeStr(): ArrayLike<number>;
}
interface HpackTable {
  lookup(index: number): { name: string; value: string; nameSize: number };
  add(name: string, value: string, nameSize: number, valueSize: number): void;
  updateSize(size: number): void;
}
interface Hpack {
  decoder: { create(): HpackDecoder };
  table: { create(opts: { maxSize: number }): HpackTable };
}
const hpack = createRequire(import.meta.url)('hpack.js') as Hpack;

export type HeaderList = Array<[name: string, value: string]>;

function latin1(bytes: ArrayLike<number>): string {
  return Buffer.from(bytes as Uint8Array).toString('latin1');
}

/**
 * One connection's decoding state (the dynamic table lives across blocks). A block that fails to decode,
 * or whose header list exceeds `maxListSize` (RFC 7541 sizes: name + value + 32), is a connection error:
 * the table can no longer be trusted.
 */
export class HeaderDecoder {
  private readonly table: HpackTable;

  constructor(
    tableSize: number,
    private readonly maxListSize: number,
  ) {
    this.table = hpack.table.create({ maxSize: tableSize });
  }

  decode(block: Buffer): HeaderList {
    const dec = hpack.decoder.create();
    dec.push(block);
    const out: HeaderList = [];
    let size = 0;
    try {
      while (!dec.isEmpty()) {
        let name: string;
        let value: string;
        if (dec.decodeBit()) {
          const entry = this.table.lookup(dec.decodeInt());
          name = entry.name;
          value = entry.value;
        } else {
          const incremental = dec.decodeBit();
          if (!incremental && dec.decodeBit()) {
            this.table.updateSize(dec.decodeInt()); // dynamic table size update
            continue;
          }
          if (!incremental) dec.decodeBit(); // never-indexed: no meaning to a server that never forwards
          const index = dec.decodeInt();
          let nameSize: number;
          if (index === 0) {
            const raw = dec.decodeStr();
            nameSize = raw.length;
            name = latin1(raw);
          } else {
            const entry = this.table.lookup(index);
            name = entry.name;
            nameSize = entry.nameSize;
          }
          const raw = dec.decodeStr();
          value = latin1(raw);
          if (incremental) this.table.add(name, value, nameSize, raw.length);
        }
        size += name.length + value.length + 32;
        if (size > this.maxListSize) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `header list exceeds ${this.maxListSize} bytes`);
        out.push([name, value]);
      }
    } catch (err) {
      if (err instanceof ConnectionError) throw err;
      throw new ConnectionError(ErrorCode.COMPRESSION_ERROR, `header block does not decode: ${(err as Error).message}`);
    }
    return out;
  }
}

const STATUS_200 = 0x88; // static table index 8, ":status: 200"

function pushLength(out: number[], n: number, prefixBits: number, firstByteHigh: number): void {
  const max = (1 << prefixBits) - 1;
  if (n < max) {
    out.push(firstByteHigh | n);
    return;
  }
  out.push(firstByteHigh | max);
  n -= max;
  while (n >= 128) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
}

/** Literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman. */
export function encodeHeaders(headers: HeaderList, withStatus200: boolean): Buffer {
  const bytes: number[] = withStatus200 ? [STATUS_200] : [];
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    bytes.push(0x00);
    pushLength(bytes, n.length, 7, 0);
    parts.push(Buffer.from(bytes), n);
    bytes.length = 0;
    pushLength(bytes, v.length, 7, 0);
    parts.push(Buffer.from(bytes), v);
    bytes.length = 0;
  }
  if (bytes.length) parts.unshift(Buffer.from(bytes));
  return Buffer.concat(parts);
}
