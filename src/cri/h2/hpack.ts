// Header blocks (RFC 7541): request blocks decoded here, with the dynamic table a connection keeps and a
// Huffman decoder run as a 4-bit state machine; response blocks written as literals without indexing and
// without Huffman, so no encoder state is kept. hpack.js supplies only the RFC's tables (static table,
// Huffman code): its own decoder walked the code a bit at a time and built an array per string, 10-15 %
// of a trivial call's CPU in its profile.
import { createRequire } from 'node:module';
import { ConnectionError, ErrorCode } from './frames.js';

// The two data files alone: hpack.js's index would also load its coders and their stream libraries.
const require = createRequire(import.meta.url);
const HUFFMAN_CODE = (require('hpack.js/lib/hpack/huffman.js') as { encode: Array<[bits: number, code: number]> }).encode;
const STATIC_TABLE = (require('hpack.js/lib/hpack/static-table.js') as { table: Array<{ name: string; value: string }> }).table;

/** Decoded fields may be shared with the decoder's tables: read them, never change them. */
export type HeaderList = Array<[name: string, value: string]>;

const STATIC: ReadonlyArray<[string, string]> = STATIC_TABLE.map((e): [string, string] => [e.name, e.value]);
const ENTRY_OVERHEAD = 32; // RFC 7541 §4.1: an entry's size is name + value + 32 octets

// --- Huffman (RFC 7541 §5.2, Appendix B) ---

const EOS = 256;
const NO_SYMBOL = 0x1ff;
/** Per state (a node of the code tree) and nibble: next state | symbol emitted (or NO_SYMBOL) << 8; -1 fails. */
const HUFFMAN_STEP = new Int32Array(256 * 16);
/** States in which a string may end: reached from the root by at most 7 one-bits (EOS padding). */
const HUFFMAN_ACCEPTS = new Uint8Array(256);

(function buildHuffmanMachine(): void {
  // The code tree: internal nodes numbered from 0 (the root); a child is a node number or ~symbol for a leaf.
  const children: Array<[number, number]> = [[0, 0]];
  const UNSET = 0;
  HUFFMAN_CODE.forEach(([bits, code], symbol) => {
    let node = 0;
    for (let i = bits - 1; i >= 0; i--) {
      const bit = (code >>> i) & 1;
      if (i === 0) {
        children[node]![bit] = ~symbol;
      } else {
        if (children[node]![bit] === UNSET) {
          children.push([UNSET, UNSET]);
          children[node]![bit] = children.length - 1;
        }
        node = children[node]![bit]!;
      }
    }
  });
  if (children.length !== 256) throw new Error(`HPACK Huffman table: ${children.length} internal nodes, want 256`);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let emitted = NO_SYMBOL;
      let failed = false;
      for (let i = 3; i >= 0; i--) {
        const child = children[node]![(nibble >>> i) & 1]!;
        if (child > 0) {
          node = child;
        } else {
          const symbol = ~child;
          // A 4-bit step emits at most one symbol: the shortest code is 5 bits.
          if (symbol === EOS || emitted !== NO_SYMBOL) failed = true;
          emitted = symbol;
          node = 0;
        }
      }
      HUFFMAN_STEP[state * 16 + nibble] = failed ? -1 : node | (emitted << 8);
    }
  }
  let node = 0;
  for (let ones = 0; ones <= 7; ones++) {
    HUFFMAN_ACCEPTS[node] = 1;
    node = children[node]![1]!;
  }
})();

/** Scratch for decoded octets: a Huffman string decodes to at most 8/5 of its length. */
let scratch = Buffer.allocUnsafe(1024);

function huffmanDecode(block: Buffer, start: number, end: number): string {
  const need = Math.ceil(((end - start) * 8) / 5);
  if (scratch.length < need) scratch = Buffer.allocUnsafe(need);
  let state = 0;
  let n = 0;
  for (let at = start; at < end; at++) {
    const byte = block[at]!;
    let step = HUFFMAN_STEP[state * 16 + (byte >>> 4)]!;
    if (step < 0) throw new Error('Huffman string holds EOS');
    if (step >>> 8 !== NO_SYMBOL) scratch[n++] = step >>> 8;
    state = step & 0xff;
    step = HUFFMAN_STEP[state * 16 + (byte & 15)]!;
    if (step < 0) throw new Error('Huffman string holds EOS');
    if (step >>> 8 !== NO_SYMBOL) scratch[n++] = step >>> 8;
    state = step & 0xff;
  }
  if (!HUFFMAN_ACCEPTS[state]) throw new Error('Huffman string not padded with the EOS prefix');
  return scratch.toString('latin1', 0, n);
}

