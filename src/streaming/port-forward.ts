// Port-forward into a pod's network namespace: per forwarded connection one
// `nsenter --net=… node netns-dial.js 127.0.0.1 PORT` (Node can't enter a netns itself; socat would not
// end its stdout when the pod side closes), carried over SPDY streams or WebSocket channels.
import { PassThrough, Writable, type Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { WebSocket } from 'ws';
import { spawnChild } from '../common/exec.js';
import type { Logger } from '../common/log.js';
import type { SpdySession, SpdyStream } from './spdy.js';
import { STREAM_DATA, STREAM_ERROR, portPrefix } from './protocol.js';
import { STREAM_CREATION_TIMEOUT_MS, wsChannelWriter, wsClosed } from './channels.js';
import { relay } from './flow.js';

/** What a WebSocket port-forward buffers per port before it stops reading the connection. */
const WS_INPUT_BUFFER = 64 * 1024;

export interface PortForwardTarget {
  sandboxId: string;
  /** Unset for host-network sandboxes. */
  netnsPath?: string;
}

const DIAL_PROGRAM = fileURLToPath(new URL('./netns-dial.js', import.meta.url));

/**
 * Relays one connection to 127.0.0.1:port inside the pod. Resolves when it is over; reports why it
 * failed (nothing listening, for one) through onError, in the kubelet's words.
 */
export async function forwardConnection(
  target: PortForwardTarget,
  port: number,
  input: Readable,
  output: Writable,
  onError: (message: string) => void,
  log: Logger,
  signal?: AbortSignal,
): Promise<void> {
  const dialArgs = [DIAL_PROGRAM, '127.0.0.1', String(port)];
  const [file, args] = target.netnsPath ? ['nsenter', [`--net=${target.netnsPath}`, process.execPath, ...dialArgs]] : [process.execPath, dialArgs];
  const child = spawnChild(file, args, { stdin: 'pipe', stdout: 'pipe', stderr: 'pipe', buffer: false, reject: false });
  void child.then(undefined, () => undefined);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < 4096) stderr += chunk.toString('utf8');
  });
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code) => resolve(code ?? -1));
    child.once('error', () => resolve(-1));
  });
  child.stdin?.on('error', () => undefined);
  relay(input, child.stdin ?? undefined, { end: true });
  relay(child.stdout, output, { end: true });
  const onAbort = (): void => {
    child.kill('SIGKILL');
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const code = await exited;
  signal?.removeEventListener('abort', onAbort);
  if (code !== 0 && !signal?.aborted) {
    const why = stderr.trim().split('\n').pop() ?? '';
    log.debug({ port, code, why }, 'port-forward connection failed');
    onError(`error forwarding port ${port} to pod ${target.sandboxId}, uid : ${why || `exit status ${code}`}`);
  }
}

/** Serves SPDY port-forward: per request id an error and a data stream, each naming the port. */
export function serveSpdyPortForward(
  session: SpdySession,
  target: PortForwardTarget,
  log: Logger,
  pairTimeoutMs = STREAM_CREATION_TIMEOUT_MS,
): Promise<void> {
  const pairs = new Map<string, { error?: SpdyStream; data?: SpdyStream; timer?: NodeJS.Timeout }>();
  const abort = new AbortController();
  session.on('stream', (stream) => {
    stream.respond();
    const type = stream.headers.streamtype;
    // Clients before request ids: the data stream follows its error stream (ids two apart).
    const requestId = stream.headers.requestid ?? String(type === STREAM_DATA ? stream.id - 2 : stream.id);
    if (type !== STREAM_ERROR && type !== STREAM_DATA) {
      stream.reset();
      return;
    }
    let pair = pairs.get(requestId);
    if (!pair) {
      const created: { error?: SpdyStream; data?: SpdyStream; timer?: NodeJS.Timeout } = {};
      // Half a pair is not kept for ever (the kubelet's stream creation timeout).
      created.timer = setTimeout(() => {
        pairs.delete(requestId);
        log.info({ requestId }, 'port-forward stream pair not completed in time; reset');
        if (created.error && !created.error.destroyed) created.error.end('timed out waiting for complete stream pair');
        created.data?.reset();
      }, pairTimeoutMs);
      created.timer.unref();
      pairs.set(requestId, created);
      pair = created;
    }
    if (type === STREAM_ERROR) {
      if (pair.error) return stream.reset();
      pair.error = stream;
      stream.resume(); // clients close their side of the error stream at once
    } else {
      if (pair.data) return stream.reset();
      pair.data = stream;
    }
    if (!pair.error || !pair.data) return;
    clearTimeout(pair.timer);
    pairs.delete(requestId);
    const { error, data } = pair;
    const port = Number(stream.headers.port);
    if (!Number.isInteger(port) || port <= 0 || port > 65535) {
      error.end(`invalid port ${JSON.stringify(stream.headers.port ?? '')}`);
      data.reset();
      return;
    }
    void forwardConnection(target, port, data, data, (message) => error.write(message), log, abort.signal).finally(() => {
      if (!data.destroyed) data.end();
      if (!error.destroyed) error.end();
    });
  });
  return session.closed.then(() => {
    abort.abort();
    for (const pair of pairs.values()) clearTimeout(pair.timer);
    pairs.clear();
  });
}

/** Serves WebSocket port-forward: channels 2i (data) and 2i+1 (error) for the i-th port, each opened with the port. */
export async function serveWsPortForward(ws: WebSocket, protocol: string, ports: number[], target: PortForwardTarget, log: Logger): Promise<void> {
  const base64 = protocol.startsWith('base64.');
  const send = wsChannelWriter(ws, base64);
  const abort = new AbortController();
  const inputs = ports.map(() => new PassThrough({ highWaterMark: WS_INPUT_BUFFER }));
  // One connection carries every port: reading stops while any port's input is full, as with SPDY.
  const full = new Set<PassThrough>();
  const goOn = (): void => {
    for (const i of [...full]) {
      if (i.writableNeedDrain && !i.destroyed) continue;
      full.delete(i);
      i.off('drain', goOn);
    }
    if (full.size === 0) ws.resume();
  };
  ws.on('message', (raw: Buffer | ArrayBuffer | Buffer[]) => {
    let data = Buffer.isBuffer(raw) ? raw : Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw);
    if (data.length === 0) return;
    let channel = data[0]!;
    data = data.subarray(1);
    if (base64) {
      channel -= 48;
      data = Buffer.from(data.toString('latin1'), 'base64');
    }
    const input = channel % 2 === 0 ? inputs[channel / 2] : undefined;
    if (input && !input.writableEnded && !input.destroyed && !input.write(data)) {
      ws.pause();
      if (!full.has(input)) {
        full.add(input);
        input.on('drain', goOn);
      }
    }
  });
  const gone = wsClosed(ws);
  void gone.then(() => {
    abort.abort();
    for (const input of inputs) input.end();
  });
  for (let i = 0; i < ports.length; i++) {
    await send(2 * i, portPrefix(ports[i]!));
    await send(2 * i + 1, portPrefix(ports[i]!));
  }
  await Promise.all(
    ports.map((port, i) => {
      const output = new Writable({
        write(chunk: Buffer, _enc: BufferEncoding, cb: () => void) {
          send(2 * i, chunk).then(() => cb());
        },
      });
      return forwardConnection(target, port, inputs[i]!, output, (message) => void send(2 * i + 1, Buffer.from(message)), log, abort.signal);
    }),
  );
  if (ws.readyState === ws.OPEN) ws.close(1000);
  await gone;
}
