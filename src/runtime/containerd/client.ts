// A small typed client of containerd's own gRPC API (tasks, containers, events, namespaces, version): every call
// carries the `containerd-namespace` header and a deadline, and containerd's status codes become nodelet's typed errors.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { NodeletError, type ErrorKind } from '../../common/errors.js';
import { GrpcStatus, loadGrpcJs } from '../../common/grpc-status.js';
import type { ProtoGrpcType as TasksProto } from './generated/tasks.js';
import type { ProtoGrpcType as ContainersProto } from './generated/containers.js';
import type { ProtoGrpcType as EventsProto } from './generated/events.js';
import type { ProtoGrpcType as NamespacesProto } from './generated/namespace.js';
import type { ProtoGrpcType as VersionProto } from './generated/version.js';
import type { TasksClient } from './generated/containerd/services/tasks/v1/Tasks.js';
import type { ContainersClient } from './generated/containerd/services/containers/v1/Containers.js';
import type { EventsClient } from './generated/containerd/services/events/v1/Events.js';
import type { NamespacesClient } from './generated/containerd/services/namespaces/v1/Namespaces.js';
import type { VersionClient } from './generated/containerd/services/version/v1/Version.js';
import type { Envelope__Output } from './generated/containerd/services/events/v1/Envelope.js';
import type { Timestamp__Output } from './generated/google/protobuf/Timestamp.js';

export type { Envelope__Output as EventEnvelope };

/** The type URLs containerd's typeurl registry gives the OCI runtime-spec structs (carried as JSON). */
export const SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';
export const PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
export const LINUX_RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';
export const NAMESPACE_HEADER = 'containerd-namespace';
const DEFAULT_TIMEOUT_MS = 30_000;

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };
const PROTO_FILES = [
  'services/tasks/v1/tasks.proto',
  'services/containers/v1/containers.proto',
  'services/events/v1/events.proto',
  'services/namespaces/v1/namespace.proto',
  'services/version/v1/version.proto',
  'events/task.proto',
];

