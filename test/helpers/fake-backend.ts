// A RuntimeBackend that runs nothing: containers are entries in a FakeHost, which outlives any one
// backend (as the kernel and the monitors outlive a daemon), so recovery can be tested by building a
// new daemon over the same host. Steps can be made to fail once, to test undo.
import { PassThrough } from 'node:stream';
import { failedPrecondition, internal, invalidArgument, notFound } from '../../src/common/errors.js';
import type {
  AttachSession,
  BackendCreateOptions,
  BackendCreated,
  BackendFeatures,
  BackendState,
  BackendStopOptions,
  ContainerExit,
  ExecOptions,
  ExecSession,
  ExecSyncOptions,
  ExecSyncResult,
  RuntimeBackend,
} from '../../src/runtime/backend.js';
import type { OciResources, OciSpec } from '../../src/oci/types.js';

export interface FakeContainer {
  id: string;
  spec: OciSpec;
  logPath: string;
  status: 'created' | 'running' | 'stopped';
  pid: number;
  exit?: { exitCode: number; exitedAt: Date; oomKilled?: boolean };
  resources?: OciResources;
  /** Ignores its stop signal (only SIGKILL ends it). */
  stubborn?: boolean;
}

/** What survives a daemon: the containers and their exits. */
export class FakeHost {
  readonly containers = new Map<string, FakeContainer>();
  private nextPid = 10_000;
  /** Operations to fail once, by name (create, start, stop, delete, ...), with the error's message. */
  private readonly failures = new Map<string, string>();
  /** Every call, `op id`, in order. */
  readonly calls: string[] = [];
  private readonly listeners = new Set<(exit: ContainerExit) => void>();

  failNext(op: string, message = `injected ${op} failure`): void {
    this.failures.set(op, message);
  }

  maybeFail(op: string): void {
    const message = this.failures.get(op);
    if (message === undefined) return;
    this.failures.delete(op);
    throw internal(message);
  }

  newPid(): number {
    return this.nextPid++;
  }

  /** The container's process ends by itself (or is killed), as the kernel would report it. */
  exit(id: string, exitCode: number, opts: { oomKilled?: boolean } = {}): void {
    const c = this.containers.get(id);
    if (!c || c.status === 'stopped') return;
    c.status = 'stopped';
    c.exit = { exitCode, exitedAt: new Date(), oomKilled: opts.oomKilled };
    for (const listener of this.listeners) listener({ id, ...c.exit });
  }

  /** The runtime forgets the container and everything of it (a host reboot). */
  lose(id: string): void {
    this.containers.delete(id);
  }

  subscribe(listener: (exit: ContainerExit) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  running(): string[] {
    return [...this.containers.values()].filter((c) => c.status === 'running').map((c) => c.id);
  }
}

export class FakeBackend implements RuntimeBackend {
  readonly type = 'fake';

  constructor(readonly host: FakeHost = new FakeHost()) {}

  private get(id: string, op: string): FakeContainer {
    this.host.calls.push(`${op} ${id}`);
    this.host.maybeFail(op);
    const c = this.host.containers.get(id);
    if (!c) throw notFound(`container ${id} not found in runtime`);
    return c;
  }

  async check(): Promise<string | undefined> {
    return undefined;
  }

  async readiness(): Promise<string[]> {
    return [];
  }

  async cleanStale(): Promise<void> {}

  async features(): Promise<BackendFeatures> {
    return { recursiveReadOnlyMounts: false };
  }

  async create(opts: BackendCreateOptions): Promise<BackendCreated> {
    this.host.calls.push(`create ${opts.id}`);
    this.host.maybeFail('create');
    if (!opts.spec?.process?.args?.length) throw invalidArgument('spec.process.args is empty');
    if (this.host.containers.has(opts.id)) throw failedPrecondition(`container ${opts.id} already exists`);
    const pid = this.host.newPid();
    this.host.containers.set(opts.id, { id: opts.id, spec: opts.spec, logPath: opts.logPath, status: 'created', pid });
    return { pid };
  }

  async start(id: string): Promise<void> {
    const c = this.get(id, 'start');
    if (c.status !== 'created') throw failedPrecondition(`container ${id} is ${c.status}`);
    c.status = 'running';
  }

