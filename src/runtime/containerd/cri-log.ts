// The CRI log format nodelet writes for containerd tasks: `<RFC3339Nano> <stdout|stderr> <P|F> <text>\n`, one record
// per line of output; a line longer than the bound is cut into partial (P) records, the last part full (F).
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

/** containerd's CRI default (max_container_log_line_size): bounds memory held per stream for one line. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024;

export type LogStream = 'stdout' | 'stderr';

export interface LogRecord {
  text: Buffer;
  partial: boolean;
}

const NEWLINE = 0x0a;

/**
 * Pure line splitter: `pending` (bytes of an unfinished line) plus a new chunk in, complete records and the new
 * pending bytes out. A line is cut into partial records of `maxLine` bytes when it grows past the bound.
 */
export function splitLogRecords(pending: Buffer, chunk: Buffer, maxLine = DEFAULT_MAX_LINE_BYTES): { records: LogRecord[]; rest: Buffer } {
  const records: LogRecord[] = [];
  let data = pending.length ? Buffer.concat([pending, chunk]) : chunk;
  for (;;) {
    const nl = data.indexOf(NEWLINE);
    if (nl !== -1 && nl <= maxLine) {
      records.push({ text: data.subarray(0, nl), partial: false });
      data = data.subarray(nl + 1);
      continue;
    }
    if (data.length > maxLine) {
      records.push({ text: data.subarray(0, maxLine), partial: true });
      data = data.subarray(maxLine);
      continue;
    }
    break;
  }
  // Copy the rest so a small pending tail does not pin a large chunk.
  return { records, rest: Buffer.from(data) };
}

/** RFC3339 with nanoseconds in UTC, as Go's time.RFC3339Nano prints it (trailing zeros of the fraction dropped). */
export function formatLogTime(ms: number, nanosInMs = 0): string {
  const iso = new Date(ms).toISOString(); // 2026-01-02T03:04:05.678Z
  const frac = `${iso.slice(20, 23)}${String(nanosInMs).padStart(6, '0')}`.replace(/0+$/, '');
  return `${iso.slice(0, 19)}${frac ? `.${frac}` : ''}Z`;
}

export function formatLogRecord(time: string, stream: LogStream, record: LogRecord): Buffer {
  return Buffer.concat([Buffer.from(`${time} ${stream} ${record.partial ? 'P' : 'F'} `), record.text, Buffer.from('\n')]);
}

function now(): string {
  const ms = Date.now();
  // Sub-millisecond digits from the monotonic clock: keeps records of one read ordered by their stamps.
  const nanos = Number(process.hrtime.bigint() % 1_000_000n);
  return formatLogTime(ms, nanos);
}

/**
 * Appends records of both streams to one CRI log file. Writes are queued in order; `write` answers false when the
 * file is behind by more than its high-water mark so the reader can stop taking from the FIFO (the kernel pipe then
 * holds the output and the task blocks, as with a slow disk under conmon). reopen() starts a new file after rotation.
 */
export class CriLogFile {
  private out: WriteStream | undefined;
  private draining: Promise<void> | undefined;
  private readonly pending = new Map<LogStream, Buffer>();
  private readonly flushTimers = new Map<LogStream, NodeJS.Timeout>();

  constructor(
    readonly logPath: string,
    private readonly maxLine = DEFAULT_MAX_LINE_BYTES,
    /** An unfinished line is written as a partial record after this much quiet (so `printf foo` shows up). */
    private readonly partialFlushMs = 1000,
  ) {}

  async open(): Promise<void> {
    if (!this.logPath) return;
    await mkdir(path.dirname(this.logPath), { recursive: true });
    const out = createWriteStream(this.logPath, { flags: 'a', mode: 0o640 });
    this.out = out;
    // The file exists once this resolves (ReopenContainerLog's caller looks for it right away).
    await new Promise<void>((resolve, reject) => {
      out.once('ready', () => resolve());
      out.once('error', reject);
    });
    out.on('error', () => undefined);
  }

  /** Output of one stream; returns false when the file is behind (wait for drain()). */
  write(stream: LogStream, chunk: Buffer): boolean {
    const { records, rest } = splitLogRecords(this.pending.get(stream) ?? Buffer.alloc(0), chunk, this.maxLine);
    this.pending.set(stream, rest);
    this.armFlush(stream, rest.length > 0);
    return this.emit(stream, records);
  }

  /** The stream ended: an unfinished last line is a full record. */
  end(stream: LogStream): void {
    const rest = this.pending.get(stream);
    this.pending.delete(stream);
    this.armFlush(stream, false);
    if (rest?.length) this.emit(stream, [{ text: rest, partial: false }]);
  }

  /** Reading stops before the stream ended (nodelet shuts down): an unfinished line is written as a partial record. */
  suspend(stream: LogStream): void {
    const rest = this.pending.get(stream);
    this.pending.delete(stream);
    this.armFlush(stream, false);
    if (rest?.length) this.emit(stream, [{ text: rest, partial: true }]);
  }

  private armFlush(stream: LogStream, on: boolean): void {
    const t = this.flushTimers.get(stream);
    if (t) clearTimeout(t);
    this.flushTimers.delete(stream);
    if (!on) return;
    const timer = setTimeout(() => {
      this.flushTimers.delete(stream);
      const rest = this.pending.get(stream);
      if (!rest?.length) return;
      this.pending.set(stream, Buffer.alloc(0));
      this.emit(stream, [{ text: rest, partial: true }]);
    }, this.partialFlushMs);
    timer.unref();
    this.flushTimers.set(stream, timer);
  }

  private emit(stream: LogStream, records: LogRecord[]): boolean {
    if (!this.out || records.length === 0) return true;
    const time = now();
    return this.out.write(Buffer.concat(records.map((r) => formatLogRecord(time, stream, r))));
  }

  /** Resolves when the file caught up; one wait is shared by every caller (both streams pause on it). */
  drain(): Promise<void> {
    const out = this.out;
    if (!out || !out.writableNeedDrain) return Promise.resolve();
    this.draining ??= new Promise<void>((resolve) => {
      const done = (): void => {
        out.off('drain', done);
        out.off('close', done);
        this.draining = undefined;
        resolve();
      };
      out.on('drain', done);
      out.on('close', done);
    });
    return this.draining;
  }

  /** Closes the current file (flushing what is queued) and opens the path again: the kubelet rotated it. */
  async reopen(): Promise<void> {
    await this.closeFile();
    await this.open();
  }

  private async closeFile(): Promise<void> {
    const out = this.out;
    this.out = undefined;
    if (!out) return;
    await new Promise<void>((resolve) => out.end(resolve));
  }

  /** Flushes and closes the file; an unfinished line stays unfinished (a partial record: the rest may come later). */
  async close(): Promise<void> {
    for (const s of [...this.pending.keys()]) this.suspend(s);
    await this.closeFile();
  }
}
