// One HTTP/2 stream carrying one gRPC call: the request body as it arrives, the response queued for
// the connection to send as flow control allows, and cancellation when the client resets it.
import type { HeaderList } from './hpack.js';
import { RESPONSE_HEADER_BLOCK, messagePrefix, statusBlock } from './grpc-wire.js';

/** Bytes queued on a stream past which write() asks the writer to wait for 'drain'. */
export const STREAM_HIGH_WATER = 64 * 1024;

export interface StreamOwner {
  /** The stream has something new to send (headers, data or trailers). */
  schedule(stream: H2Stream): void;
}

/** Who hears of a stream's end by the client and of room to write again (the call object of its handler). */
export interface StreamListener {
  onCancel(): void;
  onDrain(): void;
}

export class H2Stream {
  path = '';
  headers: HeaderList = [];
  /** Set once the client reset the stream or the connection went away before the call ended. */
  cancelled = false;
  /** The response's trailers were queued: nothing more may be written. */
  ended = false;
  /** The client's END_STREAM arrived. */
  remoteEnded = false;

  // Receiving: the request body, bounded by the owner.
  readonly chunks: Buffer[] = [];
  received = 0;
  recvWindow: number;
  unackedRecv = 0;

  // Sending: frames not yet written, in order; DATA is cut to the windows when sent.
  headersBlock?: Buffer;
  readonly data: Buffer[] = [];
  queued = 0;
  trailersBlock?: Buffer;
  sendWindow: number;
  wantDrain = false;
  /** Set by the connection on a reset stream whose handler still runs: called when it ends the call. */
  onHandlerEnd?: () => void;
  listener?: StreamListener;
  /** A unary handler runs for this stream: it always ends the call (sendStatus), even after a reset. */
  unaryRunning = false;
  /** Answered before its request was read: the request is not read any further. */
  refused = false;

  constructor(
    readonly id: number,
    private readonly owner: StreamOwner,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }

  header(name: string): string | undefined {
    for (const [n, v] of this.headers) if (n === name) return v;
    return undefined;
  }

  /** Queues one gRPC message; false once more than STREAM_HIGH_WATER is waiting (then wait for 'drain'). */
  sendMessage(message: Buffer): boolean {
    if (this.ended || this.cancelled) return true;
    this.enqueue(message);
    this.owner.schedule(this);
    if (this.queued > STREAM_HIGH_WATER) {
      this.wantDrain = true;
      return false;
    }
    return true;
  }

  /** A unary call's answer: its one message and status OK, scheduled together (one write when they fit). */
  sendUnary(message: Buffer): void {
    if (!this.ended && !this.cancelled) this.enqueue(message);
    this.sendStatus(0);
  }

  private enqueue(message: Buffer): void {
    if (!this.headersBlock && !this.sentHeaders) this.headersBlock = RESPONSE_HEADER_BLOCK;
    // The 5-byte prefix and the message as two pieces: the message is not copied. An empty message
    // (all fields default) is the prefix alone: no empty piece may wait in the queue.
    this.data.push(messagePrefix(message.length));
    if (message.length) this.data.push(message);
    this.queued += 5 + message.length;
  }

  /** Ends the call with a status; trailers-only when nothing was sent before. */
  sendStatus(code: number, message?: string): void {
    const onEnd = this.onHandlerEnd;
    this.onHandlerEnd = undefined;
    onEnd?.();
    if (this.ended || this.cancelled) return;
    this.ended = true;
    const headersToo = !this.headersBlock && !this.sentHeaders;
    this.trailersBlock = statusBlock(code, message, headersToo);
    this.owner.schedule(this);
  }

  /** Set by the connection once the response headers were written. */
  sentHeaders = false;

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.data.length = 0;
    this.queued = 0;
    this.listener?.onCancel();
    if (this.wantDrain) this.drained();
  }

  /** The queue went below STREAM_HIGH_WATER after a write that asked to wait (or the stream ended). */
  drained(): void {
    this.wantDrain = false;
    this.listener?.onDrain();
  }
}
