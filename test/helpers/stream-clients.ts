// Test-side helpers over our streaming clients (src/streaming/client.ts): run an exec to the end and
// collect what it printed, read a stream until some text shows up, fetch a page through port-forward.
import type { Readable } from 'node:stream';
import { openPortForward, openRemoteCommand, type ExitOutcome, type StreamFamily } from '../../src/streaming/client.js';
import type { TerminalSize } from '../../src/streaming/protocol.js';

export const FAMILIES: StreamFamily[] = ['spdy', 'websocket'];

export interface Collected extends ExitOutcome {
  stdout: string;
  stderr: string;
  protocol: string;
}

function collect(stream: Readable): { text: () => string } {
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString()));
  return { text: () => text };
}

/** Runs an exec URL to the end, feeding `input` (then closing stdin) when given. */
export async function execCollect(
  url: string,
  family: StreamFamily,
  opts: { input?: string; tty?: boolean; stderr?: boolean; resize?: TerminalSize; protocols?: string[] } = {},
): Promise<Collected> {
  const session = await openRemoteCommand({
    url,
    family,
    stdin: opts.input !== undefined,
    stdout: true,
    stderr: opts.stderr ?? !opts.tty,
    tty: opts.tty ?? false,
    protocols: opts.protocols,
  });
  const out = collect(session.stdout);
  const err = collect(session.stderr);
  if (opts.resize) session.resize(opts.resize);
  if (opts.input !== undefined) session.stdin.end(opts.input);
  const outcome = await withTimeout(session.done, 20_000, 'exec to finish');
  return { ...outcome, stdout: out.text(), stderr: err.text(), protocol: session.protocol };
}

/** Resolves with everything read so far once `pattern` matched it. */
export function readUntil(stream: Readable, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      stream.off('data', onData);
      reject(new Error(`timed out waiting for ${pattern} in ${JSON.stringify(text.slice(-500))}`));
    }, timeoutMs);
    const onData = (c: Buffer): void => {
      text += c.toString();
      if (pattern.test(text)) {
        clearTimeout(timer);
        stream.off('data', onData);
        resolve(text);
      }
    };
    stream.on('data', onData);
  });
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]);
}

/** Sends an HTTP/1.0 GET through one port-forward connection and returns the raw response and the error stream. */
export async function fetchThroughPortForward(
  url: string,
  family: StreamFamily,
  port: number,
  path: string,
): Promise<{ response: string; error: string }> {
  const session = await openPortForward({ url, family, ports: [port] });
  try {
    const { data, error } = session.dial(port);
    let response = '';
    data.on('data', (c: Buffer) => (response += c.toString()));
    const ended = new Promise<void>((resolve) => {
      data.once('end', resolve);
      data.once('close', resolve);
    });
    data.write(`GET ${path} HTTP/1.0\r\nHost: localhost\r\n\r\n`);
    await withTimeout(Promise.race([ended, error.then(async (e) => (e ? undefined : ended))]), 15_000, 'the port-forwarded response');
    return { response, error: await withTimeout(error, 10_000, 'the error stream') };
  } finally {
    session.close();
  }
}
