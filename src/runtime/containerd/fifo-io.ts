// A task's stdio through named pipes, as containerd's own CRI does: nodelet makes the FIFOs under its run root, the
// shim opens their other ends, and nodelet reads stdout/stderr into the CRI log file and to attach clients. The shim
// also holds a read end of each output FIFO, so while nodelet-cri is down the task's writes fill the kernel pipe and
// then block instead of failing; a restarted nodelet-cri opens the FIFOs again and continues the log where it was.
import { constants as fsConstants, openSync, closeSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { run } from '../../common/exec.js';
import { failedPrecondition, hasCode } from '../../common/errors.js';
import { CriLogFile, DEFAULT_MAX_LINE_BYTES, type LogStream } from './cri-log.js';

/** Output kept per attach client that has not taken it yet; more is dropped (the log keeps everything). */
export const ATTACH_MAX_BUFFERED = 4 * 1024 * 1024;

export interface FifoSet {
  /** '' when the process has no stdin. */
  stdin: string;
  stdout: string;
  /** '' with a terminal (its output is all on stdout). */
  stderr: string;
}

export function fifoSet(dir: string, opts: { stdin: boolean; tty: boolean }): FifoSet {
  return {
    stdin: opts.stdin ? path.join(dir, 'stdin') : '',
    stdout: path.join(dir, 'stdout'),
    stderr: opts.tty ? '' : path.join(dir, 'stderr'),
  };
}

async function mkfifo(file: string): Promise<void> {
  try {
    const st = await fsp.lstat(file);
    if (st.isFIFO()) return;
    await fsp.rm(file, { force: true });
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) throw err;
  }
  await run('mkfifo', ['-m', '0600', file], { timeoutMs: 10_000 });
}

/** Makes the FIFOs of `set` (those not already there). */
export async function makeFifos(dir: string, set: FifoSet): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  for (const f of [set.stdin, set.stdout, set.stderr]) if (f) await mkfifo(f);
}

/** The read end of a FIFO as a stream; O_NONBLOCK so the open never waits for a writer. */
function openReader(file: string): net.Socket {
  const fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  return new net.Socket({ fd, readable: true, writable: false });
}

/**
 * A write end held by nodelet until the shim has opened its own: without a writer, our non-blocking reader would
 * read end-of-file at once. Opened O_RDWR|O_NONBLOCK, which Linux allows on a FIFO and which never blocks.
 */
