// Containers: overlay root filesystem over the image layers, an OCI spec from the pure builder,
// run by the handler's RuntimeBackend; state kept in durable records.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { constants as osConstants } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { RuntimeContext } from './context.js';
import type { ContainerExit } from './backend.js';
import type { ContainerRecord, SandboxRecord } from './records.js';
import type { ImageRecord } from '../image/image-store.js';
import { nowNs, dateToNs, imageIdsUsedBy } from './records.js';
import { NodeletError, failedPrecondition, hasCode, internal, invalidArgument, notFound, errorMessage, isKind } from '../common/errors.js';
import { ensureDir, firstMissingDir, pathExists, removeEmptyDirsUpTo } from '../common/fsutil.js';
import { PRIVATE_DIR, PRIVATE_FILE } from './record-store.js';
import { checkCommand, checkContainerConfig, checkResources, sysctlFault } from './validation.js';
import { logger } from '../common/log.js';
import { crashPoint } from '../common/crash-point.js';
import { undoSteps } from './undo-steps.js';
import { isMountPoint, mountOverlay, overlayMountSpec, unmountIfMounted } from './mounts.js';
import { reportUnsupportedSecurity } from './host-security.js';
import { readLocalhostSeccompProfile } from './seccomp-profile.js';
import { imageVolumeRequests, isImageVolume, mountImageLayers, mountsWithImageSources, resolveInRoot, type ImageVolume } from './image-volumes.js';
import { matchLabels } from './sandboxes.js';
import { NEEDS_MOUNT, readLayeredFile, readRootfsFile } from './rootfs-files.js';
import { buildContainerSpec, resourcesFor, type HostDevice } from '../oci/container-spec.js';
import type { OciMount, OciSpec } from '../oci/types.js';
import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { ContainerFilter__Output } from '../cri/generated/runtime/v1/ContainerFilter.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

export class Containers {
  /** Per container, how to cut short each stop still waiting on its grace period. */
  private readonly stopping = new Map<string, Set<() => void>>();

  constructor(private readonly ctx: RuntimeContext) {}

  /** The request's sandbox_config is not needed: the stored sandbox config is authoritative. */
  async create(sandboxId: string, config: ContainerConfig__Output | null): Promise<string> {
    if (!sandboxId) throw invalidArgument('pod_sandbox_id is required');
    if (!config) throw invalidArgument('config is required');
    checkContainerConfig(config, this.ctx.hostLimits);
    const sandbox = this.ctx.sandboxes.get(sandboxId);
    if (!sandbox || sandbox.phase !== 'ready') throw notFound(`pod sandbox ${sandboxId} not found`);
    if (sandbox.state !== 'SANDBOX_READY') throw failedPrecondition(`pod sandbox ${sandbox.id} is not ready`);
    const smd = sandbox.config.metadata!;
    const reservedName = `${config.metadata!.name}_${smd.name}_${smd.namespace}_${smd.uid}_${config.metadata!.attempt}`;
    const id = randomBytes(32).toString('hex');
    // Synchronously, before the first await: a concurrent request with the same name loses here.
    this.ctx.containerNames.reserve(reservedName, id, 'container');
    try {
      return await this.createReserved(id, reservedName, sandbox, config);
    } catch (err) {
      // A creation that was undone (or never started) gives its name back; a kept record keeps it.
      if (this.ctx.containers.get(id)?.id !== id) this.ctx.containerNames.release(reservedName, id);
      throw err;
    }
  }

