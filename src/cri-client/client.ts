// The one CRI client of the CLI, the node agent and the tests: promise calls on the RuntimeService and
// ImageService of one endpoint (a unix socket), optional default deadlines, and an observer told of
// every finished call. Typed views (the CLI's) are types over this one implementation.
import * as grpc from '@grpc/grpc-js';
import { criProto } from '../cri/grpc.js';

export interface CriClientOptions {
  /** Deadline of a RuntimeService call that names none, in ms; absent or 0: none. */
  runtimeDeadlineMs?: number;
  /** Deadline of an ImageService call that names none, in ms; absent or 0: none. */
  imageDeadlineMs?: number;
  /** Largest reply accepted, in bytes (grpc's default is 4 MiB). */
  maxReceiveMessageBytes?: number;
}

export interface CriCallOptions {
  /** Deadline in ms from now; 0: none; absent: the client's default. */
  deadlineMs?: number;
}

/** Told of every finished call (the kubelet's runtime operation metrics). */
export type CriCallObserver = (method: string, seconds: number, failed: boolean) => void;

type UnaryMethod = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, response: unknown) => void) => unknown;

/** `unix:///path` as is, `/path` as a unix socket; anything else is handed to grpc as it is. */
export function criAddress(endpoint: string): string {
  return endpoint.startsWith('/') ? `unix://${endpoint}` : endpoint;
}

export class CriClient {
  observer?: CriCallObserver;
  private readonly runtimeService: grpc.Client;
  private readonly imageService: grpc.Client;

  constructor(
    readonly endpoint: string,
    private readonly options: CriClientOptions = {},
  ) {
    const proto = criProto();
    const address = criAddress(endpoint);
    const channelOptions = options.maxReceiveMessageBytes ? { 'grpc.max_receive_message_length': options.maxReceiveMessageBytes } : {};
    this.runtimeService = new proto.runtime.v1.RuntimeService(address, grpc.credentials.createInsecure(), channelOptions);
    this.imageService = new proto.runtime.v1.ImageService(address, grpc.credentials.createInsecure(), channelOptions);
  }

  runtime(method: string, request: object = {}, opts: CriCallOptions = {}): Promise<any> {
    return this.observed(method, unary(this.runtimeService, method, request, opts.deadlineMs ?? this.options.runtimeDeadlineMs));
  }

  image(method: string, request: object = {}, opts: CriCallOptions = {}): Promise<any> {
    return this.observed(method, unary(this.imageService, method, request, opts.deadlineMs ?? this.options.imageDeadlineMs));
  }

  /** A server-streaming RuntimeService call (GetContainerEvents, Stream*). */
  runtimeStream(method: string, request: object = {}): grpc.ClientReadableStream<any> {
    const fn = (this.runtimeService as unknown as Record<string, (request: object) => grpc.ClientReadableStream<any>>)[method];
    if (typeof fn !== 'function') throw new Error(`no such CRI method ${method}`);
    return fn.call(this.runtimeService, request);
  }

  close(): void {
    this.runtimeService.close();
    this.imageService.close();
  }

  private observed(method: string, p: Promise<any>): Promise<any> {
    const observer = this.observer;
    if (!observer) return p;
    const started = process.hrtime.bigint();
    const done = (failed: boolean) => observer(method, Number(process.hrtime.bigint() - started) / 1e9, failed);
    return p.then(
      (r) => (done(false), r),
      (err) => {
        done(true);
        throw err;
      },
    );
  }
}

function unary(client: grpc.Client, method: string, request: object, deadlineMs: number | undefined): Promise<any> {
  const fn = (client as unknown as Record<string, UnaryMethod>)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no such CRI method ${method}`));
  const options: grpc.CallOptions = deadlineMs ? { deadline: Date.now() + deadlineMs } : {};
  return new Promise((resolve, reject) => {
    fn.call(client, request, new grpc.Metadata(), options, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

/** True for a gRPC error (it carries a status code and details). */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' && 'details' in err;
}

export function isGrpcNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === grpc.status.NOT_FOUND;
}

export { status as GrpcStatus } from '@grpc/grpc-js';
