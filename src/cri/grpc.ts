// Loads the CRI v1 definitions and maps domain errors to gRPC status codes (the only place that does).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { NodeletError, type ErrorKind } from '../common/errors.js';
import { GrpcStatus, loadGrpcJs } from '../common/grpc-status.js';
import type { ProtoGrpcType } from './generated/api.js';

// Same options as the type generator in package.json, so the generated types describe what we get.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

function protoPath(): string {
  // Works from src/ (tests via tsx) and from dist/src/ (built).
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${path.sep}dist${path.sep}`) ? ['..', '..', '..'] : ['..', '..'];
  return path.resolve(here, ...up, 'proto', 'api.proto');
}

let definition: protoLoader.PackageDefinition | undefined;
function criDefinition(): protoLoader.PackageDefinition {
  definition ??= protoLoader.loadSync(protoPath(), LOADER_OPTIONS);
  return definition;
}

/** The two services' method definitions (paths, serializers): all a server needs, without grpc-js. */
export function criServices(): { runtime: grpc.ServiceDefinition; image: grpc.ServiceDefinition } {
  const def = criDefinition();
  return {
    runtime: def['runtime.v1.RuntimeService'] as grpc.ServiceDefinition,
    image: def['runtime.v1.ImageService'] as grpc.ServiceDefinition,
  };
}

let cached: ProtoGrpcType | undefined;
/** The CRI package with grpc-js client constructors (clients, and the grpc-js server). */
export function criProto(): ProtoGrpcType {
  cached ??= loadGrpcJs().loadPackageDefinition(criDefinition()) as unknown as ProtoGrpcType;
  return cached;
}

const STATUS_BY_KIND: Record<ErrorKind, grpc.status> = {
  InvalidArgument: GrpcStatus.INVALID_ARGUMENT,
  NotFound: GrpcStatus.NOT_FOUND,
  AlreadyExists: GrpcStatus.ALREADY_EXISTS,
  FailedPrecondition: GrpcStatus.FAILED_PRECONDITION,
  DeadlineExceeded: GrpcStatus.DEADLINE_EXCEEDED,
  Unavailable: GrpcStatus.UNAVAILABLE,
  Unauthenticated: GrpcStatus.UNAUTHENTICATED,
  PermissionDenied: GrpcStatus.PERMISSION_DENIED,
  Unimplemented: GrpcStatus.UNIMPLEMENTED,
  ResourceExhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  DataLoss: GrpcStatus.DATA_LOSS,
  Internal: GrpcStatus.INTERNAL,
};

export function toStatus(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof NodeletError) return { code: STATUS_BY_KIND[err.kind], details: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: GrpcStatus.UNKNOWN, details: message };
}