  private async createReserved(id: string, reservedName: string, sandbox: SandboxRecord, config: ContainerConfig__Output): Promise<string> {
    const image = await this.ctx.images.resolveImage(config.image!.image);
    if (!image) throw notFound(`image ${config.image!.image} not found`);
    const volumeRequests = imageVolumeRequests(config.mounts);

    const dir = this.ctx.containers.pathOf(id);
    // Resolved before the record is written: from then on the record keeps these images in use.
    const imageVolumes: ImageVolume[] = volumeRequests.map((req) => {
      const found = this.ctx.images.lookup(req.image);
      if (!found) throw notFound(`mounts[${req.index}].image: image ${req.image} not found (an image volume's image must be pulled first)`);
      return { ...req, imageId: found.id, mountPoint: path.join(dir, 'image-volumes', String(req.index)) };
    });
    // log_path was checked to stay inside log_directory (relative, no "..").
    const logPath = config.log_path && sandbox.config.log_directory ? path.join(sandbox.config.log_directory, config.log_path) : path.join(dir, 'container.log');
    const imageConfig = (image.record.config?.config ?? {}) as { StopSignal?: string };
    const rec: ContainerRecord = {
      id,
      phase: 'creating',
      state: 'CONTAINER_CREATED',
      sandboxId: sandbox.id,
      reservedName,
      config,
      runtimeHandler: sandbox.runtimeHandler,
      imageName: config.image!.image,
      imageId: image.record.id,
      imageRef: image.record.repoDigests[0] ?? image.record.id,
      logPath,
      rootfs: path.join(dir, 'rootfs'),
      rootfsMounted: false,
      stopSignal: runtimeSignalName(config.stop_signal && config.stop_signal !== 'RUNTIME_DEFAULT' ? config.stop_signal : imageStopSignal(imageConfig.StopSignal)),
      createdAt: nowNs(),
      resources: config.linux?.resources ?? null,
      imageVolumes,
    };
    const log = logger({ container: id.slice(0, 12), name: config.metadata!.name });
    reportUnsupportedSecurity(log, 'container', config.linux?.security_context, this.ctx.appArmor);
    if (!this.ctx.hugetlbController && config.linux?.resources?.hugepage_limits.length) {
      log.debug({ hugepageLimits: config.linux.resources.hugepage_limits }, 'no hugetlb cgroup controller on this host; hugepage limits not applied');
    }
    return this.ctx.locks.run(id, async () => {
      try {
        rec.logFileIsNew = !(await pathExists(logPath));
        // Recorded before it is made: recovery of a creation cut short must remove what set-up makes.
        rec.createdLogDirectory = await firstMissingDir(path.dirname(logPath));
        // Under the pod's lock: RemovePodSandbox either sees this record (and removes the container once
        // this creation is over) or has removed the pod already, which is refused here. No orphans.
        await this.ctx.locks.run(sandbox.id, async () => {
          const pod = this.ctx.sandboxes.get(sandbox.id);
          if (pod?.id !== sandbox.id || pod.phase !== 'ready' || pod.state !== 'SANDBOX_READY') {
            throw failedPrecondition(`pod sandbox ${sandbox.id} was stopped or removed while container ${id} was being created`);
          }
          await this.ctx.containers.put(rec, { provisional: true });
        });
        crashPoint('container.create.record-written');
        await this.setUp(rec, sandbox, image.layerDirs, image.record);
        crashPoint('container.create.before-ready');
        rec.phase = 'ready';
        await this.ctx.containers.put(rec);
        this.ctx.emit('CONTAINER_CREATED_EVENT', id, sandbox.id);
        log.info({ sandbox: sandbox.id.slice(0, 12) }, 'container created');
        return id;
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'container set-up failed; undoing');
        await this.destroy(rec, { force: true }).catch((e) => log.error({ err: errorMessage(e) }, 'undo failed'));
        throw err;
      }
    });
  }

  private async setUp(rec: ContainerRecord, sandbox: SandboxRecord, layerDirs: string[], image: ImageRecord): Promise<void> {
    const imageFile = image.config as any;
    const dir = this.ctx.containers.pathOf(rec.id);
    for (const m of rec.config.mounts) {
      if (isImageVolume(m)) continue;
      if (!m.host_path) throw invalidArgument(`config.mounts: host_path is required (container_path ${m.container_path})`);
      try {
        await fsp.stat(m.host_path);
      } catch {
        throw invalidArgument(`config.mounts: host_path ${m.host_path} does not exist`);
      }
    }
    for (const v of rec.imageVolumes ?? []) {
      const volumeImage = await this.ctx.images.resolveImage(v.imageId);
      await mountImageLayers(volumeImage.layerDirs, v.mountPoint, path.join(dir, 'image-volumes', 'empty'));
      v.source = v.subPath ? await resolveInRoot(v.mountPoint, v.subPath, `mounts[${v.index}].image_sub_path`, `image ${v.image}`) : v.mountPoint;
    }
    rec.createdLogDirectory = await fsp.mkdir(path.dirname(rec.logPath), { recursive: true, mode: 0o755 }).catch((err) => {
      if (hasCode(err, 'EEXIST') || hasCode(err, 'ENOTDIR')) throw invalidArgument(`config.log_path ${rec.config.log_path}: a part of its directory is not a directory`);
      throw err;
    });
    // The backend appends to whatever is there: never through a symbolic link, never to a device or directory.
    const existing = await fsp.lstat(rec.logPath).catch(() => undefined);
    if (existing && !existing.isFile()) throw invalidArgument(`config.log_path ${rec.config.log_path || 'container.log'} exists and is not a regular file`);
    const sdir = this.ctx.sandboxes.pathOf(sandbox.id);
    const hostDevices: Record<string, HostDevice> = {};
    for (const d of rec.config.devices) {
      const st = await fsp.stat(d.host_path).catch(() => {
        throw invalidArgument(`devices: host_path ${d.host_path} does not exist`);
      });
      if (!st.isCharacterDevice() && !st.isBlockDevice()) throw invalidArgument(`devices: ${d.host_path} is not a device`);
      hostDevices[d.host_path] = {
        type: st.isCharacterDevice() ? 'c' : 'b',
        major: Math.floor(st.rdev / 256) & 0xfff,
        minor: (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00),
        fileMode: st.mode & 0o777,
        uid: st.uid,
        gid: st.gid,
      };
    }
    const backend = this.ctx.backend(rec.runtimeHandler);
    const features = await backend.features();
    // Regular files only, size-capped: the image controls these paths. Read from the layers when they
    // alone can tell (no mount child: the rootfs is mounted at StartContainer), else from the mounted rootfs.
    const layers = await this.ctx.images.layerTrees(image);
    let passwd = await readLayeredFile(layers, '/etc/passwd');
    let group = passwd === NEEDS_MOUNT ? NEEDS_MOUNT : await readLayeredFile(layers, '/etc/group');
    if (passwd === NEEDS_MOUNT || group === NEEDS_MOUNT) {
      await mountOverlay(layerDirs, path.join(dir, 'upper'), path.join(dir, 'work'), rec.rootfs);
      rec.rootfsMounted = true;
      crashPoint('container.create.rootfs-mounted');
      passwd = await readRootfsFile(rec.rootfs, '/etc/passwd');
      group = await readRootfsFile(rec.rootfs, '/etc/group');
      // A backend that mounts the rootfs itself gets the overlay as a mount spec at start, so ours must go first.
      if (features.mountsRootfs) {
        await unmountIfMounted(rec.rootfs);
        rec.rootfsMounted = false;
      }
    }
    const seccompLocalhostProfile = await readLocalhostSeccompProfile(rec.config.linux?.security_context, 'linux.security_context');
    const infraPid = sandbox.infraPid;
    const targetId = rec.config.linux?.security_context?.namespace_options?.target_id;
    let targetPid: number | undefined;
    if (rec.config.linux?.security_context?.namespace_options?.pid === 'TARGET') {
      const target = targetId ? this.ctx.containers.get(targetId) : undefined;
      if (!target || target.state !== 'CONTAINER_RUNNING' || !target.pid) throw notFound(`namespace_options.target_id ${targetId}: no running container`);
      targetPid = target.pid;
    }
    const spec = buildContainerSpec({
      containerId: rec.id,
      sandboxId: sandbox.id,
      config: rec.imageVolumes?.length ? { ...rec.config, mounts: mountsWithImageSources(rec.config.mounts, rec.imageVolumes) } : rec.config,
      sandboxConfig: sandbox.config,
      image: imageFile?.config ?? {},
      imageName: rec.imageName,
      rootfsPath: rec.rootfs,
      passwd: passwd ?? '',
      group: group ?? '',
      sandboxPaths: {
        hostname: path.join(sdir, 'hostname'),
        hosts: path.join(sdir, 'hosts'),
        resolvConf: path.join(sdir, 'resolv.conf'),
        shm: sandbox.shmPath,
      },
      namespacePaths: {
        network: sandbox.hostNetwork ? undefined : sandbox.netnsPath,
        ipc: infraPid ? `/proc/${infraPid}/ns/ipc` : undefined,
        uts: infraPid && !sandbox.hostNetwork ? `/proc/${infraPid}/ns/uts` : undefined,
        pid: targetPid ? `/proc/${targetPid}/ns/pid` : infraPid ? `/proc/${infraPid}/ns/pid` : undefined,
      },
      cgroupParent: sandbox.config.linux?.cgroup_parent ?? '',
      restrictOomScoreAdj: this.ctx.restrictOomScoreAdj,
      cgroupV2: this.ctx.cgroupV2,
      hugetlbController: this.ctx.hugetlbController,
      appArmor: this.ctx.appArmor ? { defaultProfile: 'nodelet-default' } : undefined,
      hostDevices,
      seccompLocalhostProfile,
      availableCapabilities: this.ctx.availableCapabilities,
      rlimits: this.ctx.rlimits,
      recursiveReadOnlyMounts: features.recursiveReadOnlyMounts,
    });
    const { uid, gid, additionalGids } = spec.process.user;
    rec.user = { uid, gid, additionalGids: additionalGids ?? [] };
    // The runtime gets it at StartContainer: CreateContainer only prepares, as containerd's does.
    rec.spec = spec;
    rec.lowerDirs = layerDirs;
  }

  /**
   * Creates the container in the runtime from the spec CreateContainer stored: the rootfs mounted first
   * (unless the backend mounts it itself), resources updated since creation applied.
   */
  private async createInRuntime(rec: ContainerRecord & { spec: OciSpec }, sandbox: SandboxRecord): Promise<number> {
    const dir = this.ctx.containers.pathOf(rec.id);
    const backend = this.ctx.backend(rec.runtimeHandler);
    const features = await backend.features();
    const lowerDirs = rec.lowerDirs ?? (await this.ctx.images.resolveImage(rec.imageId)).layerDirs;
    let rootfsMounts: OciMount[] | undefined;
    if (features.mountsRootfs) {
      // The backend mounts it; the overlay's upper and work dirs are ours to make (mountOverlay makes them for us).
      await Promise.all([ensureDir(path.join(dir, 'upper')), ensureDir(path.join(dir, 'work'))]);
      rootfsMounts = [overlayMountSpec(lowerDirs, path.join(dir, 'upper'), path.join(dir, 'work'))];
    } else if (!rec.rootfsMounted || !(await isMountPoint(rec.rootfs))) {
      // Not mounted by CreateContainer (the usual case), or gone since (a host reboot).
      await mountOverlay(lowerDirs, path.join(dir, 'upper'), path.join(dir, 'work'), rec.rootfs);
      rec.rootfsMounted = true;
      crashPoint('container.start.rootfs-mounted');
    }
    const { pid } = await backend
      .create({
        id: rec.id,
        spec: rec.spec,
        rootfsMounts,
        logPath: rec.logPath,
        tty: rec.config.tty,
        stdin: rec.config.stdin,
        stdinOnce: rec.config.stdin_once,
      })
      .catch((err) => {
        throw requestFault(err, rec.config, rec.spec.process.args[0] ?? '') ?? sysctlFault(err, sandbox.config.linux?.sysctls, 'sandbox config.linux.sysctls') ?? err;
      });
    return pid;
  }

  /** A ready container record, refreshed with an exit that happened since we last looked. */
  async get(id: string): Promise<ContainerRecord> {
    if (!id) throw invalidArgument('container_id is required');
    const rec = this.ctx.containers.get(id);
    if (!rec || rec.phase !== 'ready') throw notFound(`container ${id} not found`);
    return this.refresh(rec);
  }

  async refresh(rec: ContainerRecord): Promise<ContainerRecord> {
    if (rec.state !== 'CONTAINER_RUNNING') return rec;
    const exit = await this.ctx.backend(rec.runtimeHandler).exitOf(rec.id);
    if (!exit) return rec;
    return this.ctx.locks.run(rec.id, async () => {
      const cur = this.ctx.containers.get(rec.id);
      if (!cur || cur.state !== 'CONTAINER_RUNNING') return cur ?? rec;
      await this.recordExit(cur, exit);
      return cur;
    });
  }

  private async recordExit(rec: ContainerRecord, exit: Pick<ContainerExit, 'exitCode' | 'exitedAt' | 'reason' | 'oomKilled'>): Promise<void> {
    rec.state = 'CONTAINER_EXITED';
    rec.exitCode = exit.exitCode;
    const finished = dateToNs(exit.exitedAt);
    rec.finishedAt = rec.startedAt && BigInt(finished) < BigInt(rec.startedAt) ? rec.startedAt : finished;
    rec.reason = exit.oomKilled ? 'OOMKilled' : exit.exitCode === 0 ? 'Completed' : 'Error';
    if (exit.reason) rec.message = exit.reason;
    await this.ctx.containers.put(rec);
    this.ctx.emit('CONTAINER_STOPPED_EVENT', rec.id, rec.sandboxId);
  }

  /**
   * Creates the container in the runtime (from the spec CreateContainer stored) and starts it. A failure
   * leaves it EXITED with reason StartError and exit code 128, as containerd does, and is returned.
   */
  async start(id: string): Promise<void> {
    const found = await this.get(id);
    await this.ctx.locks.run(found.id, async () => {
      const rec = this.ctx.containers.get(found.id)!;
      if (rec.state !== 'CONTAINER_CREATED') throw failedPrecondition(`container ${rec.id} is ${rec.state}, not CONTAINER_CREATED`);
      const sandbox = this.ctx.sandboxes.get(rec.sandboxId);
      if (!sandbox || sandbox.state !== 'SANDBOX_READY') throw failedPrecondition(`pod sandbox ${rec.sandboxId} of container ${rec.id} is not ready`);
      const backend = this.ctx.backend(rec.runtimeHandler);
      // Taken before the start: a process that exits at once must not finish before it started.
      const startedAt = nowNs();
      try {
        if (rec.spec) {
          rec.pid = await this.createInRuntime(rec as ContainerRecord & { spec: OciSpec }, sandbox);
          crashPoint('container.start.backend-created');
        }
        await backend.start(rec.id);
        crashPoint('container.start.backend-started');
      } catch (err) {
        // Nothing of it runs: whatever the runtime made of it goes (as containerd deletes the task; a create
        // that failed half-way can leave runc's state or cgroup), the record says why.
        await backend.delete(rec.id).catch((e) => logger({ container: rec.id.slice(0, 12) }).warn({ err: errorMessage(e) }, 'deleting a container that failed to start'));
        rec.state = 'CONTAINER_EXITED';
        rec.exitCode = 128;
        rec.reason = 'StartError';
        rec.message = errorMessage(err);
        rec.finishedAt = nowNs();
        rec.pid = undefined;
        rec.spec = undefined;
        await this.ctx.containers.put(rec);
        throw err;
      }
      rec.state = 'CONTAINER_RUNNING';
      rec.startedAt = startedAt;
      rec.spec = undefined;
      await this.ctx.containers.put(rec);
      this.ctx.emit('CONTAINER_STARTED_EVENT', rec.id, rec.sandboxId);
    });
  }

  /**
   * Stops without holding the container's lock while it waits (only the final record update takes it), so
   * a later timeout-0 stop, a remove or a pod stop is never queued behind a graceful wait. A timeout of 0
   * kills at once and escalates every stop still waiting on a grace period. A cancelled call stops waiting.
   */
  async stop(id: string, timeoutSeconds: number, signal?: AbortSignal): Promise<void> {
    if (!id) throw invalidArgument('container_id is required');
    let found = this.ctx.containers.get(id);
    if (!found || found.phase !== 'ready') return; // CRI: stopping an unknown container succeeds
    if (found.state === 'CONTAINER_CREATED') {
      // A start may be under way: let it finish (the lock is only ever held briefly), then stop what it started.
      await this.ctx.locks.run(found.id, async () => undefined);
      found = this.ctx.containers.get(found.id);
    }
    if (!found || found.state !== 'CONTAINER_RUNNING') return;
    const backend = this.ctx.backend(found.runtimeHandler);
    const timeout = Math.max(0, timeoutSeconds);
    if (timeout === 0) for (const escalate of this.stopping.get(found.id) ?? []) escalate();
    const escalation = new AbortController();
    const escalate = () => escalation.abort();
    const waiting = this.stopping.get(found.id) ?? new Set<() => void>();
    this.stopping.set(found.id, waiting.add(escalate));
    try {
      await backend.stop(found.id, timeout, found.stopSignal, { signal, escalate: escalation.signal }).catch((err) => {
        if (!isKind(err, 'NotFound')) throw err; // the runtime lost it: record what we know below
      });
    } finally {
      waiting.delete(escalate);
      if (waiting.size === 0 && this.stopping.get(found.id) === waiting) this.stopping.delete(found.id);
    }
    crashPoint('container.stop.killed');
    await this.ctx.locks.run(found.id, async () => {
      const rec = this.ctx.containers.get(found.id);
      if (!rec || rec.state !== 'CONTAINER_RUNNING') return;
      const exit = await backend.exitOf(rec.id);
      await this.recordExit(rec, { exitCode: exit?.exitCode ?? 137, exitedAt: exit?.exitedAt ?? new Date(), oomKilled: exit?.oomKilled });
    });
  }

  /**
   * Answers once the container is durably marked removed (gone from every list and status, its name free);
   * the runtime's delete and the unmounts, the slow part, run in the background, as containerd's
   * RemoveContainer leaves them to its shim. A daemon killed before they finish completes them at start.
   * A second RemoveContainer, or the removal of the pod, waits for them.
   */
  async remove(id: string): Promise<void> {
    if (!id) throw invalidArgument('container_id is required');
    const found = this.ctx.containers.get(id);
    if (!found) return;
    // Read before the lock: the record object itself turns 'removing' below.
    const repeated = found.phase === 'removing';
    await this.ctx.locks.run(found.id, async () => {
      const rec = this.ctx.containers.get(found.id);
      if (!rec) return;
      // A record still "creating" once its lock is free is a leftover of a creation that never finished: undo it all.
      if (rec.phase === 'creating') return this.destroy(rec, { force: true });
      if (rec.phase === 'ready') {
        // A created container the runtime never got (its spec still here) has no processes to kill.
        if (rec.state !== 'CONTAINER_EXITED' && !rec.spec) {
          // Its processes die before the answer: a removed container never runs on.
          const backend = this.ctx.backends.get(rec.runtimeHandler);
          await backend?.stop(rec.id, 0, 'SIGKILL').catch(() => undefined);
        }
        rec.state = 'CONTAINER_EXITED';
        rec.phase = 'removing';
        await this.ctx.containers.put(rec);
        crashPoint('container.remove.marked');
        this.ctx.containerNames.release(rec.reservedName, rec.id);
        this.ctx.emit('CONTAINER_DELETED_EVENT', rec.id, rec.sandboxId);
      }
    });
    // A first removal answers now; a repeated one (or the pod's) waits for the teardown to end.
    await this.finishRemoval(found.id, repeated);
  }

  private readonly removals = new Map<string, Promise<void>>();

  /** Waits for the teardown of removed containers using the image (RemoveImage right after RemoveContainer), at most 10 s. */
  async settleRemovalsUsing(imageId: string): Promise<void> {
    const removing = this.ctx.containers.list().filter((c) => c.phase === 'removing' && imageIdsUsedBy(c).includes(imageId));
    if (removing.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(removing.map((c) => this.finishRemoval(c.id, true))),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, 10_000))),
    ]);
    clearTimeout(timer);
  }

  /**
   * The background part of a removal (started once per id; a failed one is retried by the next call).
   * `wait`: resolve when it is done (a second RemoveContainer, the pod's removal), or at once.
   */
  private finishRemoval(id: string, wait = false): Promise<void> {
    let running = this.removals.get(id);
    if (!running) {
      // Begun once the answer is out: the runtime's delete forks this daemon, and a fork started with the
      // answer still queued held its write for the fork's milliseconds (critest RemoveContainer p50 8.7 ms;
      // 3.5 ms with the teardown 20 ms later). A repeated removal and the pod's wait for it anyway.
      running = new Promise<void>((resolve) => setTimeout(resolve, REMOVAL_TEARDOWN_DELAY_MS))
        .then(() => this.ctx.locks.run(id, async () => {
          const rec = this.ctx.containers.get(id);
          if (rec?.phase === 'removing') await this.destroy(rec);
        }))
        .catch((err: unknown) => logger({ container: id.slice(0, 12) }).warn({ err: errorMessage(err) }, 'removing a container in the background failed; the next RemoveContainer or a restart retries'))
        .finally(() => this.removals.delete(id));
      this.removals.set(id, running);
      if (!wait) return Promise.resolve();
    }
    return wait ? running : Promise.resolve();
  }

  /**
   * Kills, deletes and unmounts; removes state. The log file stays (the kubelet owns its life), except
   * after a failed creation that made it. A failed step is logged and the others still run; the record
   * goes once all worked, or anyway with `force` (an interrupted creation).
   */
  async destroy(rec: ContainerRecord, opts: { force?: boolean } = {}): Promise<void> {
    const log = logger({ container: rec.id.slice(0, 12) });
    const { step, failed } = undoSteps('container', log);
    // A record holding its spec was never given to the runtime: nothing there to stop or delete.
    const backend = rec.spec ? undefined : this.ctx.backends.get(rec.runtimeHandler);
    if (rec.state !== 'CONTAINER_EXITED') await step('stop', async () => backend && (await backend.stop(rec.id, 0, 'SIGKILL').catch(() => undefined)));
    // The process is gone: the runtime's state, the rootfs and the image volumes can go at the same time.
    await Promise.all([
      step('delete', async () => backend?.delete(rec.id)),
      step('rootfs', () => unmountIfMounted(rec.rootfs)),
      ...(rec.imageVolumes ?? []).map((v) => step(`image volume ${v.index}`, () => unmountIfMounted(v.mountPoint))),
    ]);
    if (rec.phase === 'creating') {
      if (rec.logFileIsNew) await step('log file', () => fsp.rm(rec.logPath, { force: true }));
      const created = rec.createdLogDirectory;
      if (created) await step('log directory', () => removeEmptyDirsUpTo(path.dirname(rec.logPath), created));
    }
    if (failed.length > 0 && !opts.force) throw internal(`container ${rec.id} not fully removed (${failed.join('; ')}); try again`);
    crashPoint('container.undo.record');
    await this.ctx.containers.delete(rec.id);
    this.ctx.containerNames.release(rec.reservedName, rec.id);
    if (rec.phase === 'ready') this.ctx.emit('CONTAINER_DELETED_EVENT', rec.id, rec.sandboxId);
  }

  async stopAllOf(sandboxId: string): Promise<void> {
    await Promise.all(this.ctx.containersOf(sandboxId).map((c) => this.stop(c.id, 0)));
  }

  async removeAllOf(sandboxId: string): Promise<void> {
    await Promise.all(
      this.ctx.containersOf(sandboxId).map(async (c) => {
        await this.remove(c.id);
        await this.finishRemoval(c.id, true);
      }),
    );
  }

  async list(filter: ContainerFilter__Output | null | undefined): Promise<ContainerRecord[]> {
    const out: ContainerRecord[] = [];
    for (const r of this.ctx.containers.list()) {
      if (r.phase !== 'ready') continue;
      if (filter?.id && !r.id.startsWith(filter.id)) continue;
      if (filter?.pod_sandbox_id && !r.sandboxId.startsWith(filter.pod_sandbox_id)) continue;
      // States are kept fresh by the exit monitor; listing does no I/O per container.
      const rec = r;
      if (filter?.state && rec.state !== filter.state.state) continue;
      if (filter?.label_selector && !matchLabels(rec.config.labels, filter.label_selector)) continue;
      out.push(rec);
    }
    return out;
  }

  async execSync(id: string, cmd: string[], timeoutSeconds: number): Promise<ExecSyncResult> {
    checkCommand(cmd, 'cmd');
    const rec = await this.get(id);
    if (rec.state !== 'CONTAINER_RUNNING') throw failedPrecondition(`container ${rec.id} is not running`);
    // Node timers hold at most 2^31-1 ms; a longer timeout would fire at once. Longer is as good as none.
    const timeout = timeoutSeconds > 0 && timeoutSeconds <= MAX_TIMER_SECONDS ? timeoutSeconds : 0;
    const res = await this.ctx.backend(rec.runtimeHandler).execSync(rec.id, cmd, { timeoutSec: timeout });
    if (res.timedOut) {
      // Same as the kubelet's own probes expect from containerd: a timeout is an error naming it.
      throw new NodeletError('DeadlineExceeded', `command ${JSON.stringify(cmd)} timed out after ${timeoutSeconds}s`);
    }
    return { ...fitExecOutput(res.stdout, res.stderr), exitCode: res.exitCode };
  }

  async updateResources(id: string, resources: LinuxContainerResources__Output | null): Promise<void> {
    checkResources(resources, 'linux', this.ctx.hostLimits);
    const rec = await this.get(id);
    if (!resources) return;
    await this.ctx.locks.run(rec.id, async () => {
      const cur = this.ctx.containers.get(rec.id)!;
      const { resources: oci, oomScoreAdj } = resourcesFor(resources, {
        cgroupV2: this.ctx.cgroupV2,
        restrictOomScoreAdj: this.ctx.restrictOomScoreAdj,
        hugetlbController: this.ctx.hugetlbController,
      });
      if (cur.state === 'CONTAINER_CREATED' && cur.spec) {
        // Not in the runtime yet: the spec StartContainer hands it carries the new limits (device rules kept).
        cur.spec.linux = { ...cur.spec.linux, resources: { ...oci, devices: cur.spec.linux?.resources?.devices } };
        if (oomScoreAdj !== undefined) cur.spec.process.oomScoreAdj = oomScoreAdj;
      } else if (cur.state === 'CONTAINER_RUNNING' || cur.state === 'CONTAINER_CREATED') {
        await this.ctx
          .backend(cur.runtimeHandler)
          .updateResources(cur.id, oci)
          .catch((err) => {
            // The kernel cannot shrink the limit below what the container uses now (and cannot reclaim).
            const usage = /unable to set memory limit to \d+ \(current usage: (\d+)/.exec(errorMessage(err))?.[1];
            if (usage || /memory\.(limit_in_bytes|max)[^]*device or resource busy/.test(errorMessage(err))) {
              throw failedPrecondition(`linux.memory_limit_in_bytes ${resources.memory_limit_in_bytes} is below what container ${cur.id} uses now${usage ? ` (${usage} bytes)` : ''}`);
            }
            throw err;
          });
      }
      cur.resources = resources;
      await this.ctx.containers.put(cur);
    });
  }

  async reopenLog(id: string): Promise<void> {
    const rec = await this.get(id);
    if (rec.state !== 'CONTAINER_RUNNING') throw failedPrecondition(`container ${rec.id} is not running`);
    await this.ctx.backend(rec.runtimeHandler).reopenLog(rec.id);
  }

  /** A container the backend lost while we were away (host reboot): it is not running, and never will be. */
  private async recordLost(rec: ContainerRecord): Promise<void> {
    rec.state = 'CONTAINER_EXITED';
    rec.exitCode = 255;
    rec.reason = 'Unknown';
    rec.message = 'container was lost while nodelet-cri was not running';
    rec.finishedAt = rec.finishedAt ?? nowNs();
    await this.ctx.containers.put(rec);
  }

  /**
   * A created container whose StartContainer may have been cut short: a runtime that started it makes it
   * RUNNING (or EXITED); one that only created it has that undone, so it is created-not-started again; none
   * at all is the usual case (never started), not a loss.
   */
  private async recoverNotStarted(rec: ContainerRecord & { spec: OciSpec }): Promise<void> {
    const backend = this.ctx.backend(rec.runtimeHandler);
    const state = await backend.state(rec.id);
    const exit = state?.status === 'created' ? undefined : await backend.exitOf(rec.id);
    const log = logger({ container: rec.id.slice(0, 12) });
    if (!rec.rootfsMounted && (await isMountPoint(rec.rootfs))) {
      // Mounted by a StartContainer killed before it wrote so: the start must not mount it twice.
      rec.rootfsMounted = true;
      await this.ctx.containers.put(rec);
    }
    if ((state && state.status !== 'created') || (exit && !exit.lost)) {
      log.warn('recording the start of a container whose StartContainer was interrupted');
      rec.state = 'CONTAINER_RUNNING';
      rec.startedAt = exit ? dateToNs(exit.exitedAt) : nowNs();
      rec.pid = state?.pid || undefined;
      (rec as ContainerRecord).spec = undefined;
      await this.ctx.containers.put(rec);
      this.ctx.emit('CONTAINER_STARTED_EVENT', rec.id, rec.sandboxId);
      if (exit) await this.recordExit(rec, exit);
      return;
    }
    if (state) {
      // Created in the runtime, never started: undone, StartContainer redoes it.
      log.warn('undoing the runtime create of a container whose StartContainer was interrupted');
      await backend.delete(rec.id);
    }
  }

  /** After a restart: undo interrupted creations, record exits that happened while we were away. */
  async recover(): Promise<void> {
    for (const rec of this.ctx.containers.list()) {
      const log = logger({ container: rec.id.slice(0, 12) });
      try {
        if (rec.phase === 'creating') {
          log.warn('undoing a container whose creation was interrupted');
          await this.destroy(rec, { force: true });
          continue;
        }
        if (rec.phase === 'removing') {
          log.info('finishing the removal of a container');
          await this.destroy(rec);
          continue;
        }
        const backend = this.ctx.backend(rec.runtimeHandler);
        if (rec.state === 'CONTAINER_CREATED' && rec.spec) {
          await this.recoverNotStarted(rec as ContainerRecord & { spec: OciSpec });
          continue;
        }
        if (rec.state === 'CONTAINER_RUNNING' || rec.state === 'CONTAINER_CREATED') {
          const exit = await backend.exitOf(rec.id);
          const state = await backend.state(rec.id);
          const tracked = state && !state.untracked ? state : undefined;
          if (exit?.lost) {
            // The backend has no trace of it left (host reboot): it is not running, and never will be.
            await this.recordLost(rec);
            continue;
          }
          if (rec.state === 'CONTAINER_CREATED' && (exit || (tracked && tracked.status !== 'created'))) {
            // A StartContainer cut short after the runtime started the process: it runs (or ran).
            log.warn('recording the start of a container whose StartContainer was interrupted');
            rec.state = 'CONTAINER_RUNNING';
            rec.startedAt = exit ? dateToNs(exit.exitedAt) : nowNs();
            await this.ctx.containers.put(rec);
            this.ctx.emit('CONTAINER_STARTED_EVENT', rec.id, rec.sandboxId);
          }
          if (exit && rec.state === 'CONTAINER_RUNNING') {
            // It exited while we were away: recorded now, so that lists are right from the first answer.
            await this.recordExit(rec, exit);
          } else if (!exit && state?.untracked) {
            // The runtime forgot it but its processes run on: it stays RUNNING (true), and a stop kills them.
            log.warn('the runtime has no state for a container whose processes still run; stop or remove kills them');
          } else if (!exit && !state) {
            await this.recordLost(rec);
          }
        }
      } catch (err) {
        log.error({ err: errorMessage(err) }, 'recovery of container failed');
      }
    }
  }
}

