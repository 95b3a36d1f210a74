// conmon's control fifo (`ctl`: terminal resizes, log reopening) and the connection to its attach socket.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { errorMessage, failedPrecondition, hasCode, invalidArgument } from '../../common/errors.js';
import { openAttach, type AttachOptions, type AttachSession } from './attach.js';
import { UNIX_SOCKET_PATH_MAX } from './paths.js';

/** open(2)'s O_PATH (Linux), which Node's fs.constants leaves out. */
const O_PATH = 0o10000000;
const CTL_RESIZE = 1;
const CTL_REOPEN_LOG = 2;
/** The largest message conmon reads from an attach socket (its CONN_SOCK_BUF_SIZE; CRI-O's io.Copy writes 32 KiB). */
export const ATTACH_MESSAGE_MAX = 32 * 1024;

export function resizeMessage(width: number, height: number): string {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0 || width > 1000 || height > 1000) {
    throw invalidArgument(`terminal size ${width}x${height} out of range 0..1000`);
  }
  return `${CTL_RESIZE} ${height} ${width}\n`;
}

export const REOPEN_LOG_MESSAGE = `${CTL_REOPEN_LOG} 0 0\n`;

/** Writes one control message; FailedPrecondition when no conmon reads the fifo any more. */
export async function writeControl(fifo: string, message: string, what: string): Promise<void> {
  let handle: fsp.FileHandle;
  try {
    // Non-blocking open fails with ENXIO instead of hanging when conmon is gone.
    handle = await fsp.open(fifo, fsp.constants.O_WRONLY | fsp.constants.O_NONBLOCK);
  } catch (err) {
    if (hasCode(err, 'ENXIO') || hasCode(err, 'ENOENT')) {
      throw failedPrecondition(`${what} has no running monitor (${fifo}: ${errorMessage(err)})`);
    }
    throw err;
  }
  try {
    await handle.write(message);
  } finally {
    await handle.close();
  }
}

/** Connects to a conmon attach socket; each stdin write is one message, so the session says how large one may be. */
export async function connectAttach(socketPath: string, opts: AttachOptions = {}): Promise<AttachSession & { maxStdinChunk: number }> {
  const session = await connect(socketPath, opts);
  return Object.assign(session, { maxStdinChunk: ATTACH_MESSAGE_MAX });
}

async function connect(socketPath: string, opts: AttachOptions): Promise<AttachSession> {
  if (socketPath.length <= UNIX_SOCKET_PATH_MAX) return openAttach(socketPath, socketPath, opts);
  // Too long for sun_path (a long --run-root): reach the socket through a short /proc/self/fd path, as conmon binds it.
  let dir: fsp.FileHandle;
  try {
    dir = await fsp.open(path.dirname(socketPath), O_PATH | fsp.constants.O_DIRECTORY);
  } catch (err) {
    throw failedPrecondition(`cannot attach to ${socketPath}: ${errorMessage(err)}`);
  }
  try {
    return await openAttach(`/proc/self/fd/${dir.fd}/attach`, socketPath, opts);
  } finally {
    await dir.close();
  }
}
