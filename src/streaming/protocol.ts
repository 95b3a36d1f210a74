// The names and messages of the Kubernetes streaming protocols (remotecommand and portforward),
// shared by the server and the client.

/** SPDY subprotocols for exec/attach, newest first (the kubelet's order). */
export const SPDY_REMOTECOMMAND_PROTOCOLS = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'] as const;
export const SPDY_PORTFORWARD_PROTOCOLS = ['portforward.k8s.io'] as const;

/** WebSocket subprotocols for exec/attach; base64 variants carry an ASCII channel digit and base64 text. */
export const WS_REMOTECOMMAND_PROTOCOLS = [
  'v5.channel.k8s.io',
  'v4.channel.k8s.io',
  'v3.channel.k8s.io',
  'v2.channel.k8s.io',
  'channel.k8s.io',
  'v4.base64.channel.k8s.io',
  'base64.channel.k8s.io',
] as const;
/** WebSocket port-forward: channel framing; `SPDY/3.1+portforward.k8s.io` tunnels a SPDY session in binary messages. */
export const WS_PORTFORWARD_PROTOCOLS = ['v2.portforward.k8s.io', 'portforward.k8s.io', 'base64.portforward.k8s.io'] as const;
export const WS_SPDY_TUNNEL_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';

export const HEADER_STREAM_PROTOCOL = 'x-stream-protocol-version';
export const HEADER_ACCEPTED_PROTOCOLS = 'x-accepted-stream-protocol-versions';

/** SPDY `streamType` header values. */
export const STREAM_ERROR = 'error';
export const STREAM_STDIN = 'stdin';
export const STREAM_STDOUT = 'stdout';
export const STREAM_STDERR = 'stderr';
export const STREAM_RESIZE = 'resize';
export const STREAM_DATA = 'data';

/** WebSocket channel numbers of remotecommand. */
export const CHANNEL_STDIN = 0;
export const CHANNEL_STDOUT = 1;
export const CHANNEL_STDERR = 2;
export const CHANNEL_ERROR = 3;
export const CHANNEL_RESIZE = 4;
/** v5: `[255, channel]` half-closes that channel. */
export const CHANNEL_CLOSE = 255;

export interface TerminalSize {
  width: number;
  height: number;
}

/** The protocol's version number: 5 for v5, 1 for the bare `channel.k8s.io`. */
export function protocolVersion(protocol: string): number {
  const m = /^v(\d+)\./.exec(protocol);
  return m ? Number(m[1]) : 1;
}

/** Whether the error stream carries a metav1.Status (v4+) or plain text (v1–v3). */
export function usesStatusObject(protocol: string): boolean {
  return protocolVersion(protocol) >= 4;
}

/** The metav1.Status JSON kubectl decodes from the error stream, for an exit code or a failure. */
export function exitStatus(result: { exitCode?: number; error?: string }): string {
  if (result.error !== undefined) {
    return JSON.stringify({ metadata: {}, status: 'Failure', message: result.error, reason: 'InternalError', code: 500 });
  }
  const code = result.exitCode ?? 0;
  if (code === 0) return JSON.stringify({ metadata: {}, status: 'Success' });
  return JSON.stringify({
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command, exit status ${code}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
  });
}

/** What v1–v3 put on the error stream: nothing on success, text otherwise. */
export function exitText(result: { exitCode?: number; error?: string }): string {
  if (result.error !== undefined) return result.error;
  const code = result.exitCode ?? 0;
  return code === 0 ? '' : `command terminated with non-zero exit code: error executing command, exit status ${code}`;
}

/** Reads the exit code out of an error-stream message (Status JSON or text); undefined when it failed otherwise. */
export function parseExitStatus(text: string): { exitCode: number; message?: string } {
  const trimmed = text.trim();
  if (!trimmed) return { exitCode: 0 };
  try {
    const status = JSON.parse(trimmed) as { status?: string; reason?: string; message?: string; details?: { causes?: Array<{ reason?: string; message?: string }> } };
    if (status.status === 'Success') return { exitCode: 0 };
    const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
    if (status.reason === 'NonZeroExitCode' && cause?.message) return { exitCode: Number(cause.message), message: status.message };
    return { exitCode: -1, message: status.message ?? trimmed };
  } catch {
    const m = /exit (?:status|code):? (\d+)/.exec(trimmed);
    return m ? { exitCode: Number(m[1]), message: trimmed } : { exitCode: -1, message: trimmed };
  }
}

/** The longest resize object kept while waiting for its end. */
const MAX_RESIZE_MESSAGE = 4096;

/** Splits a stream of concatenated JSON resize objects (`{"Width":80,"Height":24}`) as they arrive. */
export class ResizeDecoder {
  private buffer = '';
  push(chunk: Buffer | string): TerminalSize[] {
    this.buffer += chunk.toString();
    const out: TerminalSize[] = [];
    for (;;) {
      const start = this.buffer.indexOf('{');
      if (start < 0) {
        this.buffer = '';
        return out;
      }
      const end = this.buffer.indexOf('}', start);
      if (end < 0) {
        // A size is some 30 bytes: an object that never closes is dropped, not kept growing.
        this.buffer = this.buffer.length - start > MAX_RESIZE_MESSAGE ? '' : this.buffer.slice(start);
        return out;
      }
      const text = this.buffer.slice(start, end + 1);
      this.buffer = this.buffer.slice(end + 1);
      try {
        const size = JSON.parse(text) as { Width?: unknown; Height?: unknown };
        const width = Number(size.Width);
        const height = Number(size.Height);
        if (Number.isInteger(width) && Number.isInteger(height) && width >= 0 && height >= 0) out.push({ width, height });
      } catch {
        // a malformed message is skipped, as the kubelet does
      }
    }
  }
}

export function resizeMessage(size: TerminalSize): string {
  return JSON.stringify({ Width: size.width, Height: size.height });
}

/** The first protocol of the client's list (its preference order) that the server serves; '' when the client named none. */
export function negotiate(clientProtocols: string[], serverProtocols: readonly string[]): string | undefined {
  if (clientProtocols.length === 0) return '';
  return clientProtocols.find((p) => serverProtocols.includes(p));
}

/** Splits repeated and comma-joined header values into a list. */
export function headerList(value: string | string[] | undefined): string[] {
  const values = Array.isArray(value) ? value : value ? [value] : [];
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

/** The 2-byte little-endian port that starts every WebSocket port-forward channel. */
export function portPrefix(port: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(port);
  return b;
}