const MAX_TIMER_SECONDS = Math.floor((2 ** 31 - 1) / 1000);
/** How long after RemoveContainer's answer its teardown begins (see finishRemoval). */
const REMOVAL_TEARDOWN_DELAY_MS = 20;

/** stdout and stderr together in one reply: under the 16 MiB a kubelet (grpc-go) accepts, with room for the rest. */
export const EXEC_SYNC_REPLY_LIMIT = 16 * 1024 * 1024 - 64 * 1024;

/** Cuts output that would not fit one reply, saying so at the end of what was cut (never an error). */
export function fitExecOutput(stdout: Buffer, stderr: Buffer, limit = EXEC_SYNC_REPLY_LIMIT): { stdout: Buffer; stderr: Buffer } {
  if (stdout.length + stderr.length <= limit) return { stdout, stderr };
  const note = (kept: number) => Buffer.from(`\n[nodelet: output cut to its first ${kept} bytes: an ExecSync reply must fit one message]\n`);
  const room = limit - 2 * 200; // the notes
  const errKeep = Math.min(stderr.length, Math.max(Math.floor(room / 2), room - stdout.length));
  const outKeep = Math.min(stdout.length, room - errKeep);
  const cut = (buf: Buffer, keep: number) => (keep < buf.length ? Buffer.concat([buf.subarray(0, keep), note(keep)]) : buf);
  return { stdout: cut(stdout, outKeep), stderr: cut(stderr, errKeep) };
}

