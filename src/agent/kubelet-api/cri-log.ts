// Container logs in the CRI log format (`<RFC3339Nano> <stdout|stderr> <P|F> <text>`), read the way
// `kubectl logs` expects: partial lines joined, tailLines, since, timestamps, limitBytes, follow.
import { promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface CriLogEntry {
  /** The RFC3339Nano timestamp as written (of the line's first part). */
  time: string;
  stream: 'stdout' | 'stderr';
  /** The text with its newline when the runtime saw one. */
  text: string;
}

export interface LogReadOptions {
  tailLines?: number;
  /** Entries stamped before this are skipped. */
  since?: Date;
  timestamps?: boolean;
  limitBytes?: number;
  follow?: boolean;
  /** How often a followed file is checked for growth. */
  pollMs?: number;
}

/** Splits CRI log bytes into entries, joining P(artial) lines with the F(ull) one that ends them. */
export class CriLogParser {
  private carry = '';
  private partial?: CriLogEntry;

  /** Feeds bytes; returns the complete entries they finish. */
  push(chunk: string): CriLogEntry[] {
    const text = this.carry + chunk;
    const lines = text.split('\n');
    this.carry = lines.pop() ?? '';
    const out: CriLogEntry[] = [];
    for (const line of lines) {
      const parsed = parseCriLogLine(line);
      if (!parsed) continue;
      if (this.partial && this.partial.stream === parsed.stream) {
        this.partial.text += parsed.text;
      } else {
        if (this.partial) out.push(this.partial);
        this.partial = { time: parsed.time, stream: parsed.stream, text: parsed.text };
      }
      if (parsed.full) {
        this.partial.text += '\n';
        out.push(this.partial);
        this.partial = undefined;
      }
    }
    return out;
  }
}

/** One line of a CRI log file; undefined for a line that is not in the format. */
export function parseCriLogLine(line: string): { time: string; stream: 'stdout' | 'stderr'; full: boolean; text: string } | undefined {
  const first = line.indexOf(' ');
  const second = first < 0 ? -1 : line.indexOf(' ', first + 1);
  if (second < 0) return undefined;
  const stream = line.slice(first + 1, second);
  if (stream !== 'stdout' && stream !== 'stderr') return undefined;
  const third = line.indexOf(' ', second + 1);
  const tags = third < 0 ? line.slice(second + 1) : line.slice(second + 1, third);
  const text = third < 0 ? '' : line.slice(third + 1);
  return { time: line.slice(0, first), stream, full: !tags.split(':').includes('P'), text };
}

function entryTime(entry: CriLogEntry): number {
  return Date.parse(entry.time);
}

function render(entry: CriLogEntry, timestamps: boolean | undefined): string {
  return timestamps ? `${entry.time} ${entry.text}` : entry.text;
}

/**
 * Writes a log file's entries to `write` (which resolves when the consumer wants more).
 * When following, keeps reading as the file grows until `stillRunning` says the container is done
 * and the file is read to its end, `signal` aborts, or limitBytes is reached. A rotated file
 * (a new inode under the same path) is read from its start.
 */
export async function streamCriLog(
  file: string,
  opts: LogReadOptions,
  write: (text: string) => Promise<void>,
  signal: AbortSignal,
  stillRunning: () => Promise<boolean>,
): Promise<void> {
  let budget = opts.limitBytes ?? Infinity;
  const emit = async (entries: CriLogEntry[]): Promise<boolean> => {
    let text = '';
    for (const e of entries) {
      if (opts.since && entryTime(e) < opts.since.getTime()) continue;
      text += render(e, opts.timestamps);
    }
    if (!text) return true;
    const bytes = Buffer.from(text);
    if (bytes.length >= budget) {
      await write(bytes.subarray(0, budget).toString());
      budget = 0;
      return false;
    }
    budget -= bytes.length;
    await write(text);
    return true;
  };

  let handle = await fsp.open(file, 'r');
  try {
    const parser = new CriLogParser();
    const { size } = await handle.stat();
    let offset = 0;
    // The existing content in one go, so tailLines can pick the last entries.
    const initial = Buffer.alloc(size);
    if (size > 0) await handle.read(initial, 0, size, 0);
    offset = size;
    let entries = parser.push(initial.toString());
    if (opts.tailLines !== undefined) entries = opts.tailLines > 0 ? entries.slice(-opts.tailLines) : [];
    if (!(await emit(entries)) || !opts.follow) return;

    const pollMs = opts.pollMs ?? 200;
    const buf = Buffer.alloc(64 * 1024);
    let lastRunningCheck = 0;
    let running = true;
    while (!signal.aborted) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
      if (bytesRead > 0) {
        offset += bytesRead;
        if (!(await emit(parser.push(buf.subarray(0, bytesRead).toString())))) return;
        continue;
      }
      // At the end of the file: rotated, done, or wait for more.
      const current = await fsp.stat(file).catch(() => undefined);
      const mine = await handle.stat();
      if (current && current.ino !== mine.ino) {
        await handle.close();
        handle = await fsp.open(file, 'r');
        offset = 0;
        continue;
      }
      if (!running) return;
      if (Date.now() - lastRunningCheck >= 1000) {
        lastRunningCheck = Date.now();
        // One more pass after the container stopped picks up its last lines.
        running = await stillRunning();
        if (!running) continue;
      }
      await sleep(pollMs, undefined, { signal }).catch(() => undefined);
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
}
