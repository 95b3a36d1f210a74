// Loads the CRI v1 definitions and maps domain errors to gRPC status codes (the only place that does).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { NodeletError, type ErrorKind } from '../common/errors.js';
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

let cached: ProtoGrpcType | undefined;
export function criProto(): ProtoGrpcType {
  if (!cached) {
    const def = protoLoader.loadSync(protoPath(), LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return cached;
}

const STATUS_BY_KIND: Record<ErrorKind, grpc.status> = {
  InvalidArgument: grpc.status.INVALID_ARGUMENT,
  NotFound: grpc.status.NOT_FOUND,
  AlreadyExists: grpc.status.ALREADY_EXISTS,
  FailedPrecondition: grpc.status.FAILED_PRECONDITION,
  DeadlineExceeded: grpc.status.DEADLINE_EXCEEDED,
  Unavailable: grpc.status.UNAVAILABLE,
  Unauthenticated: grpc.status.UNAUTHENTICATED,
  PermissionDenied: grpc.status.PERMISSION_DENIED,
  Unimplemented: grpc.status.UNIMPLEMENTED,
  ResourceExhausted: grpc.status.RESOURCE_EXHAUSTED,
  DataLoss: grpc.status.DATA_LOSS,
  Internal: grpc.status.INTERNAL,
};

export function toStatus(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof NodeletError) return { code: STATUS_BY_KIND[err.kind], details: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: grpc.status.UNKNOWN, details: message };
}
