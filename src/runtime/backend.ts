// RuntimeBackend: what the sandbox, container, streaming and stats code may ask of the thing that runs
// containers, and nothing more (in the spirit of CRI-O's internal/oci RuntimeImpl). Each backend lives
// in src/runtime/<type>/ and is built by the BackendFactory from a runtime handler's config; nothing
// outside those directories knows which one it talks to. Ids are the CRI ids; errors are the typed
// domain errors of src/common/errors.ts (NotFound when the backend does not know the id).
import type { Readable, Writable } from 'node:stream';
import { DEFAULT_HANDLER_TYPE, type NodeletConfig, type RuntimeHandlerConfig } from '../config/config.js';
import type { OciMount, OciResources, OciSpec } from '../oci/types.js';

/** What a container is to its backend. */
export type BackendContainerStatus = 'created' | 'running' | 'paused' | 'stopped';

export interface BackendCreateOptions {
  id: string;
  /** The full OCI runtime spec; root.path names the root filesystem. */
  spec: OciSpec;
  /**
   * Mounts that make up the root filesystem at spec.root.path, for a backend that mounts it itself.
   * Empty or absent: the caller has mounted it already (what the services do today).
   */
  rootfsMounts?: OciMount[];
  /** The CRI-format log file (`<RFC3339Nano> <stdout|stderr> <P|F> <text>` lines) the backend writes. */
  logPath: string;
  /** Bytes; the log is cut when it grows beyond this (absent: no limit). */
  logMaxSize?: number;
  tty: boolean;
  stdin: boolean;
  /** Close stdin when the first attached client detaches. */
  stdinOnce: boolean;
}

export interface BackendCreated {
  /** The container's init process, as seen from the host. */
  pid: number;
}

export interface BackendState {
  status: BackendContainerStatus;
  /** Host pid of the init process; 0 when none. */
  pid: number;
  /**
   * The backend has no record of the container but its processes still run (found by cgroup):
   * it counts as running, and stop/delete kill those processes.
   */
  untracked?: boolean;
}

export interface ContainerExit {
  id: string;
  exitCode: number;
  exitedAt: Date;
  /** Set when the backend had to infer the end (its monitor died with the container): said to the user. */
  reason?: string;
  /** The kernel's OOM killer ended it (or a process of it). */
  oomKilled?: boolean;
  /** The backend has no trace of the container left (not its record, its processes or its exit): exit code 255. */
  lost?: boolean;
}

export interface BackendStopOptions {
  /** The caller gave up (cancelled RPC): stop waiting and throw its reason. */
  signal?: AbortSignal;
  /** Aborted by a later timeout-0 stop: skip what is left of the grace period and kill now. */
  escalate?: AbortSignal;
}

/** A connection to a process's stdio (an attach to the container, or an exec session). */
export interface StdioSession {
  /** The process's stdout (on a terminal: the terminal's output). */
  stdout: Readable;
  /** Empty (ended at once) on a terminal. */
  stderr: Readable;
  /** Bytes written here reach the process's stdin; end() closes our side. */
  stdin: Writable;
  /** The largest write stdin takes as one message; the caller splits larger ones. Absent: any size. */
  maxStdinChunk?: number;
}

export interface AttachSession extends StdioSession {
  /** Resolves when the container's side closes (it exited) or close() was called. */
  closed: Promise<void>;
  close(): void;
  /** Output bytes dropped so far because the reader was too far behind. */
  droppedBytes(): number;
}

export interface ExecProcess {
  /** The command; cwd, user, capabilities and the rest come from the container's own process. */
  args: string[];
  /** Extra `KEY=value` entries; they override the container's own by key. */
  env?: string[];
}

export interface ExecOptions {
  process: ExecProcess;
  /** Run on a terminal (stdout and stderr are one stream, stdout). */
  tty: boolean;
  /** The client sends stdin. */
  stdin: boolean;
  /** The terminal's first size, set before the command runs (tty only). */
  width?: number;
  height?: number;
}

export interface ExecSession extends StdioSession {
  /** The command's exit code (128 + signal when killed by one). */
  exited: Promise<number>;
  /** Said to the user instead of running anything (the command could not be run), if set. */
  message?: string;
  /** Resizes the terminal (tty only). */
  resize(width: number, height: number): Promise<void>;
  /** SIGKILLs the command. */
  kill(): Promise<void>;
  /** Releases the session once the command exited or was killed; call it exactly once. */
  close(): Promise<void>;
}

export interface ExecSyncOptions {
  /** Kill the command after this long; 0: no limit. */
  timeoutSec: number;
  /** Extra `KEY=value` entries; they override the container's own. */
  env?: string[];
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
  /** The command was killed because timeoutSec passed. */
  timedOut: boolean;
}

export interface BackendFeatures {
  /** The "rro" mount option (recursive read-only) is applied. */
  recursiveReadOnlyMounts: boolean;
  /**
   * The backend mounts a container's root filesystem itself from BackendCreateOptions.rootfsMounts (a
   * shim that runs containers in a VM needs the mount spec, not a host path): the caller hands it the
   * overlay unmounted, as overlay refuses a second mount on the same upper and work dirs.
   */
  mountsRootfs?: boolean;
}