/**
 * The runtime refusing what the request asked for (a command that is not in the image, a mount of a file
 * over a directory, a working directory that is a file): the request's fault, said naming the field,
 * not the runtime's INTERNAL error. Undefined when the failure is not one of these.
 */
export function requestFault(err: unknown, config: ContainerConfig__Output, command: string): NodeletError | undefined {
  const text = errorMessage(err).replace(/\\"/g, '"');
  const exec = /exec: "((?:[^"\\]|\\.)*)": ([^"]*)/.exec(text);
  if (exec) {
    const field = config.command.length ? 'config.command[0]' : config.args.length ? "config.args (with the image's entrypoint)" : "the image's entrypoint/cmd";
    return invalidArgument(`${field}: ${JSON.stringify(exec[1] || command)} cannot be run in the container: ${exec[2]!.trim()}`);
  }
  const mount = /error mounting "([^"]*)" to rootfs at "([^"]*)": (?:.*: )?([^:"]+)"?$/m.exec(text);
  if (mount) {
    const index = config.mounts.findIndex((m) => m.container_path === mount[2] || posixClean(m.container_path) === mount[2]);
    const field = index >= 0 ? `config.mounts[${index}]` : 'config.mounts';
    return invalidArgument(`${field}: ${mount[1]} cannot be mounted at ${mount[2]}: ${mount[3]!.trim()}`);
  }
  if (config.working_dir && /(mkdir|chdir)[^:]*: not a directory|chdir to cwd/.test(text)) {
    return invalidArgument(`config.working_dir ${JSON.stringify(config.working_dir)} is not a directory in the container`);
  }
  return undefined;
}

function posixClean(p: string): string {
  return path.posix.normalize(p).replace(/\/+$/, '') || '/';
}

/**
 * The image's StopSignal when the runtime can send it (a name with or without SIG, a number, RTMIN+n):
 * an image's typo must not make every StopContainer fail with the container still running.
 */
export function imageStopSignal(signal: string | undefined): string {
  const s = (signal ?? '').trim();
  if (!s) return 'SIGTERM';
  const name = s.toUpperCase().replace(/^SIG/, '');
  const known = /^\d+$/.test(s) ? Number(s) >= 1 && Number(s) <= 64 : `SIG${name}` in osConstants.signals || /^RTM(IN|AX)([+-]\d{1,2})?$/.test(name);
  if (known) return s;
  logger().warn({ stopSignal: s }, "the image's StopSignal is not a signal; SIGTERM is used");
  return 'SIGTERM';
}

/** CRI spells real-time signals SIGRTMINPLUS3 / SIGRTMAXMINUS2; OCI runtimes want RTMIN+3 / RTMAX-2. */
export function runtimeSignalName(signal: string): string {
  const plus = /^SIGRTMINPLUS(\d+)$/.exec(signal);
  if (plus) return `RTMIN+${plus[1]}`;
  const minus = /^SIGRTMAXMINUS(\d+)$/.exec(signal);
  if (minus) return `RTMAX-${minus[1]}`;
  return signal;
}