  async kill(id: string, signal: string | number): Promise<void> {
    const c = this.get(id, 'kill');
    if (c.status !== 'running') return;
    if (signal === 'SIGKILL' || signal === 9) this.host.exit(id, 137);
    else if (!c.stubborn) this.host.exit(id, 0);
  }

  async stop(id: string, timeoutSec: number, stopSignal: string | number = 'SIGTERM', opts: BackendStopOptions = {}): Promise<void> {
    const c = this.get(id, 'stop');
    opts.signal?.throwIfAborted();
    if (c.status === 'stopped') return;
    if (c.status === 'created') {
      this.host.exit(id, 137);
      return;
    }
    if (timeoutSec > 0 && !opts.escalate?.aborted) await this.kill(id, stopSignal);
    if (c.status === 'running') this.host.exit(id, 137);
  }

  async delete(id: string): Promise<void> {
    this.host.calls.push(`delete ${id}`);
    this.host.maybeFail('delete');
    this.host.containers.delete(id);
  }

  async state(id: string): Promise<BackendState | undefined> {
    const c = this.host.containers.get(id);
    return c ? { status: c.status, pid: c.status === 'stopped' ? 0 : c.pid } : undefined;
  }

  async exitOf(id: string): Promise<ContainerExit | undefined> {
    const c = this.host.containers.get(id);
    return c?.exit ? { id, ...c.exit } : undefined;
  }

  async *exits(signal: AbortSignal): AsyncIterable<ContainerExit> {
    const queue: ContainerExit[] = [];
    let wake: (() => void) | undefined;
    const unsubscribe = this.host.subscribe((exit) => {
      queue.push(exit);
      wake?.();
    });
    const onAbort = (): void => wake?.();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal.aborted) {
        const exit = queue.shift();
        if (exit) yield exit;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      unsubscribe();
      signal.removeEventListener('abort', onAbort);
    }
  }

  async monitorPid(): Promise<number | undefined> {
    return undefined;
  }

  async exec(id: string, opts: ExecOptions): Promise<ExecSession> {
    const c = this.get(id, 'exec');
    if (c.status !== 'running') throw failedPrecondition(`container ${id} is not running`);
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const stdin = new PassThrough();
    stdin.resume();
    stdout.end(`${opts.process.args.join(' ')}\n`);
    stderr.end();
    return { stdout, stderr, stdin, exited: Promise.resolve(0), resize: async () => {}, kill: async () => {}, close: async () => {} };
  }

  async execSync(id: string, cmd: string[], _opts: ExecSyncOptions): Promise<ExecSyncResult> {
    const c = this.get(id, 'execSync');
    if (c.status !== 'running') throw failedPrecondition(`container ${id} is not running`);
    // `echo ARGS...` prints; `exit N` exits with N; anything else succeeds silently.
    if (cmd[0] === 'exit') return { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), exitCode: Number(cmd[1] ?? 0), timedOut: false };
    const out = cmd[0] === 'echo' ? `${cmd.slice(1).join(' ')}\n` : '';
    return { stdout: Buffer.from(out), stderr: Buffer.alloc(0), exitCode: 0, timedOut: false };
  }

  async attach(id: string): Promise<AttachSession> {
    this.get(id, 'attach');
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const stdin = new PassThrough();
    stdin.resume();
    let close: () => void = () => undefined;
    const closed = new Promise<void>((resolve) => (close = resolve));
    return { stdout, stderr, stdin, closed, close, droppedBytes: () => 0 };
  }

  async resize(id: string, width: number, height: number): Promise<void> {
    this.get(id, 'resize');
    if (width < 0 || height < 0 || width > 1000 || height > 1000) throw invalidArgument(`terminal size ${width}x${height} out of range 0..1000`);
  }

  async updateResources(id: string, resources: OciResources): Promise<void> {
    this.get(id, 'updateResources').resources = resources;
  }

  async reopenLog(id: string): Promise<void> {
    const c = this.get(id, 'reopenLog');
    if (c.status !== 'running') throw failedPrecondition(`container ${id} is not running`);
  }

  cgroupOf(id: string, cgroupParent: string | undefined): string {
    return `${cgroupParent || '/fake'}/${id}`;
  }
}
