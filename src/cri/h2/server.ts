// A gRPC server (unary and server-streaming calls) on our own HTTP/2 connection code. Handlers are
// grpc-js-shaped (call objects with request, getDeadline, cancelled, write/end/destroy), so the same
// wrapping in ../server.ts serves both transports.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import { DEFAULT_LIMITS, H2Connection, type ConnectionLimits, type RequestSink } from './connection.js';
import { MAX_MESSAGE, parseTimeout } from './grpc-wire.js';
import type { H2Stream, StreamListener } from './stream.js';
import { GrpcStatus } from '../../common/grpc-status.js';

interface Method {
  def: grpc.MethodDefinition<unknown, unknown>;
  handler: grpc.UntypedHandleCall;
}

/** The call object a handler sees: the parts of grpc-js's ServerUnaryCall / ServerWritableStream we use. */
class Call extends EventEmitter implements StreamListener {
  private readonly deadline: number;
  cancelled = false;

  constructor(
    private readonly stream: H2Stream,
    private readonly def: grpc.MethodDefinition<unknown, unknown>,
    readonly request: unknown,
  ) {
    super();
    const timeout = stream.header('grpc-timeout');
    const ms = timeout === undefined ? undefined : parseTimeout(timeout);
    this.deadline = ms === undefined ? Infinity : Date.now() + ms;
    stream.listener = this;
  }

  onCancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.emit('cancelled', 'cancelled');
  }

  onDrain(): void {
    this.emit('drain');
  }

  getDeadline(): number {
    return this.deadline;
  }

  // Unary: the handler's callback.
  callback = (err: Partial<grpc.StatusObject> | null, value?: unknown): void => {
    if (err) return this.stream.sendStatus(err.code ?? GrpcStatus.UNKNOWN, err.details);
    const bytes = this.serialize(value);
    if (bytes) this.stream.sendUnary(bytes);
  };

  // Server streaming.
  write(msg: unknown): boolean {
    const bytes = this.serialize(msg);
    return bytes ? this.stream.sendMessage(bytes) : true;
  }

  end(): void {
    this.stream.sendStatus(0);
  }

  destroy(err?: Partial<grpc.StatusObject>): void {
    this.stream.sendStatus(err?.code ?? GrpcStatus.UNKNOWN, err?.details);
  }

  private serialize(value: unknown): Buffer | undefined {
    let bytes: Buffer;
    try {
      bytes = this.def.responseSerialize(value);
    } catch (err) {
      this.stream.sendStatus(GrpcStatus.INTERNAL, `response does not serialize: ${(err as Error).message}`);
      return undefined;
    }
    // As grpc.max_send_message_length on the grpc-js server.
    if (bytes.length > MAX_MESSAGE) {
      this.stream.sendStatus(GrpcStatus.RESOURCE_EXHAUSTED, `response of ${bytes.length} bytes exceeds the ${MAX_MESSAGE}-byte limit`);
      return undefined;
    }
    return bytes;
  }
}

export class BuiltinGrpcServer implements RequestSink {
  private readonly methods = new Map<string, Method>();
  private readonly connections = new Set<H2Connection>();
  private server?: net.Server;

  constructor(private readonly limits: ConnectionLimits = DEFAULT_LIMITS) {}

  /** Client connections open now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  addService(service: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    for (const [name, def] of Object.entries(service)) {
      if (def.requestStream) continue; // no client-streaming calls in the CRI
      const handler = impl[name] as grpc.UntypedHandleCall | undefined;
      if (handler) this.methods.set(def.path, { def, handler });
    }
  }

  async listen(socket: string): Promise<void> {
    const server = net.createServer((sock) => {
      const conn = new H2Connection(sock, this, this.limits);
      this.connections.add(conn);
      conn.whenClosed(() => this.connections.delete(conn));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socket, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  onRequest(stream: H2Stream, body: Buffer): void {
    const method = this.methods.get(stream.path);
    if (!method) return stream.sendStatus(GrpcStatus.UNIMPLEMENTED, `unknown method ${stream.path}`);
    let request: unknown;
    try {
      request = method.def.requestDeserialize(oneMessage(body));
    } catch (err) {
      return stream.sendStatus(GrpcStatus.INTERNAL, `${stream.path}: request does not parse: ${(err as Error).message}`);
    }
    const call = new Call(stream, method.def, request);
    if (method.def.responseStream) {
      (method.handler as (call: unknown) => void)(call);
    } else {
      // Counted against the stream limit until the callback, reset or not (a streaming handler
      // returns on the cancellation itself and may never end the call).
      stream.unaryRunning = true;
      (method.handler as (call: unknown, cb: unknown) => void)(call, call.callback);
    }
  }

  /** Stops accepting, sends GOAWAY on every connection, and closes them all once their calls end or after graceMs. */
  async stop(graceMs: number): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const drained = Promise.all([...this.connections].map((c) => new Promise<void>((resolve) => c.whenClosed(resolve))));
    for (const c of this.connections) c.goaway();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const c of this.connections) c.destroy();
        resolve();
      }, graceMs);
    });
    await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    for (const c of this.connections) c.destroy();
    await closed;
  }
}

/** The single message of a unary or server-streaming request, from its length-prefixed body. */
function oneMessage(body: Buffer): Buffer {
  if (body.length < 5) throw new Error('no request message');
  if (body[0] !== 0) throw new Error('compressed message without a grpc-encoding');
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) throw new Error(body.length < 5 + length ? 'truncated request message' : 'more than one request message');
  return body.subarray(5);
}
