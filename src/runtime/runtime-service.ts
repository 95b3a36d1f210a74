// The RuntimeService domain: sandboxes and containers together, readiness, recovery.
import { promises as fsp, existsSync } from 'node:fs';
import { RuntimeContext, type RuntimeContextOptions } from './context.js';
import { PodSandboxes } from './sandboxes.js';
import { Containers } from './containers.js';
import { logger } from '../common/log.js';
import { errorMessage, hasCode } from '../common/errors.js';
import { PRIVATE_DIR, PRIVATE_FILE } from './record-store.js';
import { ensureDir } from '../common/fsutil.js';
import { ExitMonitor } from './exit-monitor.js';
import type { NameRegistrar } from './name-registrar.js';
import path from 'node:path';

/**
 * Run-root sandbox directories and bundles hold pod specs (env values included): root only, also when
 * an older version wrote them 0755/0644. Nothing below a bundle or a sandbox's top level is touched.
 */
async function restrictRunState(sandboxRunDir: string, containerBundles: string[]): Promise<void> {
  const bundles = [...containerBundles];
  try {
    await fsp.chmod(sandboxRunDir, PRIVATE_DIR);
    for (const id of await fsp.readdir(sandboxRunDir)) {
      await fsp.chmod(path.join(sandboxRunDir, id), PRIVATE_DIR).catch(() => undefined);
      bundles.push(path.join(sandboxRunDir, id, 'bundle'));
    }
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) logger().warn({ err: errorMessage(err) }, 'cannot restrict the run state directory');
  }
  for (const bundle of bundles) {
    await fsp.chmod(bundle, PRIVATE_DIR).catch(() => undefined);
    await fsp.chmod(path.join(bundle, 'config.json'), PRIVATE_FILE).catch(() => undefined);
  }
}

async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith('.') && name.endsWith('.tmp')) await fsp.rm(path.join(dir, name), { force: true });
  }
}

export interface RuntimeCondition {
  type: 'RuntimeReady' | 'NetworkReady';
  status: boolean;
  reason: string;
  message: string;
}

export class RuntimeService {
  readonly ctx: RuntimeContext;
  readonly sandboxes: PodSandboxes;
  readonly containers: Containers;
  private monitor?: ExitMonitor;

  constructor(opts: RuntimeContextOptions) {
    this.ctx = new RuntimeContext(opts);
    this.containers = new Containers(this.ctx);
    this.sandboxes = new PodSandboxes(this.ctx, this.containers);
  }

  async start(): Promise<void> {
    await this.ctx.checkHandlers();
    await ensureDir(this.ctx.runDir);
    await this.ctx.sandboxes.load();
    await this.ctx.containers.load();
    // Temp files of atomic writes cut short by a kill: CNI attachments and monitor records.
    await removeStaleTempFiles(path.join(this.ctx.config.root, 'cni-cache'));
    for (const backend of this.ctx.backends.values()) await backend.cleanStale();
    await restrictRunState(path.join(this.ctx.runDir, 'sandboxes'), [...this.ctx.containers.list().map((c) => path.join(this.ctx.containers.pathOf(c.id), 'bundle'))]);
    // Duplicates made by older versions (the race this registrar closes) keep running; the first holds the name.
    const reserve = (names: NameRegistrar, name: string, id: string, what: string) => {
      try {
        names.reserve(name, id, what);
      } catch (err) {
        logger().warn({ id, err: errorMessage(err) }, 'a second record with the same name');
      }
    };
    for (const s of this.ctx.sandboxes.list()) reserve(this.ctx.sandboxNames, s.reservedName, s.id, 'sandbox');
    for (const c of this.ctx.containers.list()) reserve(this.ctx.containerNames, c.reservedName, c.id, 'container');
    // Recovery records what happened while we were down before we serve (lists are right from the first
    // answer); its events wait until subscribers can have connected.
    this.ctx.holdEvents();
    await this.containers.recover();
    await this.sandboxes.recover();
    logger().info({ sandboxes: this.ctx.sandboxes.list().length, containers: this.ctx.containers.list().length }, 'runtime state recovered');
  }

  /** Starts following exits; call once the daemon serves, so subscribers can see exits found at start. */
  async startMonitoring(): Promise<void> {
    // A moment after serving starts, as the exit monitor's first sweep: a subscriber connecting at once sees them.
    setTimeout(() => this.ctx.releaseEvents(), 1000).unref();
    this.monitor = new ExitMonitor({
      backends: [...this.ctx.backends.values()],
      runningIds: () => [
        ...this.ctx.containers.list().filter((c) => c.state === 'CONTAINER_RUNNING').map((c) => c.id),
        ...this.ctx.sandboxes.list().filter((s) => s.state === 'SANDBOX_READY').map((s) => s.id),
      ],
      onMaybeExited: async (id) => {
        const c = this.ctx.containers.get(id);
        if (c?.id === id && c.phase === 'ready') {
          await this.containers.refresh(c);
          return;
        }
        const s = this.ctx.sandboxes.get(id);
        if (s?.id === id && s.phase === 'ready') await this.sandboxes.refresh(s);
      },
    });
    await this.monitor.start();
  }

  /** Monitor processes (the backend's per-container parent) alive for our sandboxes and containers (metrics). */
  async liveMonitors(): Promise<number> {
    let n = 0;
    for (const { id, runtimeHandler } of [...this.ctx.containers.list(), ...this.ctx.sandboxes.list()]) {
      const backend = this.ctx.backends.get(runtimeHandler);
      const pid = backend ? await backend.monitorPid(id).catch(() => undefined) : undefined;
      if (pid && existsSync(`/proc/${pid}`)) n++;
    }
    return n;
  }

  stopMonitoring(): void {
    this.monitor?.stop();
  }

  async conditions(): Promise<RuntimeCondition[]> {
    const runtime = await this.runtimeReady();
    const net = await this.ctx.network.status();
    return [
      runtime,
      { type: 'NetworkReady', status: net.ready, reason: net.ready ? '' : net.reason ?? 'NetworkPluginNotReady', message: net.ready ? '' : net.message ?? '' },
    ];
  }

  private runtimeChecked?: RuntimeCondition;
  private async runtimeReady(): Promise<RuntimeCondition> {
    if (this.runtimeChecked?.status) return this.runtimeChecked;
    const backend = this.ctx.backends.get(this.ctx.config.runtime.defaultHandler);
    const problems = backend ? await backend.readiness() : [`default runtime handler ${this.ctx.config.runtime.defaultHandler} has no backend`];
    if (!existsSync('/proc/filesystems') || !(await fsp.readFile('/proc/filesystems', 'utf8')).includes('overlay')) {
      problems.push('the kernel has no overlay filesystem');
    }
    this.runtimeChecked = problems.length
      ? { type: 'RuntimeReady', status: false, reason: 'RuntimeNotReady', message: problems.join('; ') }
      : { type: 'RuntimeReady', status: true, reason: '', message: '' };
    return this.runtimeChecked;
  }
}
