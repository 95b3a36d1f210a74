// Reads CRI container log files: "<RFC3339Nano time> <stdout|stderr> <P|F> <text>" per line.
// Parsing and joining are pure; following a file (through rotation) is the one part that does I/O.
import { promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasCode } from '../common/errors.js';

export type LogStream = 'stdout' | 'stderr';

export interface CriLogLine {
  time: string;
  stream: LogStream;
  /** True for a "P" line: the text continues on the stream's next line. */
  partial: boolean;
  text: string;
}

/** One line of the container's output, partial fragments joined. */
export interface LogRecord {
  /** Time of the first fragment. */
  time: string;
  stream: LogStream;
  text: string;
  /** False when the output ended without a newline (only partial fragments were written). */
  complete: boolean;
}

/** Parses one log file line (without its newline); undefined when it is not a CRI log line. */
export function parseCriLogLine(line: string): CriLogLine | undefined {
  const timeEnd = line.indexOf(' ');
  if (timeEnd <= 0) return undefined;
  const time = line.slice(0, timeEnd);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(time)) return undefined;
  const streamEnd = line.indexOf(' ', timeEnd + 1);
  const stream = line.slice(timeEnd + 1, streamEnd < 0 ? undefined : streamEnd);
  if (stream !== 'stdout' && stream !== 'stderr') return undefined;
  if (streamEnd < 0) return { time, stream, partial: false, text: '' };
  const rest = line.slice(streamEnd + 1);
  // "F" or "P", then one space and the text (the space may be missing when the text is empty).
  const tag = /^([PF])(?: |$)/.exec(rest);
  if (tag) return { time, stream, partial: tag[1] === 'P', text: rest.slice(2) };
  // The older format without a tag: every line is whole.
  return { time, stream, partial: false, text: rest };
}

/** Joins P fragments with the F line that ends them, separately for stdout and stderr. */
export class LogAssembler {
  private readonly pending = new Map<LogStream, { time: string; parts: string[] }>();
  /** Lines that were not CRI log lines (skipped). */
  malformed = 0;

  /** Feeds one file line; returns the record it completes, if any. */
  push(rawLine: string): LogRecord | undefined {
    if (rawLine === '') return undefined;
    const line = parseCriLogLine(rawLine);
    if (!line) {
      this.malformed++;
      return undefined;
    }
    const open = this.pending.get(line.stream);
    if (line.partial) {
      if (open) open.parts.push(line.text);
      else this.pending.set(line.stream, { time: line.time, parts: [line.text] });
      return undefined;
    }
    if (!open) return { time: line.time, stream: line.stream, text: line.text, complete: true };
    this.pending.delete(line.stream);
    return { time: open.time, stream: line.stream, text: open.parts.join('') + line.text, complete: true };
  }

  /** The fragments still waiting for their end, as incomplete records (at the end of the output). */
  flush(): LogRecord[] {
    const out: LogRecord[] = [];
    for (const [stream, open] of this.pending) out.push({ time: open.time, stream, text: open.parts.join(''), complete: false });
    this.pending.clear();
    return out;
  }
}

/** Splits text into lines, keeping the unterminated tail for the next chunk. */
export class LineSplitter {
  private rest = '';

  push(chunk: string): string[] {
    const text = this.rest + chunk;
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    return lines;
  }

  /** The unterminated tail, if any (the end of the file). */
  end(): string[] {
    const tail = this.rest;
    this.rest = '';
    return tail === '' ? [] : [tail];
  }
}

/** All records of a whole log text, including trailing incomplete fragments. */
export function parseCriLog(text: string): { records: LogRecord[]; malformed: number } {
  const assembler = new LogAssembler();
  const splitter = new LineSplitter();
  const records: LogRecord[] = [];
  for (const line of [...splitter.push(text), ...splitter.end()]) {
    const record = assembler.push(line);
    if (record) records.push(record);
  }
  records.push(...assembler.flush());
  return { records, malformed: assembler.malformed };
}

/** A record as printed: optional timestamp prefix, newline unless it is an unfinished fragment. */
export function renderRecord(record: LogRecord, timestamps: boolean): string {
  return (timestamps ? `${record.time} ` : '') + record.text + (record.complete ? '\n' : '');
}

export interface FollowOptions {
  /** Records already in the file to print first: all when undefined, else the last `tail`. */
  tail?: number;
  /** Whether to keep reading after the end of the file. */
  follow: boolean;
  /** Called between polls; following stops (after a last read) once it resolves true. */
  shouldStop?: () => Promise<boolean>;
  pollIntervalMs?: number;
  signal?: AbortSignal;
}

const READ_CHUNK = 64 * 1024;

/**
 * Reads the CRI log at `path`, calling `emit` for each record. With `follow`, keeps reading as the
 * file grows, reopens it when it is replaced (rotation: a new inode at the same path), and returns
 * once `shouldStop` says so and everything written so far was read.
 */
export async function readCriLog(path: string, emit: (record: LogRecord) => void, opts: FollowOptions): Promise<void> {
  const assembler = new LogAssembler();
  const splitter = new LineSplitter();
  const pollMs = opts.pollIntervalMs ?? 200;
  let backlog: LogRecord[] | undefined = opts.tail !== undefined ? [] : undefined;
  const deliver = (record: LogRecord) => {
    if (backlog) {
      backlog.push(record);
      if (backlog.length > opts.tail!) backlog.shift();
    } else emit(record);
  };
  const feed = (lines: string[]) => {
    for (const line of lines) {
      const record = assembler.push(line);
      if (record) deliver(record);
    }
  };

  let handle = await fsp.open(path, 'r');
  let inode = (await handle.stat()).ino;
  const buffer = Buffer.alloc(READ_CHUNK);
  const decoder = new TextDecoder('utf-8');
  let position = 0;
  const drain = async () => {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      feed(splitter.push(decoder.decode(buffer.subarray(0, bytesRead), { stream: true })));
    }
  };

  try {
    await drain();
    if (backlog) {
      const ready = backlog;
      backlog = undefined;
      ready.forEach(emit);
    }
    let stopping = false;
    while (opts.follow && !opts.signal?.aborted) {
      if (!stopping && opts.shouldStop && (await opts.shouldStop())) stopping = true; // read once more, then stop
      await drain();
      const current = await fsp.stat(path).catch((err: unknown) => (hasCode(err, 'ENOENT') ? undefined : Promise.reject(err)));
      if (current && current.ino !== inode) {
        // Rotated: the old file is complete once drained; continue with the new one from its start.
        await drain();
        feed(splitter.end());
        await handle.close();
        handle = await fsp.open(path, 'r');
        inode = (await handle.stat()).ino;
        position = 0;
        continue;
      }
      if (stopping) break;
      await sleep(pollMs, undefined, opts.signal ? { signal: opts.signal } : undefined).catch(() => undefined);
    }
    feed(splitter.end());
    for (const record of assembler.flush()) emit(record);
  } finally {
    await handle.close();
  }
}
