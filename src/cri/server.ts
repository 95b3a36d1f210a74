// The gRPC layer: one server on a unix socket carrying RuntimeService and ImageService.
// Handlers are plain async functions of the domain; this file adds logging, cancellation and error mapping.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { criServices, toStatus } from './grpc.js';
import { GrpcStatus, grpcStatusName, loadGrpcJs } from '../common/grpc-status.js';
import { logger, type Logger } from '../common/log.js';
import { NodeletError, hasCode } from '../common/errors.js';
import { socketAnswers } from '../common/unix-socket.js';
import type { GrpcServerKind } from '../config/config.js';
import type { BuiltinGrpcServer } from './h2/server.js';

export interface CallContext {
  /** Aborted when the client cancels or its deadline passes. */
  signal: AbortSignal;
  /** Client deadline in ms since the epoch, when one was set. */
  deadline?: number;
  log: Logger;
}

export type UnaryHandler<Req = any, Res = any> = (request: Req, ctx: CallContext) => Promise<Res>;
/** `write` resolves once the message is handed to the transport (waits for drain on a slow client). */
export type StreamHandler<Req = any, Res = any> = (request: Req, write: (msg: Res) => Promise<void>, ctx: CallContext) => Promise<void>;

export interface ServiceHandlers {
  unary: Record<string, UnaryHandler>;
  stream?: Record<string, StreamHandler>;
}

/** Joins handler sets built by different parts (runtime, streaming, stats, events) into one service. */
export function mergeHandlers(...sets: ServiceHandlers[]): ServiceHandlers {
  const merged: ServiceHandlers = { unary: {}, stream: {} };
  for (const set of sets) {
    for (const [name, h] of Object.entries(set.unary)) {
      if (merged.unary[name]) throw new Error(`two handlers for ${name}`);
      merged.unary[name] = h;
    }
    for (const [name, h] of Object.entries(set.stream ?? {})) {
      if (merged.stream![name]) throw new Error(`two handlers for ${name}`);
      merged.stream![name] = h;
    }
  }
  return merged;
}

/** A response already in wire form (a handler's own encoding); sent as is, past the generic serializer. */
export class EncodedMessage {
  constructor(readonly bytes: Buffer) {}
}

/** The service with each method's serializer passing an EncodedMessage through unchanged. */
function acceptingEncoded(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  return Object.fromEntries(
    Object.entries(service).map(([method, def]) => {
      const serialize = def.responseSerialize;
      return [method, { ...def, responseSerialize: (value: unknown) => (value instanceof EncodedMessage ? value.bytes : serialize(value)) }];
    }),
  );
}

export interface CallObserver {
  onCall(method: string, code: grpc.status, seconds: number): void;
}

type ServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

function deadlineOf(call: ServerCall): number | undefined {
  const d = call.getDeadline();
  if (d === Infinity) return undefined;
  const ms = d instanceof Date ? d.getTime() : Number(d);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * One call's context. Its abort signal (an AbortController, a deadline timer and a 'cancelled' listener)
 * is made the first time a handler asks for it: few handlers do, and making it for every call was the
 * largest cost of our own in a trivial call's profile.
 */
class CallScope implements CallContext {
  readonly deadline: number | undefined;
  private controller?: AbortController;
  private timer?: NodeJS.Timeout;
  private readonly onCancel = () => this.controller?.abort(new NodeletError('DeadlineExceeded', `${this.method}: cancelled by the client or its deadline passed`));

  constructor(
    private readonly call: ServerCall,
    private readonly method: string,
    readonly log: Logger,
  ) {
    this.deadline = deadlineOf(call);
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      const left = this.deadline === undefined ? Infinity : this.deadline - Date.now();
      if (this.call.cancelled || left <= 0) {
        this.onCancel();
      } else {
        this.call.on('cancelled', this.onCancel);
        if (left !== Infinity) {
          this.timer = setTimeout(this.onCancel, left);
          this.timer.unref();
        }
      }
    }
    return this.controller.signal;
  }

  done(): void {
    if (!this.controller) return;
    if (this.timer) clearTimeout(this.timer);
    this.call.removeListener('cancelled', this.onCancel);
  }
}

/** One child logger per method, made at its first call (after main has configured the root logger). */
function methodLogger(method: string): () => Logger {
  let log: Logger | undefined;
  return () => (log ??= logger({ rpc: method }));
}

function wrapUnary(method: string, handler: UnaryHandler, observer?: CallObserver): grpc.handleUnaryCall<unknown, unknown> {
  const log = methodLogger(method);
  return (call, callback) => {
    const started = process.hrtime.bigint();
    const ctx = new CallScope(call, method, log());
    const finish = (code: grpc.status) => observer?.onCall(method, code, Number(process.hrtime.bigint() - started) / 1e9);
    handler(call.request, ctx).then(
      (res) => {
        ctx.done();
        finish(GrpcStatus.OK);
        if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'ok');
        callback(null, res);
      },
      (err: unknown) => {
        ctx.done();
        const status = toStatus(err);
        finish(status.code ?? GrpcStatus.UNKNOWN);
        const level = status.code === GrpcStatus.UNKNOWN || status.code === GrpcStatus.INTERNAL ? 'error' : 'info';
        ctx.log[level]({ code: grpcStatusName(status.code ?? GrpcStatus.UNKNOWN), err: status.details }, 'failed');
        callback(status as grpc.ServiceError, null);
      },
    );
  };
}

