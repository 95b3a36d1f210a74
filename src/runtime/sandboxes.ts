// Pod sandboxes: namespaces held by an infra (pause) process run by the handler's backend, network by CNI,
// pod files (hostname, hosts, resolv.conf, /dev/shm). Every step is undone on failure.
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { RuntimeContext } from './context.js';
import type { SandboxRecord } from './records.js';
import { nowNs } from './records.js';
import { failedPrecondition, hasCode, internal, invalidArgument, notFound, errorMessage, isKind } from '../common/errors.js';
import { ensureDir, firstMissingDir, removeEmptyDirsUpTo } from '../common/fsutil.js';
import { PRIVATE_DIR, PRIVATE_FILE } from './record-store.js';
import { checkSandboxConfig, sysctlFault } from './validation.js';
import { logger } from '../common/log.js';
import { crashPoint } from '../common/crash-point.js';
import { undoSteps } from './undo-steps.js';
import { mountOverlay, mountTmpfs, overlayMountSpec, unmountIfMounted } from './mounts.js';
import type { OciMount } from '../oci/types.js';
import { reportUnsupportedSecurity } from './host-security.js';
import { readLocalhostSeccompProfile } from './seccomp-profile.js';
import { createNetns, removeNetns, netnsNameForSandbox, netnsPathForName } from '../network/netns.js';
import { buildResolvConf } from '../network/dns.js';
import { buildHostsFile } from '../network/hosts.js';
import { buildSandboxSpec } from '../oci/sandbox-spec.js';
import { ensurePauseRootfs, PAUSE_PATH } from './pause/pause.js';
import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { PodSandboxFilter__Output } from '../cri/generated/runtime/v1/PodSandboxFilter.js';

const SHM_SIZE = 64 * 1024 * 1024;

export interface RunSandboxResult {
  id: string;
}

export class PodSandboxes {
  private pauseRootfs?: Promise<string>;

  constructor(
    private readonly ctx: RuntimeContext,
    /** Stops and removes containers; set by the runtime once both halves exist. */
    private readonly containers: { stopAllOf(sandboxId: string): Promise<void>; removeAllOf(sandboxId: string): Promise<void> },
  ) {}

  private pause(): Promise<string> {
    const pending = this.pauseRootfs ?? ensurePauseRootfs(path.join(this.ctx.config.root, 'pause'));
    this.pauseRootfs = pending;
    pending.catch(() => (this.pauseRootfs = undefined));
    return pending;
  }

