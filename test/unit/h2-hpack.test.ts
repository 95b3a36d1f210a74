import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { randomBytes, randomInt } from 'node:crypto';
import { HeaderDecoder, encodeHeaders, type HeaderList } from '../../src/cri/h2/hpack.js';
import { ConnectionError, ErrorCode } from '../../src/cri/h2/frames.js';

interface HpackCompressor {
  write(headers: Array<{ name: string; value: string; huffman: boolean; neverIndex?: boolean }>): void;
  updateTableSize(size: number): void;
  read(): Buffer;
}
const hpackJs = createRequire(import.meta.url)('hpack.js') as { compressor: { create(opts: { table: { maxSize: number } }): HpackCompressor } };

const hex = (s: string) => Buffer.from(s.replace(/\s/g, ''), 'hex');

test('RFC 7541 C.3 and C.4: three requests on one connection, raw and Huffman-coded, share the dynamic table', () => {
  const expected: HeaderList[] = [
    [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']],
    [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache']],
    [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']],
  ];
  const raw = [
    '828684410f7777772e6578616d706c652e636f6d',
    '828684be58086e6f2d6361636865',
    '828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565',
  ];
  const huffman = ['828684418cf1e3c2e5f23a6ba0ab90f4ff', '828684be5886a8eb10649cbf', '828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf'];
  for (const blocks of [raw, huffman]) {
    const decoder = new HeaderDecoder(4096, 1 << 16);
    blocks.forEach((b, i) => assert.deepEqual(decoder.decode(hex(b)), expected[i]));
  }
});

test('decodes what another encoder writes: random lists, Huffman or not, indexed, evicted, table resized', () => {
  const names = [':path', ':method', 'content-type', 'grpc-timeout', 'user-agent', 'te', 'x-custom', 'x-bin-bin'];
  for (const tableSize of [4096, 256, 64]) {
    // A smaller table is announced with a size update at the start of the first block.
    const compressor = hpackJs.compressor.create({ table: { maxSize: tableSize } });
    if (tableSize !== 4096) compressor.updateTableSize(tableSize);
    const decoder = new HeaderDecoder(4096, 1 << 20);
    for (let round = 0; round < 300; round++) {
      const list: HeaderList = [];
      for (let i = randomInt(1, 12); i > 0; i--) {
        const name = names[randomInt(names.length)]!;
        // Values repeat often (indexed on the next use) and cover every octet, Huffman's longest codes included.
        const value = randomInt(3) === 0 ? randomBytes(randomInt(0, 40)).toString('latin1') : `v${randomInt(20)}`;
        list.push([name, value]);
      }
      compressor.write(list.map(([name, value]) => ({ name, value, huffman: randomInt(2) === 0, neverIndex: randomInt(8) === 0 })));
      assert.deepEqual(decoder.decode(compressor.read()), list, `table ${tableSize}, round ${round}`);
    }
  }
});

test('our own response blocks decode back', () => {
  const list: HeaderList = [['content-type', 'application/grpc'], ['grpc-status', '3'], ['grpc-message', 'x'.repeat(300)]];
  assert.deepEqual(new HeaderDecoder(4096, 1 << 16).decode(encodeHeaders(list, true)), [[':status', '200'], ...list]);
});

test('malformed blocks are connection errors that say why; the list size bound is ENHANCE_YOUR_CALM', () => {
  const cases: Array<{ block: string; code: ErrorCode; message: RegExp; maxList?: number }> = [
    { block: '80', code: ErrorCode.COMPRESSION_ERROR, message: /index 0/ },
    { block: 'be', code: ErrorCode.COMPRESSION_ERROR, message: /index 62 past the table/ },
    { block: '400a6375', code: ErrorCode.COMPRESSION_ERROR, message: /string runs past the block/ },
    { block: 'ff', code: ErrorCode.COMPRESSION_ERROR, message: /field runs past the block/ },
    { block: 'ffffffffff0f', code: ErrorCode.COMPRESSION_ERROR, message: /integer too large/ },
    // 'a' (00011) and then a full byte of ones: padding longer than 7 bits.
    { block: '40016182 1fff', code: ErrorCode.COMPRESSION_ERROR, message: /padded/ },
    // 'a' and then padding of zeros, not the EOS prefix.
    { block: '4001618118', code: ErrorCode.COMPRESSION_ERROR, message: /padded/ },
    // The EOS code itself inside a string.
    { block: '400161 84 ffffffff', code: ErrorCode.COMPRESSION_ERROR, message: /EOS/ },
    { block: '3fe11f', code: ErrorCode.COMPRESSION_ERROR, message: /table size 4096 above the 256 allowed/ },
    { block: '82 20', code: ErrorCode.COMPRESSION_ERROR, message: /table size update after a header field/ },
    { block: `0001780a${'79'.repeat(10)}`, code: ErrorCode.ENHANCE_YOUR_CALM, message: /header list exceeds 40 bytes/, maxList: 40 },
  ];
  for (const c of cases) {
    const decoder = new HeaderDecoder(256, c.maxList ?? 4096);
    assert.throws(
      () => decoder.decode(hex(c.block)),
      (err: unknown) => err instanceof ConnectionError && err.code === c.code && c.message.test(err.message),
      c.block,
    );
  }
});

test('a table size update to 0 empties the table: its entries are gone', () => {
  const decoder = new HeaderDecoder(4096, 1 << 16);
  assert.deepEqual(decoder.decode(hex('400178017a')), [['x', 'z']]);
  assert.deepEqual(decoder.decode(hex('be')), [['x', 'z']]);
  assert.deepEqual(decoder.decode(hex('20')), []);
  assert.throws(() => decoder.decode(hex('be')), /index 62 past the table/);
});
