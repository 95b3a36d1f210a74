// A client of conmon's attach socket. The socket is SOCK_SEQPACKET, which Node's net module can't
// open, hence node-unix-socket. Each message from conmon is one frame: a byte naming the pipe
// (2 stdout, 3 stderr) then the data; bytes we send are the container's stdin, and shutting down
// our write side ends stdin when the container was created with stdinOnce.
// node-unix-socket reads every message as it arrives (it has no pause), so nothing here can hold
// conmon back; and holding it back would stall the container and its log. Like conmon with a slow
// attach client, output a slow reader has not taken is bounded: past the bound, frames are dropped.
import { PassThrough, Writable, type Readable } from 'node:stream';
import { SeqpacketSocket } from 'node-unix-socket';
import { errorMessage, failedPrecondition } from '../../common/errors.js';
import { releaseBuffer } from '../../common/release-buffer.js';

const PIPE_STDOUT = 2;
const PIPE_STDERR = 3;
/** Larger than any frame conmon writes, so no message is ever cut. */
const READ_BUFFER_SIZE = 64 * 1024;
/** Output held per stream for a reader that has not taken it yet; more is dropped. */
export const DEFAULT_MAX_BUFFERED = 4 * 1024 * 1024;

export interface AttachOptions {
  /** Bytes of unread output kept per stream before frames are dropped (default DEFAULT_MAX_BUFFERED). */
  maxBuffered?: number;
}

export interface AttachSession {
  /** The container's stdout (or the tty's output). */
  stdout: Readable;
  stderr: Readable;
  /** Bytes written here reach the container's stdin; end() closes our side. */
  stdin: Writable;
  /** Resolves when conmon closes the connection (the container exited) or close() was called. */
  closed: Promise<void>;
  close(): void;
  /** Output bytes dropped so far because the reader was behind by more than maxBuffered. */
  droppedBytes(): number;
}

/** `shownPath` names the socket in errors when `socketPath` is an indirect (/proc/self/fd) path to it. */
export async function openAttach(socketPath: string, shownPath = socketPath, opts: AttachOptions = {}): Promise<AttachSession> {
  const maxBuffered = opts.maxBuffered ?? DEFAULT_MAX_BUFFERED;
  let dropped = 0;
  const socket = new SeqpacketSocket();
  socket.setInternalReadBufferSize(READ_BUFFER_SIZE);
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let finished = false;
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });
  const finish = (): void => {
    if (finished) return;
    finished = true;
    stdout.end();
    stderr.end();
    resolveClosed();
  };

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(failedPrecondition(`cannot attach to ${shownPath}: ${errorMessage(err)}`));
    socket.once('error', onError);
    try {
      socket.connect(socketPath, () => {
        socket.off('error', onError);
        resolve();
      });
    } catch (err) {
      reject(failedPrecondition(`cannot attach to ${shownPath}: ${errorMessage(err)}`));
    }
  });

  socket.on('data', (frame: Buffer) => {
    if (frame.length < 1) return;
    const to = frame[0] === PIPE_STDOUT ? stdout : frame[0] === PIPE_STDERR ? stderr : undefined;
    if (!to || to.writableEnded) return;
    if (to.writableLength + to.readableLength + frame.length - 1 > maxBuffered) {
      dropped += frame.length - 1;
      // Freed now, not at the collection that finds it: a container writing fast to a reader that takes
      // nothing makes tens of MiB of these a second.
      releaseBuffer(frame);
      return;
    }
    to.write(frame.subarray(1));
  });
  socket.on('end', finish);
  socket.on('close', finish);
  socket.on('error', finish);

  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (finished) return callback();
      try {
        socket.write(chunk, 0, chunk.length, () => callback());
      } catch (err) {
        callback(err as Error);
      }
    },
    final(callback) {
      if (finished) return callback();
      try {
        socket.end(() => callback());
      } catch {
        callback();
      }
    },
  });

  return {
    stdout,
    stderr,
    stdin,
    closed,
    close() {
      if (!finished) socket.destroy();
      finish();
    },
    droppedBytes: () => dropped,
  };
}