  async run(config: PodSandboxConfig__Output | null, runtimeHandler: string): Promise<string> {
    if (!config) throw invalidArgument('config is required');
    checkSandboxConfig(config, this.ctx.hostLimits);
    const md = config.metadata!;
    const handler = this.ctx.handlerName(runtimeHandler);
    const reservedName = `${md.name}_${md.namespace}_${md.uid}_${md.attempt}`;
    const id = randomBytes(32).toString('hex');
    const ns = config.linux?.security_context?.namespace_options;
    const hostNetwork = ns?.network === 'NODE';
    const hostIpc = ns?.ipc === 'NODE';
    const log = logger({ sandbox: id.slice(0, 12), pod: `${md.namespace}/${md.name}` });
    const runDir = path.join(this.ctx.runDir, 'sandboxes', id);
    const rec: SandboxRecord = {
      id,
      phase: 'creating',
      state: 'SANDBOX_NOTREADY',
      reservedName,
      createdAt: nowNs(),
      config,
      runtimeHandler: handler,
      hostNetwork,
      // Everything set-up will create is named here, before the first write, so that recovery can
      // undo a set-up cut short at any point (each undo step tolerates "never happened").
      netnsPath: hostNetwork ? undefined : netnsPathForName(netnsNameForSandbox(id)),
      ips: [],
      networkAttached: !hostNetwork,
      shmPath: hostIpc ? '/dev/shm' : path.join(runDir, 'shm'),
      shmMounted: !hostIpc,
    };
    reportUnsupportedSecurity(log, 'sandbox', config.linux?.security_context, this.ctx.appArmor);
    // Synchronously, before the first await: a concurrent request with the same name loses here.
    this.ctx.sandboxNames.reserve(reservedName, id, 'sandbox');
    return this.ctx.locks.run(id, async () => {
      try {
        // The record exists from the first step so that a crash mid-way is found and undone by recovery,
        // naming the log directory set-up will make (the next write of the record is after set-up).
        if (config.log_directory) rec.createdLogDirectory = await firstMissingDir(config.log_directory);
        await this.ctx.sandboxes.put(rec);
        crashPoint('sandbox.run.record-written');
        await this.setUp(rec, runDir);
        crashPoint('sandbox.run.before-ready');
        rec.phase = 'ready';
        rec.state = 'SANDBOX_READY';
        await this.ctx.sandboxes.put(rec);
        this.ctx.emit('CONTAINER_CREATED_EVENT', id, id);
        this.ctx.emit('CONTAINER_STARTED_EVENT', id, id);
        log.info({ ips: rec.ips, handler }, 'sandbox ready');
        return id;
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'sandbox set-up failed; undoing');
        await this.destroy(rec, { force: true }).catch((e) => log.error({ err: errorMessage(e) }, 'undo failed'));
        this.ctx.sandboxNames.release(reservedName, id);
        throw err;
      }
    });
  }

  private async setUp(rec: SandboxRecord, runDir: string): Promise<void> {
    await ensureDir(path.dirname(runDir), PRIVATE_DIR);
    await ensureDir(runDir, PRIVATE_DIR);
    if (rec.netnsPath) await createNetns(netnsNameForSandbox(rec.id));
    crashPoint('sandbox.run.netns-created');
    // Once the netns exists, the CNI calls and the infra container's creation don't depend on each
    // other: run them at the same time (the pod's start latency is their max, not their sum).
    const results = await Promise.allSettled([this.attachNetwork(rec), this.createInfra(rec, runDir)]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    crashPoint('sandbox.run.infra-created');
    rec.ips = (results[0] as PromiseFulfilledResult<string[]>).value;
    const hostname = this.hostnameOf(rec);
    // Derived from the record, so a plain write is enough (recovery never reads them).
    await fsp.writeFile(
      path.join(this.ctx.sandboxes.pathOf(rec.id), 'hosts'),
      rec.hostNetwork ? readHostFile('/etc/hosts') : buildHostsFile(hostname, rec.ips),
    );
    await this.ctx.backend(rec.runtimeHandler).start(rec.id);
  }

  private hostnameOf(rec: SandboxRecord): string {
    return rec.hostNetwork ? readHostname() : rec.config.hostname || rec.config.metadata!.name;
  }

  private async attachNetwork(rec: SandboxRecord): Promise<string[]> {
    if (!rec.netnsPath) return [];
    const md = rec.config.metadata!;
    const result = await this.ctx.network.setUp(rec.id, rec.netnsPath, {
      podName: md.name,
      podNamespace: md.namespace,
      podUid: md.uid,
      portMappings: rec.config.port_mappings.map((p) => ({
        hostPort: p.host_port,
        containerPort: p.container_port,
        protocol: p.protocol === 'UDP' ? 'udp' : p.protocol === 'SCTP' ? 'sctp' : 'tcp',
        hostIp: p.host_ip || undefined,
      })),
    });
    crashPoint('sandbox.run.cni-added');
    return result.ips;
  }

  /**
   * The infra container's root: the built-in pause rootfs (no registry needed), or, when
   * --sandbox-image is set, an overlay of that image (pulled on first use) and its entrypoint.
   */
  private async infraRootfs(runDir: string, asMounts: boolean): Promise<{ rootfs: string; command: string; mounts?: OciMount[] }> {
    const ref = this.ctx.config.runtime.sandboxImage;
    if (!ref) {
      const rootfs = await this.pause();
      // Shared by every pod: handed over read-only.
      return { rootfs, command: PAUSE_PATH, ...(asMounts ? { mounts: [{ destination: '/', type: 'bind', source: rootfs, options: ['rbind', 'ro'] }] } : {}) };
    }
    const image = await this.ctx.images.resolveImage(ref).catch(async (err) => {
      if (!isKind(err, 'NotFound')) throw err;
      await this.ctx.images.pull(ref);
      return this.ctx.images.resolveImage(ref);
    });
    const cfg = (image.record.config?.config ?? {}) as { Entrypoint?: string[]; Cmd?: string[] };
    const command = [...(cfg.Entrypoint ?? []), ...(cfg.Cmd ?? [])][0];
    if (!command) throw invalidArgument(`sandbox image ${ref} has no entrypoint or command`);
    const rootfs = path.join(runDir, 'rootfs');
    const [upper, work] = [path.join(runDir, 'upper'), path.join(runDir, 'work')];
    // A backend that mounts the rootfs itself gets the overlay as a mount spec (overlay refuses a second mount on one upper dir).
    if (asMounts) {
      for (const dir of [upper, work, rootfs]) await ensureDir(dir);
      return { rootfs, command, mounts: [overlayMountSpec(image.layerDirs, upper, work)] };
    }
    await mountOverlay(image.layerDirs, upper, work, rootfs);
    return { rootfs, command };
  }

  /** Pod files, /dev/shm and the infra (pause) container, created but not started. */
  private async createInfra(rec: SandboxRecord, runDir: string): Promise<void> {
    const { config } = rec;
    const dir = this.ctx.sandboxes.pathOf(rec.id);
    if (rec.shmMounted) await mountTmpfs(rec.shmPath, SHM_SIZE);
    await fsp.writeFile(path.join(dir, 'hostname'), this.hostnameOf(rec) + '\n');
    await fsp.writeFile(path.join(dir, 'resolv.conf'), buildResolvConf(config.dns_config ?? undefined, readHostFile('/etc/resolv.conf')));
    if (config.log_directory) {
      rec.createdLogDirectory = await fsp.mkdir(config.log_directory, { recursive: true, mode: 0o755 }).catch((err) => {
        if (hasCode(err, 'EEXIST') || hasCode(err, 'ENOTDIR')) throw invalidArgument(`config.log_directory ${config.log_directory} is not a directory`);
        throw err;
      });
    }
    const backend = this.ctx.backend(rec.runtimeHandler);
    const infra = await this.infraRootfs(runDir, Boolean((await backend.features()).mountsRootfs));
    const spec = buildSandboxSpec({
      sandboxId: rec.id,
      config,
      rootfsPath: infra.rootfs,
      pausePath: infra.command,
      netnsPath: rec.netnsPath,
      shmPath: rec.shmPath,
      restrictOomScoreAdj: this.ctx.restrictOomScoreAdj,
      cgroupV2: this.ctx.cgroupV2,
      seccompLocalhostProfile: await readLocalhostSeccompProfile(config.linux?.security_context, 'linux.security_context'),
      availableCapabilities: this.ctx.availableCapabilities,
      rlimits: this.ctx.rlimits,
    });
    const { pid } = await backend
      .create({
        id: rec.id,
        spec,
        ...(infra.mounts ? { rootfsMounts: infra.mounts } : {}),
        logPath: path.join(runDir, 'infra.log'),
        tty: false,
        stdin: false,
        stdinOnce: false,
      })
      .catch((err) => {
        throw sysctlFault(err, config.linux?.sysctls, 'config.linux.sysctls') ?? err;
      });
    rec.infraPid = pid;
  }

  /** Stops containers and the infra process and tears the network down; safe to repeat. */
  async stop(id: string): Promise<void> {
    if (!id) throw invalidArgument('pod_sandbox_id is required');
    const found = this.ctx.sandboxes.get(id);
    if (!found) return; // CRI: stopping an unknown sandbox succeeds
    await this.containers.stopAllOf(found.id);
    crashPoint('sandbox.stop.containers-stopped');
    await this.ctx.locks.run(found.id, async () => {
      const rec = this.ctx.sandboxes.get(found.id);
      if (!rec) return;
      const backend = this.ctx.backend(rec.runtimeHandler);
      await backend.stop(rec.id, 0, 'SIGKILL').catch((err) => {
        if (!isKind(err, 'NotFound')) throw err; // the runtime lost it (reboot): nothing to stop
      });
      await this.releaseNetwork(rec);
      if (rec.shmMounted) {
        await unmountIfMounted(rec.shmPath);
        rec.shmMounted = false;
      }
      const wasReady = rec.state === 'SANDBOX_READY';
      if (wasReady || !rec.stoppedAt) {
        rec.state = 'SANDBOX_NOTREADY';
        rec.stoppedAt = nowNs();
      }
      await this.ctx.sandboxes.put(rec);
      if (wasReady) this.ctx.emit('CONTAINER_STOPPED_EVENT', rec.id, rec.id);
    });
  }

  async remove(id: string): Promise<void> {
    if (!id) throw invalidArgument('pod_sandbox_id is required');
    const found = this.ctx.sandboxes.get(id);
    if (!found) return;
    // A CreateContainer racing with us records its container under this pod's lock: once we hold the
    // lock and see no container, none can appear. The lock is never held while waiting for a container's.
    for (let round = 0; ; round++) {
      await this.containers.removeAllOf(found.id);
      const done = await this.ctx.locks.run(found.id, async () => {
        if (this.ctx.containersOf(found.id).length > 0) return false;
        const rec = this.ctx.sandboxes.get(found.id);
        // A record still "creating" once its lock is free is a leftover of a creation that never finished: undo it all.
        if (rec) await this.destroy(rec, { force: rec.phase === 'creating' });
        return true;
      });
      if (done) return;
      if (round >= 10) throw failedPrecondition(`pod sandbox ${found.id} keeps getting new containers; stop it first`);
    }
  }

  /**
   * Undoes everything a sandbox holds, in reverse order of set-up; each step tolerates "already gone",
   * and a failed step is logged while the others still run. The record goes once every step worked,
   * or anyway with `force` (an interrupted creation: nothing may stay behind a hidden record).
   */
  async destroy(rec: SandboxRecord, opts: { force?: boolean } = {}): Promise<void> {
    const log = logger({ sandbox: rec.id.slice(0, 12) });
    const { step, failed } = undoSteps('sandbox', log);
    const backend = this.ctx.backends.get(rec.runtimeHandler);
    await step('stop infra', async () => backend && (await backend.stop(rec.id, 0, 'SIGKILL').catch(() => undefined)));
    await step('delete infra', async () => backend?.delete(rec.id));
    let networkReleased = true;
    await step('network teardown', async () => {
      if (!rec.networkAttached) return;
      networkReleased = false;
      await this.ctx.network.tearDown(rec.id, rec.netnsPath);
      rec.networkAttached = false;
      networkReleased = true;
    });
    // CNI DEL needs the netns to find what to clean: kept for a retry, unless this is the last try.
    if (networkReleased || opts.force) {
      await step('network namespace', async () => {
        if (!rec.netnsPath) return;
        await removeNetns(rec.netnsPath);
        rec.netnsPath = undefined;
      });
    }
    await step('shm', async () => {
      if (rec.shmPath !== '/dev/shm') await unmountIfMounted(rec.shmPath);
      rec.shmMounted = false;
    });
    const runDir = path.join(this.ctx.runDir, 'sandboxes', rec.id);
    await step('sandbox image rootfs', () => unmountIfMounted(path.join(runDir, 'rootfs')));
    await step('run directory', () => fsp.rm(runDir, { recursive: true, force: true }));
    const createdLogDirectory = rec.createdLogDirectory;
    if (rec.phase === 'creating' && createdLogDirectory) {
      await step('log directory', () => removeEmptyDirsUpTo(rec.config.log_directory, createdLogDirectory));
    }
    if (failed.length > 0 && !opts.force) {
      await this.ctx.sandboxes.put(rec).catch(() => undefined);
      throw internal(`pod sandbox ${rec.id} not fully removed (${failed.join('; ')}); try again`);
    }
    if (rec.phase === 'ready') this.ctx.emit('CONTAINER_DELETED_EVENT', rec.id, rec.id);
    crashPoint('sandbox.undo.record');
    await this.ctx.sandboxes.delete(rec.id);
    this.ctx.sandboxNames.release(rec.reservedName, rec.id);
  }

  /** CNI DEL, then the netns (DEL needs the netns to find what to clean). Repeating it is harmless. */
  private async releaseNetwork(rec: SandboxRecord): Promise<void> {
    if (rec.networkAttached) {
      await this.ctx.network.tearDown(rec.id, rec.netnsPath);
      rec.networkAttached = false;
      crashPoint('sandbox.stop.cni-deleted');
    }
    if (rec.netnsPath) {
      await removeNetns(rec.netnsPath);
      rec.netnsPath = undefined;
    }
  }

  get(id: string): SandboxRecord {
    if (!id) throw invalidArgument('pod_sandbox_id is required');
    const rec = this.ctx.sandboxes.get(id);
    if (!rec || rec.phase !== 'ready') throw notFound(`pod sandbox ${id} not found`);
    return rec;
  }

  /** Refreshes READY → NOTREADY when the infra process died behind our back. */
  async refresh(rec: SandboxRecord): Promise<SandboxRecord> {
    if (rec.state !== 'SANDBOX_READY') return rec;
    const backend = this.ctx.backend(rec.runtimeHandler);
    // Also an end the backend had to infer (its monitor killed with the infra process): it is not ready either.
    const exit = await backend.exitOf(rec.id);
    if (exit) {
      await this.ctx.locks.run(rec.id, async () => {
        const cur = this.ctx.sandboxes.get(rec.id);
        if (cur && cur.state === 'SANDBOX_READY') {
          cur.state = 'SANDBOX_NOTREADY';
          cur.stoppedAt = nowNs();
          await this.ctx.sandboxes.put(cur);
          this.ctx.emit('CONTAINER_STOPPED_EVENT', cur.id, cur.id);
        }
      });
    }
    return this.ctx.sandboxes.get(rec.id) ?? rec;
  }

  async list(filter: PodSandboxFilter__Output | null | undefined): Promise<SandboxRecord[]> {
    const out: SandboxRecord[] = [];
    for (const r of this.ctx.sandboxes.list()) {
      if (r.phase !== 'ready') continue;
      if (filter?.id && !r.id.startsWith(filter.id)) continue;
      const rec = r; // kept fresh by the exit monitor
      if (filter?.state && rec.state !== filter.state.state) continue;
      if (filter?.label_selector && !matchLabels(rec.config.labels, filter.label_selector)) continue;
      out.push(rec);
    }
    return out;
  }

  /** After a restart: finish or undo half-done work, notice infra processes that died meanwhile. */
  async recover(): Promise<void> {
    for (const rec of this.ctx.sandboxes.list()) {
      const log = logger({ sandbox: rec.id.slice(0, 12) });
      if (rec.phase === 'creating') {
        log.warn('undoing a sandbox whose creation was interrupted');
        await this.destroy(rec, { force: true }).catch((err) => log.error({ err: errorMessage(err) }, 'undo failed'));
        continue;
      }
      await this.refresh(rec);
    }
  }
}

export function matchLabels(labels: Record<string, string> | undefined, selector: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels?.[k] !== v) return false;
  return true;
}

function readHostFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function readHostname(): string {
  return readHostFile('/etc/hostname').trim() || 'localhost';
}
