// Typed domain errors. The domain throws these; src/cri/ maps them to gRPC status codes in one place.

export type ErrorKind =
  | 'InvalidArgument'
  | 'NotFound'
  | 'AlreadyExists'
  | 'FailedPrecondition'
  | 'DeadlineExceeded'
  | 'Unavailable'
  | 'Unauthenticated'
  | 'PermissionDenied'
  | 'Unimplemented'
  | 'ResourceExhausted'
  /** Bytes from outside (a registry) that do not match their digest or size: the source's fault, not ours. */
  | 'DataLoss'
  | 'Internal';

export class NodeletError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = `${kind}Error`;
  }
}

export const invalidArgument = (msg: string) => new NodeletError('InvalidArgument', msg);
export const notFound = (msg: string) => new NodeletError('NotFound', msg);
export const alreadyExists = (msg: string) => new NodeletError('AlreadyExists', msg);
export const failedPrecondition = (msg: string) => new NodeletError('FailedPrecondition', msg);
export const deadlineExceeded = (msg: string) => new NodeletError('DeadlineExceeded', msg);
export const unavailable = (msg: string, cause?: unknown) => new NodeletError('Unavailable', msg, { cause });
export const unauthenticated = (msg: string) => new NodeletError('Unauthenticated', msg);
export const dataLoss = (msg: string) => new NodeletError('DataLoss', msg);
export const internal = (msg: string, cause?: unknown) => new NodeletError('Internal', msg, { cause });

export function isKind(err: unknown, kind: ErrorKind): boolean {
  return err instanceof NodeletError && err.kind === kind;
}

/** The message of anything thrown, for logs and error texts. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** True for a Node.js system error with the given code (ENOENT, EEXIST, ...). */
export function hasCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
