// A promise-based CRI client for tests (and the shape the CLI uses): call('Method', request).
import * as grpc from '@grpc/grpc-js';
import { criProto } from '../../src/cri/grpc.js';

export interface CriClient {
  runtime(method: string, request?: object, opts?: { deadlineMs?: number }): Promise<any>;
  image(method: string, request?: object, opts?: { deadlineMs?: number }): Promise<any>;
  /** A server-streaming RuntimeService call (GetContainerEvents, Stream*). */
  runtimeStream(method: string, request?: object): grpc.ClientReadableStream<any>;
  close(): void;
}

function promisify(client: grpc.Client, method: string, request: object, deadlineMs?: number): Promise<any> {
  const fn = (client as any)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no such CRI method ${method}`));
  const options: grpc.CallOptions = deadlineMs ? { deadline: Date.now() + deadlineMs } : {};
  return new Promise((resolve, reject) => {
    fn.call(client, request, new grpc.Metadata(), options, (err: grpc.ServiceError | null, res: any) => (err ? reject(err) : resolve(res)));
  });
}

export function connectCri(socket: string): CriClient {
  const proto = criProto();
  const address = socket.startsWith('unix:') ? socket : `unix://${socket}`;
  const runtime = new proto.runtime.v1.RuntimeService(address, grpc.credentials.createInsecure());
  const image = new proto.runtime.v1.ImageService(address, grpc.credentials.createInsecure());
  return {
    runtime: (m, r = {}, o = {}) => promisify(runtime, m, r, o.deadlineMs),
    image: (m, r = {}, o = {}) => promisify(image, m, r, o.deadlineMs),
    runtimeStream: (m, r = {}) => (runtime as any)[m](r),
    close: () => {
      runtime.close();
      image.close();
    },
  };
}