function openKeeper(file: string): number {
  return openSync(file, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
}

export interface AttachSession {
  stdout: Readable;
  stderr: Readable;
  stdin: Writable;
  closed: Promise<void>;
  close(): void;
  droppedBytes(): number;
}

interface Subscriber {
  stdout: PassThrough;
  stderr: PassThrough;
  dropped: number;
  finish(): void;
}

export interface ProcessIOOptions {
  dir: string;
  stdin: boolean;
  tty: boolean;
  /** The CRI log file ('' for none: exec). */
  logPath?: string;
  maxLineBytes?: number;
  /** Raw output besides the log (exec: the streaming client or execSync's buffers). */
  onOutput?: (stream: LogStream, chunk: Buffer) => void;
}

/**
 * The nodelet side of one process's FIFOs: readers of stdout/stderr feeding the CRI log file and attach clients,
 * and the stdin writer. `ended` resolves when the shim closed both output FIFOs (the process exited and its output
 * was copied) and the log file has what they carried.
 */
export class ProcessIO {
  readonly fifos: FifoSet;
  /** Set by open(). */
  ended: Promise<void> = Promise.resolve();
  private readonly log: CriLogFile | undefined;
  private readonly readers: net.Socket[] = [];
  private keepers: number[] = [];
  private stdinSocket: net.Socket | undefined;
  private readonly subscribers = new Set<Subscriber>();
  private closed = false;

  private constructor(private readonly opts: ProcessIOOptions) {
    this.fifos = fifoSet(opts.dir, opts);
    this.log = opts.logPath ? new CriLogFile(opts.logPath, opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES) : undefined;
  }

  /**
   * Makes the FIFOs and opens our ends before the shim opens its own (`fresh`), or opens them again for a process
   * that already runs (`fresh` false: after a nodelet-cri restart).
   */
  static async open(opts: ProcessIOOptions, fresh: boolean): Promise<ProcessIO> {
    const set = fifoSet(opts.dir, opts);
    if (fresh) await makeFifos(opts.dir, set);
    else {
      for (const f of [set.stdout, set.stderr]) {
        if (f && !(await fsp.lstat(f).then((s) => s.isFIFO(), () => false))) throw failedPrecondition(`output FIFO ${f} is gone`);
      }
    }
    const io = new ProcessIO(opts);
    const endings: Promise<void>[] = [];
    await io.log?.open();
    const streams: Array<[LogStream, string]> = [['stdout', set.stdout]];
    if (set.stderr) streams.push(['stderr', set.stderr]);
    for (const [name, file] of streams) {
      if (fresh) io.keepers.push(openKeeper(file));
      const reader = openReader(file);
      io.readers.push(reader);
      endings.push(io.pump(name, reader));
    }
    io.ended = Promise.all(endings).then(() => undefined);
    if (set.stdin) {
      // Our write end of stdin; O_RDWR so opening never fails for want of a reader (the shim opens its end later).
      const fd = openSync(set.stdin, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
      io.stdinSocket = new net.Socket({ fd, readable: false, writable: true });
      io.stdinSocket.on('error', () => undefined);
    }
    return io;
  }

  /** Copies one output FIFO to the log and the attach clients until the shim closes it. */
  private pump(stream: LogStream, reader: net.Socket): Promise<void> {
    return new Promise<void>((resolve) => {
      reader.on('data', (chunk: Buffer) => {
        this.opts.onOutput?.(stream, chunk);
        for (const s of this.subscribers) {
          const out = stream === 'stdout' ? s.stdout : s.stderr;
          if (out.readableLength > ATTACH_MAX_BUFFERED) s.dropped += chunk.length;
          else out.write(chunk);
        }
        if (this.log && !this.log.write(stream, chunk)) {
          reader.pause();
          void this.log.drain().then(() => reader.resume());
        }
      });
      const done = (): void => {
        // End of the process's output ends its last line; our own shutdown only pauses it (a partial record).
        if (this.closed) this.log?.suspend(stream);
        else this.log?.end(stream);
        resolve();
      };
      reader.once('end', done);
      reader.once('close', done);
      reader.on('error', () => undefined);
    });
  }

  /** The shim has its ends open (Tasks.Create/Exec answered): from now on end-of-file means the process is done. */
  releaseKeepers(): void {
    for (const fd of this.keepers) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.keepers = [];
  }

  /** A live view of the output (from now on) and the stdin writer; several clients may attach at once. */
  attach(opts: { stdin: boolean; onStdinEnd?: () => void }): AttachSession {
    let resolveClosed!: () => void;
    const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
    const sub: Subscriber = {
      stdout: new PassThrough(),
      stderr: new PassThrough(),
      dropped: 0,
      finish: () => {
        if (!this.subscribers.delete(sub)) return;
        sub.stdout.end();
        sub.stderr.end();
        resolveClosed();
      },
    };
    this.subscribers.add(sub);
    void this.ended.then(() => sub.finish());
    const stdinSocket = opts.stdin ? this.stdinSocket : undefined;
    const stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (!stdinSocket || stdinSocket.destroyed) return cb();
        if (stdinSocket.write(chunk)) cb();
        else stdinSocket.once('drain', () => cb());
      },
      final: (cb) => {
        opts.onStdinEnd?.();
        cb();
      },
    });
    return { stdout: sub.stdout, stderr: sub.stderr, stdin, closed, close: () => sub.finish(), droppedBytes: () => sub.dropped };
  }

  /** Writes to the process's stdin (exec with stdin). */
  get stdin(): net.Socket | undefined {
    return this.stdinSocket;
  }

  /**
   * Closes our end of stdin once what was written is in the FIFO (the shim sees end-of-file once no writer is
   * left); destroying it at once dropped queued input beyond the pipe's 64 KiB. Resolves when closed.
   */
  closeStdin(): Promise<void> {
    const socket = this.stdinSocket;
    if (!socket || socket.destroyed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      // 'error' (the process is gone, or shutdown(2) on a FIFO) also ends in 'close'.
      socket.end(() => socket.destroy());
    });
  }

  async reopenLog(): Promise<void> {
    if (!this.log) throw failedPrecondition('this process has no log file');
    await this.log.reopen();
  }

  /** Stops reading (nodelet shuts down or the container is removed); the FIFOs stay unless remove() is called. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Output already read from a FIFO but held in a paused stream goes to the log first: what is
    // still in the kernel's pipe waits there for the next reader, what is in our buffer would be lost.
    for (const r of this.readers) {
      r.pause();
      while (r.read() !== null); // each chunk read is emitted to the pump ('data')
    }
    this.releaseKeepers();
    for (const r of this.readers) r.destroy();
    this.stdinSocket?.destroy();
    for (const s of [...this.subscribers]) s.finish();
    await this.log?.close();
  }

  async remove(): Promise<void> {
    await this.close();
    await fsp.rm(this.opts.dir, { recursive: true, force: true });
  }
}