function wrapStream(method: string, handler: StreamHandler, observer?: CallObserver): grpc.handleServerStreamingCall<unknown, unknown> {
  const log = methodLogger(method);
  return (call) => {
    const started = process.hrtime.bigint();
    const ctx = new CallScope(call, method, log());
    const write = async (msg: unknown): Promise<void> => {
      if (call.cancelled) return;
      if (!call.write(msg)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            call.removeListener('drain', done);
            call.removeListener('cancelled', done);
            resolve();
          };
          call.once('drain', done);
          call.once('cancelled', done);
        });
      }
    };
    handler(call.request, write, ctx).then(
      () => {
        ctx.done();
        observer?.onCall(method, GrpcStatus.OK, Number(process.hrtime.bigint() - started) / 1e9);
        if (!call.cancelled) call.end();
      },
      (err: unknown) => {
        ctx.done();
        const status = toStatus(err);
        observer?.onCall(method, status.code ?? GrpcStatus.UNKNOWN, Number(process.hrtime.bigint() - started) / 1e9);
        if (!call.cancelled) call.destroy(Object.assign(new Error(status.details), status));
      },
    );
  };
}

/** Builds a grpc-js implementation: every method of the service is present; unbuilt ones answer UNIMPLEMENTED. */
function implement(service: grpc.ServiceDefinition, name: string, handlers: ServiceHandlers, observer?: CallObserver): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(service)) {
    const full = `${name}/${method}`;
    if (def.responseStream) {
      const h = handlers.stream?.[method];
      impl[method] = wrapStream(full, h ?? (async () => {
        throw new NodeletError('Unimplemented', `${full} is not implemented by nodelet yet`);
      }), observer);
    } else {
      const h = handlers.unary[method];
      impl[method] = wrapUnary(full, h ?? (async () => {
        throw new NodeletError('Unimplemented', `${full} is not implemented by nodelet yet`);
      }), observer);
    }
  }
  return impl;
}

export interface CriServerOptions {
  socket: string;
  runtime: ServiceHandlers;
  image: ServiceHandlers;
  observer?: CallObserver;
  /** Which gRPC server carries the calls: grpc-js on node:http2, or our own HTTP/2 code (src/cri/h2/). */
  transport?: GrpcTransport;
}

export type GrpcTransport = GrpcServerKind;

export class CriServer {
  private server?: grpc.Server;
  private builtin?: BuiltinGrpcServer;
  constructor(private readonly opts: CriServerOptions) {}

  async start(): Promise<void> {
    if (this.opts.transport === 'builtin') return this.startBuiltin();
    const grpcJs = loadGrpcJs();
    const services = criServices();
    const server = new grpcJs.Server({
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
      // Nobody reads channelz here; with it on, grpc-js counts and timestamps every call and message.
      'grpc.enable_channelz': 0,
    });
    const runtime = acceptingEncoded(services.runtime);
    const image = acceptingEncoded(services.image);
    server.addService(runtime, implement(runtime, 'runtime.v1.RuntimeService', this.opts.runtime, this.opts.observer));
    server.addService(image, implement(image, 'runtime.v1.ImageService', this.opts.image, this.opts.observer));
    await prepareSocket(this.opts.socket);
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${this.opts.socket}`, grpcJs.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
    });
    await fsp.chmod(this.opts.socket, 0o660);
    this.server = server;
  }

  private async startBuiltin(): Promise<void> {
    const services = criServices();
    // Loaded only when chosen: grpc-js stays the only transport in memory by default.
    const { BuiltinGrpcServer } = await import('./h2/server.js');
    const server = new BuiltinGrpcServer();
    const runtime = acceptingEncoded(services.runtime);
    const image = acceptingEncoded(services.image);
    server.addService(runtime, implement(runtime, 'runtime.v1.RuntimeService', this.opts.runtime, this.opts.observer));
    server.addService(image, implement(image, 'runtime.v1.ImageService', this.opts.image, this.opts.observer));
    await prepareSocket(this.opts.socket);
    await server.listen(this.opts.socket);
    await fsp.chmod(this.opts.socket, 0o660);
    this.builtin = server;
  }

  async stop(graceMs = 5000): Promise<void> {
    const builtin = this.builtin;
    if (builtin) {
      this.builtin = undefined;
      await builtin.stop(graceMs);
      await fsp.rm(this.opts.socket, { force: true });
      return;
    }
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await fsp.rm(this.opts.socket, { force: true });
  }
}

/** A stale socket (nobody answering) is removed; a live one means another daemon owns it. */
async function prepareSocket(socket: string): Promise<void> {
  await fsp.mkdir(path.dirname(socket), { recursive: true, mode: 0o755 });
  try {
    await fsp.lstat(socket);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  const live = await socketAnswers(socket);
  if (live) throw new NodeletError('FailedPrecondition', `socket ${socket} is in use by a running process; refusing to replace it`);
  await fsp.rm(socket, { force: true });
}
