// Wires the daemon together: image service, network, runtime, gRPC server. Used by main and by tests.
import { promises as fsp, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { NodeletConfig } from '../config/config.js';
import { CriServer, mergeHandlers, type ServiceHandlers } from './server.js';
import { imageHandlers } from './image-handlers.js';
import { runtimeHandlers } from './runtime-handlers.js';
import { eventHandlers } from './events-handlers.js';
import { statsHandlers } from './stats-handlers.js';
import { streamingHandlers } from './streaming-handlers.js';
import { StreamingServer } from '../streaming/server.js';
import { StatsCollector, cgroupDirOf } from '../stats/collector.js';
import { cgroupReaderFor } from '../stats/readers.js';
import { ImageService } from '../image/image-service.js';
import type { RegistryClient } from '../image/registry.js';
import { CniNetwork } from '../network/cni.js';
import { RuntimeService } from '../runtime/runtime-service.js';
import { detectHugetlbController } from '../runtime/host-cgroups.js';
import { imageIdsUsedBy } from '../runtime/records.js';
import { ensureDir } from '../common/fsutil.js';
import { logger } from '../common/log.js';

export interface Daemon {
  config: NodeletConfig;
  images: ImageService;
  runtime: RuntimeService;
  stop(): Promise<void>;
}

export async function startDaemon(config: NodeletConfig): Promise<Daemon> {
  const log = logger();
  await ensureDir(config.root, 0o711);
  await ensureDir(config.runRoot, 0o711);
  // The registry client is loaded by the first pull, not at start: a node that never pulls never pays for it.
  let registryClient: Promise<RegistryClient> | undefined;
  const loadRegistry = () =>
    (registryClient ??= import('../image/registry.js').then(
      (m) =>
        new m.RegistryClient({
          insecure: config.registry.insecure,
          mirrors: config.registry.mirrors,
          requestTimeoutMs: config.registry.requestTimeoutSeconds * 1000,
          retries: config.registry.retries,
          stallTimeoutMs: config.registry.stallTimeoutSeconds * 1000,
        }),
    ));
  const registry: Pick<RegistryClient, 'resolve' | 'downloadBlob'> = {
    resolve: async (...args) => (await loadRegistry()).resolve(...args),
    downloadBlob: async (...args) => (await loadRegistry()).downloadBlob(...args),
  };
  let runtime: RuntimeService | undefined;
  // prom-client is only loaded when metrics are asked for.
  const metrics = config.metrics.address
    ? new (await import('../metrics/metrics.js')).RuntimeMetrics({
        sandboxes: () => countBy(runtime?.ctx.sandboxes.list().filter((r) => r.phase === 'ready') ?? [], (r) => r.state),
        containers: () => countBy(runtime?.ctx.containers.list().filter((r) => r.phase === 'ready') ?? [], (r) => r.state),
        monitors: async () => (runtime ? runtime.liveMonitors() : 0),
      })
    : undefined;
  const images = new ImageService({
    root: path.join(config.root, 'images'),
    registry,
    layerLimits: { maxBytes: config.images.maxLayerBytes, maxRatio: config.images.maxLayerCompressionRatio },
    inUse: (imageId: string) => runtime?.ctx.containers.list().some((c) => imageIdsUsedBy(c).includes(imageId)) ?? false,
    settleRemovals: async (imageId: string) => runtime?.containers.settleRemovalsUsing(imageId),
    onPulled: (outcome) => metrics?.onPulled(outcome),
  });
  await images.recover();
  const network = new CniNetwork({
    confDir: config.cni.confDir,
    binDirs: config.cni.binDirs,
    cacheDir: path.join(config.root, 'cni-cache'),
  });
  await network.ensureDefaultConfig();
  const cgroupV2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  runtime = new RuntimeService({
    config,
    network,
    images,
    restrictOomScoreAdj: await oomScoreAdjRestricted(),
    cgroupV2,
    hugetlbController: detectHugetlbController(cgroupV2),
    appArmor: appArmorEnabled(),
  });
  await runtime.start();
  // Each part contributes the RuntimeService RPCs it owns; stop hooks run in reverse on shutdown.
  const runtimeParts: ServiceHandlers[] = [runtimeHandlers(runtime), eventHandlers(runtime)];
  const stopHooks: Array<() => Promise<void>> = [];
  const ctx = runtime.ctx;
  const stats = new StatsCollector({
    source: {
      containers: () => ctx.containers.list(),
      sandboxes: () => ctx.sandboxes.list(),
      upperDirOf: (id) => path.join(ctx.containers.pathOf(id), 'upper'),
      cgroupOf: (rec, parent) => ctx.backends.get(rec.runtimeHandler)?.cgroupOf(rec.id, parent) ?? cgroupDirOf(parent, rec.id),
    },
    reader: cgroupReaderFor(),
    periodMs: config.stats.periodSeconds * 1000,
    writableLayerPeriodMs: config.stats.writableLayerPeriodSeconds * 1000,
  });
  stats.start();
  runtimeParts.push(statsHandlers(runtime, stats));
  stopHooks.push(() => stats.stop());
  const streaming = new StreamingServer({ ...config.streaming, runtime });
  await streaming.start();
  runtimeParts.push(streamingHandlers(runtime, streaming));
  stopHooks.push(() => streaming.stop());
  const server = new CriServer({ socket: config.socket, transport: config.grpcServer, runtime: mergeHandlers(...runtimeParts), image: imageHandlers(images), observer: metrics });
  await server.start();
  if (metrics) {
    const rt = runtime;
    const { startMetricsServer } = await import('../metrics/http-server.js');
    const endpoint = await startMetricsServer(config.metrics.address, metrics, {
      socket: config.socket,
      runtimeReady: async () => {
        const cond = (await rt.conditions()).find((c) => c.type === 'RuntimeReady');
        return { ok: Boolean(cond?.status), message: cond?.message ?? '' };
      },
    });
    log.info({ address: endpoint.address }, 'metrics and health endpoint serving');
    stopHooks.push(() => endpoint.close());
  }
  await runtime.startMonitoring();
  stopHooks.push(async () => runtime!.stopMonitoring());
  log.info({ socket: config.socket, root: config.root, runRoot: config.runRoot, grpcServer: config.grpcServer }, 'nodelet-cri serving');
  return {
    config,
    images,
    runtime,
    stop: async () => {
      await server.stop();
      for (const hook of stopHooks.reverse()) await hook();
      log.info('nodelet-cri stopped (containers keep running under their monitors)');
    },
  };
}

function countBy<T>(items: T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const it of items) out[key(it)] = (out[key(it)] ?? 0) + 1;
  return out;
}

/** Lowering oom_score_adj needs CAP_SYS_RESOURCE; without it we clamp negatives to 0 (containerd's restrict_oom_score_adj). */
async function oomScoreAdjRestricted(): Promise<boolean> {
  const file = '/proc/self/oom_score_adj';
  try {
    const current = (await fsp.readFile(file, 'utf8')).trim();
    const lower = String(Math.max(-1000, Number(current) - 1));
    await fsp.writeFile(file, lower);
    await fsp.writeFile(file, current);
    return false;
  } catch {
    return true;
  }
}

function appArmorEnabled(): boolean {
  try {
    return readFileSync('/sys/module/apparmor/parameters/enabled', 'utf8').trim() === 'Y';
  } catch {
    return false;
  }
}
