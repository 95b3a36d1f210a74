// A bare HTTP/2 client on a unix socket for the builtin gRPC server's tests: writes frames as given
// (well-formed or not) and collects the server's frames, decoded, for assertions.
import net from 'node:net';
import { once } from 'node:events';
import { FrameReader, FrameType, Flag, PREFACE, frame, settingsFrame, type Setting } from '../../src/cri/h2/frames.js';
import { HeaderDecoder, encodeHeaders, type HeaderList } from '../../src/cri/h2/hpack.js';
import { frameMessage } from '../../src/cri/h2/grpc-wire.js';

export interface ReceivedFrame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
  /** HEADERS (with their CONTINUATIONs): the decoded list. */
  headers?: HeaderList;
}

export class RawH2Client {
  readonly frames: ReceivedFrame[] = [];
  closed = false;
  private readonly decoder = new HeaderDecoder(4096, 1 << 20);
  private readonly reader = new FrameReader(this, 1 << 24, false);
  private waiters: Array<() => void> = [];
  private block?: { frame: ReceivedFrame; parts: Buffer[] };

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.reader.push(chunk));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Connects and sends the preface and `settings` (an empty SETTINGS when none are given). */
  static async connect(socketPath: string, settings: Array<[Setting, number]> = [], preface = true): Promise<RawH2Client> {
    const socket = net.connect(socketPath);
    await once(socket, 'connect');
    const c = new RawH2Client(socket);
    if (preface) c.write(Buffer.concat([PREFACE, settingsFrame(settings)]));
    return c;
  }

  onFrame(type: number, flags: number, stream: number, payload: Buffer): void {
    const f: ReceivedFrame = { type, flags, stream, payload: Buffer.from(payload) };
    if (type === FrameType.HEADERS) this.block = { frame: f, parts: [f.payload] };
    else if (type === FrameType.CONTINUATION && this.block) this.block.parts.push(f.payload);
    if ((type === FrameType.HEADERS || type === FrameType.CONTINUATION) && flags & Flag.END_HEADERS && this.block) {
      this.block.frame.headers = this.decoder.decode(Buffer.concat(this.block.parts));
      this.block = undefined;
    }
    this.frames.push(f);
    this.wake();
  }

  write(buf: Buffer): void {
    this.socket.write(buf);
  }

  /** A unary gRPC request on `stream`: HEADERS (literal, END_HEADERS), then DATA with END_STREAM. */
  request(stream: number, path: string, message: Uint8Array, extra: HeaderList = []): void {
    const block = encodeHeaders([[':method', 'POST'], [':scheme', 'http'], [':path', path], [':authority', 'localhost'], ['content-type', 'application/grpc'], ['te', 'trailers'], ...extra], false);
    this.write(Buffer.concat([frame(FrameType.HEADERS, Flag.END_HEADERS, stream, block), frame(FrameType.DATA, Flag.END_STREAM, stream, frameMessage(message))]));
  }

  /** Waits until `pred` holds over the frames received (or the socket closed), at most `ms`. */
  async until(pred: (frames: ReceivedFrame[]) => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.frames)) {
      if (this.closed) throw new Error(`connection closed; frames: ${this.describe()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; frames: ${this.describe()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async untilClosed(ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The frames of one stream, and its trailers' grpc-status / grpc-message. */
  streamFrames(stream: number): ReceivedFrame[] {
    return this.frames.filter((f) => f.stream === stream);
  }

  ended(stream: number): boolean {
    return this.streamFrames(stream).some((f) => (f.type === FrameType.HEADERS || f.type === FrameType.DATA) && f.flags & Flag.END_STREAM);
  }

  status(stream: number): { code?: string; message?: string } {
    const last = this.streamFrames(stream).filter((f) => f.headers).at(-1);
    const get = (n: string) => last?.headers?.find(([k]) => k === n)?.[1];
    return { code: get('grpc-status'), message: get('grpc-message') };
  }

  /** The response message bodies (DATA of the stream joined, the 5-byte prefixes removed). */
  messages(stream: number): Buffer[] {
    const body = Buffer.concat(this.streamFrames(stream).filter((f) => f.type === FrameType.DATA).map((f) => f.payload));
    const out: Buffer[] = [];
    for (let at = 0; at + 5 <= body.length; ) {
      const n = body.readUInt32BE(at + 1);
      out.push(body.subarray(at + 5, at + 5 + n));
      at += 5 + n;
    }
    return out;
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  private describe(): string {
    return this.frames.map((f) => `${f.type}/${f.flags}/${f.stream}/${f.payload.length}`).join(' ');
  }
}
