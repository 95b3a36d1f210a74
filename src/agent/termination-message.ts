// A container's termination message, as the kubelet makes it: a host file mounted at terminationMessagePath,
// read (its last 4 KiB) once the container exited; with terminationMessagePolicy FallbackToLogsOnError, a
// failed container that wrote nothing there gets the tail of its log instead (80 lines, 2 KiB).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export const TERMINATION_MESSAGE_PATH_ANNOTATION = 'io.kubernetes.container.terminationMessagePath';
export const TERMINATION_MESSAGE_POLICY_ANNOTATION = 'io.kubernetes.container.terminationMessagePolicy';
export const MAX_MESSAGE_BYTES = 4 * 1024;
export const MAX_LOG_LINES = 80;
export const MAX_LOG_BYTES = 2 * 1024;
/** How much of the log's end is read to find its last 80 lines (CRI log lines carry a ~40-byte prefix each). */
const LOG_TAIL_READ_BYTES = 64 * 1024;

/** Makes the (empty, world-writable) host file for a container's termination message: <root>/pods/<uid>/containers/<name>/<random>. */
export async function createTerminationMessageFile(root: string, uid: string, containerName: string): Promise<string> {
  const dir = path.join(root, 'pods', uid, 'containers', containerName);
  await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, randomBytes(4).toString('hex'));
  await fsp.writeFile(file, '', { mode: 0o666 });
  await fsp.chmod(file, 0o666); // the umask must not make it unwritable for a non-root container
  return file;
}

/** The last `max` bytes of a file ('' when it does not exist). */
async function tail(file: string, max: number): Promise<string> {
  let fh;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const length = Math.min(size, max);
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, size - length);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}

/** Pure: the content of CRI-format log text ("<time> <stream> <P|F> <content>" lines), partial lines joined; its last `maxLines` lines within `maxBytes`. */
export function lastLogLines(text: string, maxLines = MAX_LOG_LINES, maxBytes = MAX_LOG_BYTES): string {
  const lines: string[] = [];
  let partial = '';
  for (const raw of text.split('\n')) {
    const m = /^\S+ (?:stdout|stderr) ([PF])(?: (.*))?$/.exec(raw);
    if (!m) continue;
    partial += m[2] ?? '';
    if (m[1] === 'F') {
      lines.push(partial);
      partial = '';
    }
  }
  if (partial) lines.push(partial);
  let out = lines.slice(-maxLines).map((l) => `${l}\n`).join('');
  const bytes = Buffer.from(out);
  if (bytes.length > maxBytes) out = bytes.subarray(bytes.length - maxBytes).toString('utf8');
  return out;
}

export interface ExitedContainerInfo {
  exitCode: number;
  reason: string;
  annotations?: Record<string, string>;
  mounts?: Array<{ container_path?: string; host_path?: string }>;
  logPath?: string;
}

/** The kubelet's termination message of an exited container ('' for none). */
export async function terminationMessage(c: ExitedContainerInfo): Promise<string> {
  const messagePath = c.annotations?.[TERMINATION_MESSAGE_PATH_ANNOTATION] ?? '';
  const fallbackToLogs = c.annotations?.[TERMINATION_MESSAGE_POLICY_ANNOTATION] === 'FallbackToLogsOnError' && c.exitCode !== 0 && c.reason !== 'ContainerCannotRun';
  let message = '';
  const mount = messagePath ? c.mounts?.find((m) => m.container_path === messagePath) : undefined;
  if (mount?.host_path) {
    try {
      message = await tail(mount.host_path, MAX_MESSAGE_BYTES);
    } catch (err) {
      return `Error on reading termination log ${mount.host_path}: ${(err as Error).message}`;
    }
  }
  if (!message && fallbackToLogs && c.logPath) message = lastLogLines(await tail(c.logPath, LOG_TAIL_READ_BYTES).catch(() => ''));
  return message;
}
