// Copying between the client's streams and a process's pipes with backpressure: the source is paused
// while the destination is full, so a fast sender can't make the daemon buffer what a slow reader
// has not taken yet.
import type { Readable, Writable } from 'node:stream';

/**
 * Copies `from` into `to`, pausing `from` while `to` wants a drain. With `end`, ends `to` when `from`
 * ends. Once `to` is gone (destroyed, ended), what still arrives is read and dropped, so the sender
 * is not left stuck on a process that stopped reading for good. With `maxChunk`, longer chunks are
 * written in pieces (for a destination that keeps message boundaries).
 */
export function relay(from: Readable | null | undefined, to: Writable | undefined, opts: { end?: boolean; maxChunk?: number } = {}): void {
  if (!from) return;
  if (!to) {
    from.resume();
    return;
  }
  let waiting = false;
  const goOn = (): void => {
    if (!waiting) return;
    waiting = false;
    to.off('drain', goOn);
    to.off('close', goOn);
    from.resume();
  };
  const max = opts.maxChunk ?? Infinity;
  from.on('data', (chunk: Buffer) => {
    if (to.destroyed || to.writableEnded) return;
    let more = true;
    for (let off = 0; off < chunk.length; off += max) more = to.write(chunk.length <= max ? chunk : chunk.subarray(off, off + max));
    if (!more && !waiting) {
      waiting = true;
      from.pause();
      to.on('drain', goOn);
      to.on('close', goOn);
    }
  });
  if (opts.end) {
    from.once('end', () => {
      if (!to.destroyed && !to.writableEnded) to.end();
    });
  }
}
