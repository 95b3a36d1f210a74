// gRPC clients for CSI node plugins: the CSI v1 Node and Identity services and the kubelet's plugin
// registration service, loaded from proto/ (field-identical to upstream) with the CRI loader's options.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { LOADER_OPTIONS } from '../../cri/grpc.js';

function protoFile(name: string): string {
  // Works from src/ (tests via tsx) and from dist/src/ (built).
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${path.sep}dist${path.sep}`) ? ['..', '..', '..', '..'] : ['..', '..', '..'];
  return path.resolve(here, ...up, 'proto', name);
}

const cache = new Map<string, any>();
function load(name: string): any {
  let pkg = cache.get(name);
  if (!pkg) {
    pkg = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile(name), LOADER_OPTIONS));
    cache.set(name, pkg);
  }
  return pkg;
}

/** csi.v1: Identity, Node (and their message types, for test plugins). */
export function csiProto(): any {
  return load('csi.proto').csi.v1;
}

/** pluginregistration: Registration. */
export function registrationProto(): any {
  return load('pluginregistration.proto').pluginregistration;
}

function address(socket: string): string {
  return socket.startsWith('unix:') ? socket : `unix://${socket}`;
}

/** Promise calls on one gRPC client, bounded by a deadline. */
export class UnaryClient {
  constructor(private readonly client: grpc.Client) {}

  call(method: string, request: object = {}, deadlineMs = 30_000): Promise<any> {
    const fn = (this.client as any)[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`no such method ${method}`));
    return new Promise((resolve, reject) => {
      fn.call(this.client, request, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: any) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

export function csiNodeClient(socket: string): UnaryClient {
  return new UnaryClient(new (csiProto().Node)(address(socket), grpc.credentials.createInsecure()));
}

export function registrationClient(socket: string): UnaryClient {
  return new UnaryClient(new (registrationProto().Registration)(address(socket), grpc.credentials.createInsecure()));
}
