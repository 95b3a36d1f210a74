// The agent's CRI client: promise calls on RuntimeService and ImageService over the endpoint's unix socket.
import * as grpc from '@grpc/grpc-js';
import { criProto } from '../cri/grpc.js';

export interface CriCallOptions {
  deadlineMs?: number;
}

/** Told of every finished call (the kubelet's runtime operation metrics). */
export type CriCallObserver = (method: string, seconds: number, failed: boolean) => void;

export class CriClient {
  observer?: CriCallObserver;
  private readonly runtimeService: grpc.Client;
  private readonly imageService: grpc.Client;

  constructor(readonly endpoint: string) {
    const proto = criProto();
    const address = endpoint.startsWith('unix:') ? endpoint : `unix://${endpoint}`;
    this.runtimeService = new proto.runtime.v1.RuntimeService(address, grpc.credentials.createInsecure());
    this.imageService = new proto.runtime.v1.ImageService(address, grpc.credentials.createInsecure());
  }

  runtime(method: string, request: object = {}, opts: CriCallOptions = {}): Promise<any> {
    return this.observed(method, call(this.runtimeService, method, request, opts.deadlineMs ?? 120_000));
  }

  image(method: string, request: object = {}, opts: CriCallOptions = {}): Promise<any> {
    return this.observed(method, call(this.imageService, method, request, opts.deadlineMs ?? 600_000));
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

  /** A server-streaming RuntimeService call (GetContainerEvents): no deadline, cancel it to stop. */
  runtimeStream(method: string, request: object = {}): grpc.ClientReadableStream<any> {
    return (this.runtimeService as any)[method](request, new grpc.Metadata());
  }

  close(): void {
    this.runtimeService.close();
    this.imageService.close();
  }
}

function call(client: grpc.Client, method: string, request: object, deadlineMs: number): Promise<any> {
  const fn = (client as any)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no such CRI method ${method}`));
  return new Promise((resolve, reject) => {
    fn.call(client, request, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: any) =>
      err ? reject(err) : resolve(res),
    );
  });
}

export function isGrpcNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === grpc.status.NOT_FOUND;
}
