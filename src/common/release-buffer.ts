// Frees a Buffer's memory now instead of at the garbage collection that finds it dead: V8 collects garbage
// buffers only every ~64 MiB of them, and the malloc heap they lived in stays fragmented and resident after.
import v8 from 'node:v8';
import vm from 'node:vm';

type Transfer = (this: ArrayBuffer, newLength?: number) => ArrayBuffer;

let transfer: Transfer | null | undefined;

function resolveTransfer(): Transfer | null {
  const native = (ArrayBuffer.prototype as { transfer?: Transfer }).transfer;
  if (typeof native === 'function') return native;
  try {
    // Node 20's V8 has ArrayBuffer.prototype.transfer behind a flag that only applies to contexts made after it.
    v8.setFlagsFromString('--harmony-rab-gsab-transfer');
    const flagged = vm.runInNewContext('ArrayBuffer.prototype.transfer') as unknown;
    return typeof flagged === 'function' ? (flagged as Transfer) : null;
  } catch {
    return null;
  }
}

/**
 * Detaches an ArrayBuffer, freeing its memory at once: every view of it reads as empty afterwards. Only for memory
 * nothing reads any more, and never node's shared pool (Buffers smaller than half of it are slices of it).
 */
export function releaseArrayBuffer(ab: ArrayBufferLike): void {
  if (!(ab instanceof ArrayBuffer) || ab.byteLength === 0) return;
  transfer ??= resolveTransfer();
  transfer?.call(ab, 0);
}

/** releaseArrayBuffer of buf's memory when buf spans all of it (a slice's memory may hold other data, or be the pool). */
export function releaseBuffer(buf: Buffer): void {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) releaseArrayBuffer(buf.buffer);
}

/** Readers still to finish with a buffer given to shareBuffer, by its memory. */
const readersLeft = new WeakMap<ArrayBufferLike, number>();

/** Has buf (which spans all its memory) freed once each of `readers` readers has called doneReading on it. */
export function shareBuffer(buf: Buffer, readers: number): void {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) readersLeft.set(buf.buffer, readers);
}

/** One reader of a buffer given to shareBuffer is done with it; anything else is left to the garbage collector. */
export function doneReading(buf: Buffer): void {
  const left = readersLeft.get(buf.buffer);
  if (left === undefined) return;
  if (left > 1) return void readersLeft.set(buf.buffer, left - 1);
  readersLeft.delete(buf.buffer);
  releaseBuffer(buf);
}
