// One connection to a containerd and one namespace, shared by every containerd handler of the daemon: the
// client, the managed daemon (when nodelet-cri runs its own), the exit events and the stdio of the tasks.
// Exits come from the events service (/tasks/exit, /tasks/oom); when the stream breaks (containerd restarted)
// it is opened again and the tasks are read back with Tasks.List, so an exit missed meanwhile is still found.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { cgroupDirFor } from '../../stats/cgroup.js';
import { errorMessage, isKind } from '../../common/errors.js';
import { logger } from '../../common/log.js';
import type { ContainerExit } from '../backend.js';
import { ContainerdClient, decodeEvent, timestampToDate, type EventEnvelope } from './client.js';
import { ManagedContainerd } from './managed-containerd.js';
import { ProcessIO } from './fifo-io.js';
import type { Container__Output } from './generated/containerd/services/containers/v1/Container.js';
import type { ListContainersResponse__Output } from './generated/containerd/services/containers/v1/ListContainersResponse.js';
import type { ListTasksResponse__Output } from './generated/containerd/services/tasks/v1/ListTasksResponse.js';
import type { Process__Output } from './generated/containerd/v1/types/Process.js';

/** Labels nodelet keeps on its containerd containers: what it needs to reopen a task's stdio after a restart. */
export const LABEL_LOG_PATH = 'io.nodelet.log-path';
export const LABEL_TTY = 'io.nodelet.tty';
export const LABEL_STDIN = 'io.nodelet.stdin';
export const LABEL_STDIN_ONCE = 'io.nodelet.stdin-once';
export const LABEL_OOM_KILLED = 'io.nodelet.oom-killed';
export const LABEL_MANAGED = 'io.nodelet.managed';

export interface ConnectionOptions {
  /** containerd's socket; absent: nodelet-cri starts its own containerd. */
  address?: string;
  namespace: string;
  /** nodelet's --root and --run-root (the managed containerd and the FIFOs live under them). */
  root: string;
  runRoot: string;
  containerdBinary?: string;
}

interface ProcessExit {
  exitCode: number;
  exitedAt: Date;
}

type ExitListener = (exit: ContainerExit) => void;