// --- decoding a block ---

/** Reads the header block a field at a time; every read checks the bounds of the block. */
class BlockReader {
  at = 0;
  constructor(readonly block: Buffer) {}

  get done(): boolean {
    return this.at >= this.block.length;
  }

  /** An integer with an N-bit prefix (RFC 7541 §5.1); values past 2^28 are refused. */
  int(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.byte() & max;
    if (value < max) return value;
    for (let shift = 0; ; shift += 7) {
      if (shift > 21) throw new Error('integer too large');
      const b = this.byte();
      value += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return value;
    }
  }

  /** A string literal (RFC 7541 §5.2), Huffman-coded or raw octets. */
  str(): string {
    const huffman = (this.block[this.at]! & 0x80) !== 0;
    const length = this.int(7);
    const start = this.at;
    const end = start + length;
    if (end > this.block.length) throw new Error('string runs past the block');
    this.at = end;
    return huffman ? huffmanDecode(this.block, start, end) : this.block.toString('latin1', start, end);
  }

  private byte(): number {
    if (this.at >= this.block.length) throw new Error('field runs past the block');
    return this.block[this.at++]!;
  }
}

/**
 * One connection's decoding state (the dynamic table lives across blocks). A block that fails to decode,
 * or whose header list exceeds `maxListSize` (RFC 7541 sizes: name + value + 32), is a connection error:
 * the table can no longer be trusted.
 */
export class HeaderDecoder {
  /** The dynamic table, oldest entry first (index 62 is the newest, at the end). */
  private readonly entries: Array<[string, string]> = [];
  private tableSize = 0;
  private maxTableSize: number;

  constructor(
    /** The largest table the peer may ask for: SETTINGS_HEADER_TABLE_SIZE, 4096 unless advertised. */
    private readonly tableLimit: number,
    private readonly maxListSize: number,
  ) {
    this.maxTableSize = tableLimit;
  }

  decode(block: Buffer): HeaderList {
    const r = new BlockReader(block);
    const out: HeaderList = [];
    let listSize = 0;
    try {
      while (!r.done) {
        const first = block[r.at]!;
        let field: [string, string];
        if (first & 0x80) {
          field = this.lookup(r.int(7)); // indexed field (§6.1)
        } else if (first & 0x40) {
          field = this.literal(r, 6); // literal with incremental indexing (§6.2.1)
          this.add(field);
        } else if (first & 0x20) {
          // Dynamic table size update (§6.3): only before the block's first field.
          if (out.length) throw new Error('table size update after a header field');
          this.resize(r.int(5));
          continue;
        } else {
          field = this.literal(r, 4); // without indexing or never indexed (§6.2.2, §6.2.3)
        }
        listSize += field[0].length + field[1].length + ENTRY_OVERHEAD;
        if (listSize > this.maxListSize) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `header list exceeds ${this.maxListSize} bytes`);
        out.push(field);
      }
    } catch (err) {
      if (err instanceof ConnectionError) throw err;
      throw new ConnectionError(ErrorCode.COMPRESSION_ERROR, `header block does not decode: ${(err as Error).message}`);
    }
    return out;
  }

  private literal(r: BlockReader, prefixBits: number): [string, string] {
    const index = r.int(prefixBits);
    const name = index === 0 ? r.str() : this.lookup(index)[0];
    return [name, r.str()];
  }

  private lookup(index: number): [string, string] {
    if (index === 0) throw new Error('index 0');
    if (index <= STATIC.length) return STATIC[index - 1]!;
    const entry = this.entries[this.entries.length - (index - STATIC.length)];
    if (!entry) throw new Error(`index ${index} past the table`);
    return entry;
  }

  private add(field: [string, string]): void {
    const size = field[0].length + field[1].length + ENTRY_OVERHEAD;
    if (size > this.maxTableSize) {
      // An entry larger than the table empties it and is not added (§4.4).
      this.entries.length = 0;
      this.tableSize = 0;
      return;
    }
    this.tableSize += size;
    this.entries.push(field);
    this.evict();
  }

  private resize(size: number): void {
    if (size > this.tableLimit) throw new Error(`table size ${size} above the ${this.tableLimit} allowed`);
    this.maxTableSize = size;
    this.evict();
  }

  private evict(): void {
    let drop = 0;
    while (this.tableSize > this.maxTableSize) {
      const [name, value] = this.entries[drop++]!;
      this.tableSize -= name.length + value.length + ENTRY_OVERHEAD;
    }
    if (drop) this.entries.splice(0, drop);
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