function protoRoot(): string {
  // Works from src/ (tests via tsx) and from dist/src/ (built).
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${path.sep}dist${path.sep}`) ? ['..', '..', '..', '..'] : ['..', '..', '..'];
  return path.resolve(here, ...up, 'proto', 'containerd');
}

type ContainerdProto = TasksProto & ContainersProto & EventsProto & NamespacesProto & VersionProto;
let cachedProto: ContainerdProto | undefined;
let cachedEventTypes: protobuf.Root | undefined;

function containerdProto(): ContainerdProto {
  if (!cachedProto) {
    const def = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
    cachedProto = loadGrpcJs().loadPackageDefinition(def) as unknown as ContainerdProto;
  }
  return cachedProto;
}

/** Event payloads arrive as Any; protobufjs decodes them by the name in their type URL. */
function eventTypes(): protobuf.Root {
  if (!cachedEventTypes) {
    const root = new protobuf.Root();
    const base = protoRoot();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) || target.startsWith('google/') ? target : path.join(base, target));
    root.loadSync(path.join(base, 'events/task.proto'), { keepCase: true });
    cachedEventTypes = root;
  }
  return cachedEventTypes;
}

/** Decodes an event payload (type URL `containerd.events.TaskExit` and the like); undefined for types we don't know. */
export function decodeEvent<T>(any: { type_url?: string; value?: Buffer | Uint8Array } | null | undefined): { type: string; event: T } | undefined {
  if (!any?.type_url || !any.value) return undefined;
  const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
  let type: protobuf.Type;
  try {
    type = eventTypes().lookupType(name);
  } catch {
    return undefined;
  }
  const event = type.toObject(type.decode(any.value), { longs: Number, enums: String, defaults: true }) as T;
  return { type: name, event };
}

export function timestampToDate(ts: Timestamp__Output | { seconds?: number | string; nanos?: number } | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const seconds = Number(ts.seconds ?? 0);
  const nanos = Number(ts.nanos ?? 0);
  if (seconds <= 0 && nanos <= 0) return undefined;
  return new Date(seconds * 1000 + Math.floor(nanos / 1e6));
}

/** An OCI struct as containerd carries it: JSON bytes in an Any. */
export function jsonAny(typeUrl: string, value: unknown): { type_url: string; value: Buffer } {
  return { type_url: typeUrl, value: Buffer.from(JSON.stringify(value)) };
}

const KIND_BY_STATUS: Partial<Record<number, ErrorKind>> = {
  [GrpcStatus.INVALID_ARGUMENT]: 'InvalidArgument',
  [GrpcStatus.NOT_FOUND]: 'NotFound',
  [GrpcStatus.ALREADY_EXISTS]: 'AlreadyExists',
  [GrpcStatus.FAILED_PRECONDITION]: 'FailedPrecondition',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'DeadlineExceeded',
  [GrpcStatus.UNAVAILABLE]: 'Unavailable',
  [GrpcStatus.UNIMPLEMENTED]: 'Unimplemented',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'ResourceExhausted',
  [GrpcStatus.PERMISSION_DENIED]: 'PermissionDenied',
};

/** containerd's status as a nodelet error naming the call, e.g. `containerd Tasks.Get: task abc: not found`. */
export function toNodeletError(call: string, err: unknown): NodeletError {
  const e = err as Partial<grpc.ServiceError>;
  const code = typeof e?.code === 'number' ? e.code : undefined;
  const detail = e?.details || (err instanceof Error ? err.message : String(err));
  const kind = (code !== undefined ? KIND_BY_STATUS[code] : undefined) ?? 'Internal';
  return new NodeletError(kind, `containerd ${call}: ${detail}`, { cause: err });
}

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<Res>) => grpc.ClientUnaryCall;

export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class ContainerdClient {
  readonly address: string;
  readonly namespace: string;
  readonly tasksService: TasksClient;
  readonly containersService: ContainersClient;
  readonly eventsService: EventsClient;
  readonly namespacesService: NamespacesClient;
  readonly versionService: VersionClient;

  /** `address` is containerd's socket path (or a unix: URI). */
  constructor(address: string, namespace: string) {
    this.address = address.startsWith('unix:') ? address : `unix://${address}`;
    this.namespace = namespace;
    const proto = containerdProto();
    const svc = proto.containerd.services;
    // One channel for all services: grpc-js shares it between clients built with the same target and options.
    const opts: grpc.ChannelOptions = { 'grpc.max_receive_message_length': 16 * 1024 * 1024 };
    const creds = loadGrpcJs().credentials.createInsecure();
    this.tasksService = new svc.tasks.v1.Tasks(this.address, creds, opts);
    this.containersService = new svc.containers.v1.Containers(this.address, creds, opts);
    this.eventsService = new svc.events.v1.Events(this.address, creds, opts);
    this.namespacesService = new svc.namespaces.v1.Namespaces(this.address, creds, opts);
    this.versionService = new svc.version.v1.Version(this.address, creds, opts);
  }

  metadata(): grpc.Metadata {
    const md = new (loadGrpcJs().Metadata)();
    md.set(NAMESPACE_HEADER, this.namespace);
    return md;
  }

  /** One unary call with the namespace header and a deadline; containerd's errors become NodeletErrors. */
  call<Req, Res>(service: string, client: grpc.Client, method: string, request: Req, opts: CallOptions = {}): Promise<Res> {
    const name = `${service}.${method}`;
    const fn = (client as unknown as Record<string, Unary<Req, Res>>)[method];
    if (typeof fn !== 'function') return Promise.reject(new NodeletError('Internal', `containerd client has no method ${name}`));
    const deadline = new Date(Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS));
    return new Promise<Res>((resolve, reject) => {
      const call = fn.call(client, request, this.metadata(), { deadline }, (err, res) => {
        opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(toNodeletError(name, err));
        else resolve(res as Res);
      });
      const onAbort = (): void => call.cancel();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  tasks<Res = unknown, Req = unknown>(method: string, request: Req, opts?: CallOptions): Promise<Res> {
    return this.call<Req, Res>('Tasks', this.tasksService, method, request, opts);
  }

  containers<Res = unknown, Req = unknown>(method: string, request: Req, opts?: CallOptions): Promise<Res> {
    return this.call<Req, Res>('Containers', this.containersService, method, request, opts);
  }

  async version(timeoutMs = 2000): Promise<{ version: string; revision: string }> {
    return this.call('Version', this.versionService, 'Version', {}, { timeoutMs });
  }

  /** A server stream of the events matching any of `filters` in our namespace; the caller handles 'data'/'error'/'end'. */
  subscribe(filters: string[]): grpc.ClientReadableStream<Envelope__Output> {
    return this.eventsService.Subscribe({ filters }, this.metadata());
  }

  close(): void {
    for (const c of [this.tasksService, this.containersService, this.eventsService, this.namespacesService, this.versionService]) c.close();
  }
}