export interface RuntimeBackend {
  /** The handler's type: the key it was built under in the factory. */
  readonly type: string;

  // ---- start-up ----

  /** Why this backend cannot be used (a binary missing, a daemon unreachable), or undefined when it can. */
  check(): Promise<string | undefined>;
  /** Problems that make the runtime not ready (RuntimeReady false), empty when none. */
  readiness(): Promise<string[]>;
  /** Once at daemon start, before recovery: remove what a daemon killed mid-operation left half-written. */
  cleanStale(): Promise<void>;
  features(): Promise<BackendFeatures>;

  // ---- lifecycle ----

  /** Creates the container (not started); resolves once it exists. Undoes itself when it fails. */
  create(opts: BackendCreateOptions): Promise<BackendCreated>;
  start(id: string): Promise<void>;
  /** Sends a signal to the init process (`all`: every process of the container); a stopped container is left alone. */
  kill(id: string, signal: string | number, all?: boolean): Promise<void>;
  /**
   * Sends stopSignal, waits up to timeoutSec for the exit, then SIGKILL (at once when timeoutSec is 0).
   * Resolves once the exit is recorded; stopping a stopped container does nothing. NotFound when unknown.
   */
  stop(id: string, timeoutSec: number, stopSignal?: string | number, opts?: BackendStopOptions): Promise<void>;
  /** Removes the container and everything the backend keeps for it; fine to call again, or for an id never created. */
  delete(id: string): Promise<void>;
  /** The backend's view of the container; undefined when it has no trace of it. */
  state(id: string): Promise<BackendState | undefined>;
  /** How the container ended, undefined while it runs (or was never started). Cheap: called on every status. */
  exitOf(id: string): Promise<ContainerExit | undefined>;
  /**
   * Exits as they happen, until `signal` aborts (then the iteration ends). An exit may be reported more
   * than once, and one may be missed: callers also poll exitOf for what they believe runs.
   */
  exits(signal: AbortSignal): AsyncIterable<ContainerExit>;
  /**
   * The pid of the process that holds the container's stdio and reaps it, while it lives (for the
   * live-monitors metric); undefined when gone or when the backend has none of its own.
   */
  monitorPid(id: string): Promise<number | undefined>;

  // ---- processes and stdio ----

  /** Runs a command in the container with stdio of its own, for the streaming server. */
  exec(id: string, opts: ExecOptions): Promise<ExecSession>;
  /** Runs a command in the container and collects its output (each stream capped); kills it on timeout. */
  execSync(id: string, cmd: string[], opts: ExecSyncOptions): Promise<ExecSyncResult>;
  /** Connects to the container's stdio: output from now on, stdin when created with stdin. */
  attach(id: string): Promise<AttachSession>;
  /** Resizes the container's terminal (tty containers); InvalidArgument outside 0..1000. */
  resize(id: string, width: number, height: number): Promise<void>;

  // ---- resources, logs, stats ----

  /** Applies new cgroup limits to a live container. */
  updateResources(id: string, resources: OciResources): Promise<void>;
  /** Reopens the log file (after rotation); resolves once it exists again. */
  reopenLog(id: string): Promise<void>;
  /**
   * Where the container's stats come from: its cgroup directory relative to the hierarchy root
   * (the same for v1 controllers and v2), given the pod's cgroup parent. Synchronous and cheap.
   */
  cgroupOf(id: string, cgroupParent: string | undefined): string;
}

/** What a backend is built from. */
export interface BackendEnvironment {
  /** The handler's name (the CRI runtime_handler). */
  name: string;
  handler: RuntimeHandlerConfig;
  config: NodeletConfig;
}

/** Builds a backend; a promise when its module is loaded on first use (see backends.ts). */
export type BackendConstructor = (env: BackendEnvironment) => RuntimeBackend | Promise<RuntimeBackend>;

/** Builds a handler's backend by the handler's type; the types come from the registration in backends.ts. */
export class BackendFactory {
  private readonly constructors: ReadonlyMap<string, BackendConstructor>;

  constructor(constructors: Record<string, BackendConstructor>) {
    this.constructors = new Map(Object.entries(constructors));
  }

  types(): string[] {
    return [...this.constructors.keys()];
  }

  /** The handler's type, or undefined when no backend of that type is built in. */
  constructorFor(type: string): BackendConstructor | undefined {
    return this.constructors.get(type);
  }

  async create(env: BackendEnvironment): Promise<RuntimeBackend> {
    const type = handlerType(env.handler);
    const make = this.constructors.get(type);
    if (!make) throw new Error(`its type ${type} has no backend in this build (backends: ${this.types().join(', ')})`);
    return await make(env);
  }
}

/** A handler without a type is an OCI runtime binary under the default backend. */
export function handlerType(handler: RuntimeHandlerConfig): string {
  return handler.type ?? DEFAULT_HANDLER_TYPE;
}