const RESUBSCRIBE_MIN_MS = 200;
const RESUBSCRIBE_MAX_MS = 5000;
/** Exits kept for execs nobody waits for yet (an exec's exit can arrive before Start answers). */
const MAX_EARLY_EXEC_EXITS = 1024;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export class ContainerdConnection {
  readonly namespace: string;
  readonly ioRoot: string;
  client!: ContainerdClient;
  private managed: ManagedContainerd | undefined;
  private readyPromise: Promise<void> | undefined;
  private closed = false;
  /** Exits of containers (their init process) seen on events or read from containerd. */
  readonly containerExits = new Map<string, ContainerExit>();
  readonly oomKilled = new Set<string>();
  /** stdio of the containers whose task runs or ran since this daemon started. */
  readonly ios = new Map<string, ProcessIO>();
  private readonly exitListeners = new Set<ExitListener>();
  private readonly execWaiters = new Map<string, (exit: ProcessExit) => void>();
  private readonly earlyExecExits = new Map<string, ProcessExit>();
  private readonly log = logger({ component: 'containerd-backend' });
  private stream: ReturnType<ContainerdClient['subscribe']> | undefined;

  constructor(private readonly opts: ConnectionOptions) {
    this.namespace = opts.namespace;
    this.ioRoot = path.join(opts.runRoot, 'containerd-io');
  }

  get address(): string {
    return this.opts.address ?? this.managed?.socket ?? '';
  }

  get managedDaemon(): ManagedContainerd | undefined {
    return this.managed;
  }

  /** Starts containerd when it is ours, connects, subscribes to exits and reopens the stdio of running tasks. */
  ready(): Promise<void> {
    this.readyPromise ??= this.connect().catch((err: unknown) => {
      this.readyPromise = undefined;
      throw err;
    });
    return this.readyPromise;
  }

  private async connect(): Promise<void> {
    let address = this.opts.address;
    if (!address) {
      this.managed = new ManagedContainerd({ root: this.opts.root, runRoot: this.opts.runRoot, binary: this.opts.containerdBinary });
      await this.managed.start();
      address = this.managed.socket;
    }
    this.client = new ContainerdClient(address, this.opts.namespace);
    await this.client.version(10_000);
    await this.subscribe();
    await this.recover();
  }

  /** The stdio dir of a container (and of its execs, below it). */
  ioDir(id: string): string {
    return path.join(this.ioRoot, id);
  }

  onExit(listener: ExitListener): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }

  /** Resolves with the exec's exit as the events report it. */
  waitExec(execId: string): Promise<ProcessExit> {
    const early = this.earlyExecExits.get(execId);
    if (early) {
      this.earlyExecExits.delete(execId);
      return Promise.resolve(early);
    }
    return new Promise((resolve) => this.execWaiters.set(execId, resolve));
  }

  forgetExec(execId: string): void {
    this.execWaiters.delete(execId);
    this.earlyExecExits.delete(execId);
  }

  private async subscribe(): Promise<void> {
    const stream = this.client.subscribe(['topic=="/tasks/exit"', 'topic=="/tasks/oom"']);
    this.stream = stream;
    stream.on('data', (env: EventEnvelope) => this.onEvent(env));
    let failed = false;
    const again = (err?: unknown): void => {
      if (failed || this.closed || this.stream !== stream) return;
      failed = true;
      this.log.warn({ err: err ? errorMessage(err) : 'stream ended' }, 'containerd event stream broke; subscribing again');
      void this.resubscribe();
    };
    stream.on('error', again);
    stream.on('end', () => again());
    // The stream is established once containerd sent its headers; wait for that (bounded) so no exit is lost.
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2000);
      stream.once('metadata', () => {
        clearTimeout(t);
        resolve();
      });
      stream.once('error', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private async resubscribe(): Promise<void> {
    let delay = RESUBSCRIBE_MIN_MS;
    while (!this.closed) {
      await sleep(delay);
      try {
        await this.client.version(2000);
        await this.subscribe();
        await this.reconcileExits();
        return;
      } catch (err) {
        this.log.debug({ err: errorMessage(err) }, 'containerd not back yet');
        delay = Math.min(RESUBSCRIBE_MAX_MS, delay * 2);
      }
    }
  }

  private onEvent(env: EventEnvelope): void {
    if (env.namespace && env.namespace !== this.namespace) return;
    const decoded = decodeEvent<{ container_id: string; id?: string; exit_status?: number; exited_at?: { seconds: number; nanos: number } }>(env.event);
    if (!decoded) return;
    const { event } = decoded;
    if (env.topic === '/tasks/oom') {
      this.oomKilled.add(event.container_id);
      // Kept on the container too, so a restarted nodelet-cri still says OOMKilled.
      void this.labelOom(event.container_id);
      return;
    }
    if (env.topic !== '/tasks/exit') return;
    const exit: ProcessExit = { exitCode: event.exit_status ?? 0, exitedAt: timestampToDate(event.exited_at) ?? new Date() };
    if (!event.id || event.id === event.container_id) {
      void this.recordExit(event.container_id, exit);
      return;
    }
    const waiter = this.execWaiters.get(event.id);
    if (waiter) {
      this.execWaiters.delete(event.id);
      waiter(exit);
    } else if (this.earlyExecExits.size < MAX_EARLY_EXEC_EXITS) {
      this.earlyExecExits.set(event.id, exit);
    }
  }

  /** Remembers a container's exit (once) and tells the listeners; an OOM kill is read from its cgroup first. */
  async recordExit(id: string, exit: ProcessExit): Promise<ContainerExit> {
    const known = this.containerExits.get(id);
    if (known) return known;
    // The /tasks/oom event may come after /tasks/exit: the cgroup (kept until Tasks.Delete) says it for sure.
    if (!this.oomKilled.has(id) && (await this.cgroupSawOomKill(id))) this.oomKilled.add(id);
    const again = this.containerExits.get(id);
    if (again) return again;
    const full: ContainerExit = { id, exitCode: exit.exitCode, exitedAt: exit.exitedAt, oomKilled: this.oomKilled.has(id) };
    this.containerExits.set(id, full);
    for (const l of this.exitListeners) l(full);
    return full;
  }

  /** cgroupsPath of each container created or recovered here (for the OOM check). */
  readonly cgroupPaths = new Map<string, string>();

  private async cgroupSawOomKill(id: string): Promise<boolean> {
    const cgroupsPath = this.cgroupPaths.get(id);
    if (!cgroupsPath) return false;
    const dir = cgroupDirFor(cgroupsPath);
    for (const file of [path.join('/sys/fs/cgroup', dir, 'memory.events'), path.join('/sys/fs/cgroup/memory', dir, 'memory.oom_control'), path.join('/sys/fs/cgroup/unified', dir, 'memory.events')]) {
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      const m = /^oom_kill (\d+)$/m.exec(text);
      return m !== null && Number(m[1]) > 0;
    }
    return false;
  }

  private async labelOom(id: string): Promise<void> {
    try {
      await this.client.containers('Update', {
        container: { id, labels: { [LABEL_OOM_KILLED]: 'true' } },
        update_mask: { paths: [`labels.${LABEL_OOM_KILLED}`] },
      });
    } catch (err) {
      this.log.debug({ id, err: errorMessage(err) }, 'could not label the OOM kill');
    }
  }

  async listContainers(): Promise<Container__Output[]> {
    const res = await this.client.containers<ListContainersResponse__Output>('List', { filters: [] });
    return (res.containers ?? []).filter((c) => c.labels?.[LABEL_MANAGED] === 'true');
  }

  /** The tasks of the namespace, keyed by container id (Tasks.List fills only `id` with it; Get fills container_id). */
  async listTasks(): Promise<Map<string, Process__Output>> {
    const res = await this.client.tasks<ListTasksResponse__Output>('List', {});
    return new Map((res.tasks ?? []).map((t) => [t.container_id || t.id, t]));
  }

  /** Exits of stopped tasks nobody reported to us (they ended while the stream was down). */
  private async reconcileExits(): Promise<void> {
    for (const [id, t] of await this.listTasks()) {
      if (t.status === 'STOPPED' && !this.containerExits.has(id)) {
        await this.recordExit(id, { exitCode: t.exit_status, exitedAt: timestampToDate(t.exited_at) ?? new Date() });
      }
    }
  }

  /** At start: our containers' OOM labels and exits, and the stdio of the tasks still running. */
  private async recover(): Promise<void> {
    const tasks = await this.listTasks();
    for (const c of await this.listContainers()) {
      const labels = c.labels ?? {};
      if (labels[LABEL_OOM_KILLED] === 'true') this.oomKilled.add(c.id);
      const cgroupsPath = specCgroupsPath(c.spec?.value);
      if (cgroupsPath) this.cgroupPaths.set(c.id, cgroupsPath);
      const task = tasks.get(c.id);
      if (!task) continue;
      if (task.status === 'STOPPED') {
        await this.recordExit(c.id, { exitCode: task.exit_status, exitedAt: timestampToDate(task.exited_at) ?? new Date() });
        continue;
      }
      try {
        const io = await ProcessIO.open(
          { dir: this.ioDir(c.id), tty: labels[LABEL_TTY] === 'true', stdin: labels[LABEL_STDIN] === 'true', logPath: labels[LABEL_LOG_PATH] ?? '' },
          false,
        );
        this.ios.set(c.id, io);
      } catch (err) {
        this.log.warn({ id: c.id, err: errorMessage(err) }, 'cannot reopen the stdio of a running task; its log stops here');
      }
    }
    this.log.info({ containers: this.ios.size, exits: this.containerExits.size }, 'containerd state recovered');
  }

  /** The task's process as containerd reports it; undefined when it has no task. */
  async task(id: string): Promise<Process__Output | undefined> {
    try {
      const res = await this.client.tasks<{ process: Process__Output | null }>('Get', { container_id: id });
      return res.process ?? undefined;
    } catch (err) {
      if (isKind(err, 'NotFound')) return undefined;
      throw err;
    }
  }

  async container(id: string): Promise<Container__Output | undefined> {
    try {
      const res = await this.client.containers<{ container: Container__Output | null }>('Get', { id });
      return res.container ?? undefined;
    } catch (err) {
      if (isKind(err, 'NotFound')) return undefined;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stream?.cancel();
    for (const io of this.ios.values()) await io.close();
    this.ios.clear();
    this.client?.close();
    await this.managed?.stop();
  }
}

/** linux.cgroupsPath of a container's spec (JSON in its Any). */
export function specCgroupsPath(value: Buffer | Uint8Array | null | undefined): string | undefined {
  if (!value?.length) return undefined;
  try {
    const spec = JSON.parse(Buffer.from(value).toString('utf8')) as { linux?: { cgroupsPath?: string } };
    return spec.linux?.cgroupsPath || undefined;
  } catch {
    return undefined;
  }
}

const connections = new Map<string, ContainerdConnection>();

/** The shared connection for an address (or the managed daemon of a root) and namespace. */
export function connectionFor(opts: ConnectionOptions): ContainerdConnection {
  const key = `${opts.address ?? `managed:${opts.root}:${opts.runRoot}`}#${opts.namespace}`;
  let conn = connections.get(key);
  if (!conn) {
    conn = new ContainerdConnection(opts);
    connections.set(key, conn);
  }
  return conn;
}

/** Drops a connection from the registry (tests that start several daemons in one process). */
export async function closeConnection(conn: ContainerdConnection): Promise<void> {
  for (const [k, v] of connections) if (v === conn) connections.delete(k);
  await conn.close();
}
