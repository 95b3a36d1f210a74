// Debian's containerd run by nodelet-cri itself when a containerd handler has no --containerd-address: our own
// config (CRI plugin off, root under nodelet's root, state and socket under its run root), restarted with back-off
// when it exits, stopped with SIGTERM on shutdown. Shims are separate processes in their own process groups, so
// neither a restart nor a stop of this daemon touches running tasks.
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { spawnChild } from '../../common/exec.js';
import { unavailable } from '../../common/errors.js';
import { logger } from '../../common/log.js';
import { socketAnswers } from '../../common/unix-socket.js';
import { ContainerdClient } from './client.js';

export const DEFAULT_CONTAINERD_BINARY = '/usr/bin/containerd';

export interface ManagedContainerdOptions {
  /** nodelet's --root: containerd's own root goes to `<root>/containerd`. */
  root: string;
  /** nodelet's --run-root: state, socket, pid file and config under `<runRoot>/containerd`. */
  runRoot: string;
  binary?: string;
  /** How long a start may take to answer Version (default 30 s). */
  readyTimeoutMs?: number;
  /** First restart delay; doubles up to maxBackoffMs, reset after a run of a minute (default 500 ms). */
  backoffMs?: number;
  maxBackoffMs?: number;
}

export interface ContainerdPaths {
  root: string;
  state: string;
  socket: string;
  config: string;
  pidFile: string;
  logFile: string;
}

export function containerdPaths(opts: { root: string; runRoot: string }): ContainerdPaths {
  const run = path.join(opts.runRoot, 'containerd');
  return {
    root: path.join(opts.root, 'containerd'),
    state: path.join(run, 'state'),
    socket: path.join(run, 'containerd.sock'),
    config: path.join(run, 'config.toml'),
    pidFile: path.join(run, 'containerd.pid'),
    logFile: path.join(opts.root, 'containerd', 'containerd.log'),
  };
}

/** containerd's config: no CRI plugin (nodelet is the CRI), no snapshotters we don't use, nothing under /opt. */
export function buildContainerdConfig(p: ContainerdPaths): string {
  const disabled = [
    'io.containerd.grpc.v1.cri',
    'io.containerd.snapshotter.v1.aufs',
    'io.containerd.snapshotter.v1.btrfs',
    'io.containerd.snapshotter.v1.zfs',
    'io.containerd.snapshotter.v1.devmapper',
    'io.containerd.internal.v1.opt',
    'io.containerd.tracing.processor.v1.otlp',
  ];
  return [
    'version = 2',
    `root = ${JSON.stringify(p.root)}`,
    `state = ${JSON.stringify(p.state)}`,
    `disabled_plugins = [${disabled.map((d) => JSON.stringify(d)).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${JSON.stringify(p.socket)}`,
    '',
    '[debug]',
    '  level = "warn"',
    '',
  ].join('\n');
}

/** Held (not unref'd): during start-up nothing else may keep the process alive while we wait. */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function processCommand(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
}

export class ManagedContainerd {
  readonly paths: ContainerdPaths;
  private readonly binary: string;
  private readonly readyTimeoutMs: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private child: ReturnType<typeof spawnChild> | undefined;
  private stopping = false;
  private restarts = 0;
  private readonly log = logger({ component: 'containerd' });

  constructor(opts: ManagedContainerdOptions) {
    this.paths = containerdPaths(opts);
    this.binary = opts.binary ?? DEFAULT_CONTAINERD_BINARY;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
    this.backoffMs = opts.backoffMs ?? 500;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  }

  get socket(): string {
    return this.paths.socket;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** How many times the daemon was restarted after exiting on its own. */
  get restartCount(): number {
    return this.restarts;
  }

  /** Starts containerd (replacing one a previous nodelet-cri left running) and waits until it answers. */
  async start(): Promise<void> {
    await fsp.mkdir(path.dirname(this.paths.socket), { recursive: true, mode: 0o711 });
    await fsp.mkdir(this.paths.root, { recursive: true, mode: 0o711 });
    await fsp.writeFile(this.paths.config, buildContainerdConfig(this.paths));
    await this.stopLeftover();
    await this.launch();
  }

  /** A containerd of a previous nodelet-cri (it was killed and could not stop its child): SIGTERM leaves tasks running. */
  private async stopLeftover(): Promise<void> {
    const pid = Number((await fsp.readFile(this.paths.pidFile, 'utf8').catch(() => '')).trim());
    if (!pid) return;
    const cmd = processCommand(pid);
    if (!cmd || !cmd[0]?.endsWith('containerd') || !cmd.includes(this.paths.config)) return;
    this.log.info({ pid }, 'stopping the containerd a previous nodelet-cri left running');
    await this.signalAndWait(pid, 10_000);
  }

  private async signalAndWait(pid: number, graceMs: number): Promise<void> {
    const alive = () => {
      const cmd = processCommand(pid);
      if (!cmd) return false;
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    };
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline) {
      if (!alive()) return;
      await sleep(50);
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }

  private async launch(): Promise<void> {
    // Killed (SIGTERM) when nodelet-cri exits: containerd stops, its shims and their tasks do not.
    const child = spawnChild(this.binary, ['--config', this.paths.config], {
      stdin: 'ignore',
      outputFile: this.paths.logFile,
      buffer: false,
    });
    this.child = child;
    const startedAt = Date.now();
    let exited = false;
    void child.then(
      (res) => {
        exited = true;
        this.onExit(child, res.exitCode, res.signal ?? undefined, Date.now() - startedAt);
      },
      () => {
        exited = true;
      },
    );
    await fsp.writeFile(this.paths.pidFile, `${child.pid}\n`);
    await this.waitReady(() => exited);
  }

  private async waitReady(exited: () => boolean): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    const client = new ContainerdClient(this.paths.socket, 'default');
    try {
      while (Date.now() < deadline && !exited()) {
        if (existsSync(this.paths.socket) && (await socketAnswers(this.paths.socket, 500))) {
          try {
            const v = await client.version(1000);
            this.log.info({ pid: this.child?.pid, version: v.version, socket: this.paths.socket }, 'containerd ready');
            return;
          } catch {
            // plugins still loading
          }
        }
        await sleep(50);
      }
    } finally {
      client.close();
    }
    const tail = (await fsp.readFile(this.paths.logFile, 'utf8').catch(() => '')).slice(-2000);
    throw unavailable(`containerd (${this.binary}) did not answer on ${this.paths.socket} within ${this.readyTimeoutMs} ms: ${tail}`);
  }

  private onExit(child: ReturnType<typeof spawnChild>, code: number | undefined, signal: string | undefined, ranMs: number): void {
    if (this.child !== child || this.stopping) return;
    if (ranMs > 60_000) this.restarts = 0;
    const delay = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** Math.min(this.restarts, 16));
    this.restarts++;
    this.log.warn({ code, signal, restartInMs: delay }, 'containerd exited; restarting');
    void sleep(delay).then(async () => {
      if (this.stopping) return;
      try {
        await this.launch();
      } catch (err) {
        this.log.error({ err }, 'containerd restart failed');
      }
    });
  }

  /** Stops containerd (SIGTERM, SIGKILL after the grace period); its shims and their tasks keep running. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    const child = this.child;
    this.child = undefined;
    if (child?.pid !== undefined && child.exitCode === null) {
      await this.signalAndWait(child.pid, graceMs);
      await Promise.race([child.then(() => undefined, () => undefined), sleep(2000)]);
    }
    await fsp.rm(this.paths.pidFile, { force: true });
  }
}
