// gRPC status codes by name (grpc/doc/statuscodes.md; the numbers grpc-js's `status` enum has), and grpc-js
// loaded at first use: the daemon on its builtin HTTP/2 server never needs grpc-js (~5.5 MiB of RSS).
import { createRequire } from 'node:module';
import type * as grpc from '@grpc/grpc-js';

export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const satisfies Record<keyof typeof grpc.status, grpc.status>;

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(GrpcStatus).map(([name, code]) => [code, name]));

/** The status's name (`NOT_FOUND`), or its number for a code outside the list. */
export function grpcStatusName(code: number): string {
  return NAMES[code] ?? String(code);
}

let grpcJs: typeof grpc | undefined;

/** The grpc-js module, required on the first call (it is CommonJS, so this is synchronous). */
export function loadGrpcJs(): typeof grpc {
  grpcJs ??= createRequire(import.meta.url)('@grpc/grpc-js') as typeof grpc;
  return grpcJs;
}
