// CSI node plugins found the kubelet's way: a plugin puts a registration socket in <root>/plugins_registry; the
// agent asks it GetInfo (type CSIPlugin, name, CSI endpoint, versions), asks the CSI endpoint NodeGetInfo and
// NodeGetCapabilities, records the driver in the node's CSINode object (and the csi.volume.kubernetes.io/nodeid
// annotation), then answers NotifyRegistrationStatus. A socket that goes away deregisters its driver.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PatchStrategy, StorageV1Api, setHeaderOptions, type CoreV1Api, type KubeConfig, type V1CSINode, type V1CSINodeDriver } from '@kubernetes/client-node';
import { errorMessage } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { apiErrorCode, makeApiClient } from '../kube-client.js';
import { csiNodeClient, registrationClient, type UnaryClient } from './grpc.js';

export interface CsiDriver {
  name: string;
  endpoint: string;
  nodeId: string;
  /** NodeStageVolume/NodeUnstageVolume are called (STAGE_UNSTAGE_VOLUME). */
  stageUnstage: boolean;
  node: UnaryClient;
}

export interface CsiPluginsOptions {
  registryDir: string;
  nodeName: string;
  kube?: { config: KubeConfig; core: CoreV1Api };
  log: Logger;
  pollMs?: number;
}

/** A CSI version the agent speaks: 1.x. */
export function supportedCsiVersion(versions: string[]): boolean {
  return versions.some((v) => /^v?1(\.\d+){0,2}$/.test(v.trim()));
}

/** The CSINode driver list with this driver set (replacing one of the same name), in name order. */
export function withDriver(drivers: V1CSINodeDriver[] | undefined, driver: V1CSINodeDriver): V1CSINodeDriver[] {
  return [...(drivers ?? []).filter((d) => d.name !== driver.name), driver].sort((a, b) => a.name.localeCompare(b.name));
}

export class CsiPlugins {
  private readonly drivers = new Map<string, CsiDriver>();
  /** Registration socket → driver name (or the error it failed with and when). */
  private readonly sockets = new Map<string, { driver?: string; failedAt?: number }>();
  private readonly storage?: StorageV1Api;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private scanning?: Promise<void>;

  constructor(private readonly opts: CsiPluginsOptions) {
    if (opts.kube) this.storage = makeApiClient(opts.kube.config, StorageV1Api);
  }

  driver(name: string): CsiDriver | undefined {
    return this.drivers.get(name);
  }

  get driverNames(): string[] {
    return [...this.drivers.keys()].sort();
  }

  async start(): Promise<void> {
    await fsp.mkdir(this.opts.registryDir, { recursive: true, mode: 0o750 });
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.scanning;
    for (const d of this.drivers.values()) d.node.close();
    this.drivers.clear();
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.scanning = this.scan()
        .catch((err) => this.opts.log.warn({ err: errorMessage(err) }, 'plugin registry scan failed'))
        .finally(() => this.schedule(this.opts.pollMs ?? 1000));
    }, ms);
    this.timer.unref();
  }

  /** Registers new sockets, deregisters vanished ones; a failed one is tried again after 10 s. */
  private async scan(): Promise<void> {
    const present = new Set<string>();
    for (const name of await fsp.readdir(this.opts.registryDir)) {
      const socket = path.join(this.opts.registryDir, name);
      const st = await fsp.stat(socket).catch(() => undefined);
      if (!st?.isSocket()) continue;
      present.add(socket);
      const known = this.sockets.get(socket);
      if (known?.driver || (known?.failedAt && Date.now() - known.failedAt < 10_000)) continue;
      await this.register(socket);
      if (this.stopped) return;
    }
    for (const [socket, entry] of this.sockets) {
      if (present.has(socket)) continue;
      this.sockets.delete(socket);
      if (entry.driver) await this.deregister(entry.driver);
    }
  }

  private async register(socket: string): Promise<void> {
    const reg = registrationClient(socket);
    let node: UnaryClient | undefined;
    try {
      const info = await reg.call('GetInfo', {}, 10_000);
      if (info.type !== 'CSIPlugin') throw new Error(`plugin type ${JSON.stringify(info.type)} is not supported (CSIPlugin only)`);
      if (!info.name) throw new Error('plugin has no name');
      if (!supportedCsiVersion(info.supported_versions ?? [])) {
        throw new Error(`none of the CSI versions ${JSON.stringify(info.supported_versions)} of ${info.name} are supported (1.x)`);
      }
      const endpoint = info.endpoint || socket;
      node = csiNodeClient(endpoint);
      const nodeInfo = await node.call('NodeGetInfo', {}, 10_000);
      if (!nodeInfo.node_id) throw new Error(`${info.name}: NodeGetInfo returned no node_id`);
      const caps = await node.call('NodeGetCapabilities', {}, 10_000);
      const stageUnstage = (caps.capabilities ?? []).some((c: any) => c.rpc?.type === 'STAGE_UNSTAGE_VOLUME');
      await this.recordDriver({
        name: info.name,
        nodeID: nodeInfo.node_id,
        topologyKeys: Object.keys(nodeInfo.accessible_topology?.segments ?? {}).sort(),
        ...(Number(nodeInfo.max_volumes_per_node) > 0 ? { allocatable: { count: Number(nodeInfo.max_volumes_per_node) } } : {}),
      });
      this.drivers.get(info.name)?.node.close();
      this.drivers.set(info.name, { name: info.name, endpoint, nodeId: nodeInfo.node_id, stageUnstage, node });
      this.sockets.set(socket, { driver: info.name });
      await reg.call('NotifyRegistrationStatus', { plugin_registered: true }, 10_000).catch(() => undefined);
      this.opts.log.info({ driver: info.name, endpoint, nodeId: nodeInfo.node_id, stageUnstage }, 'CSI plugin registered');
    } catch (err) {
      node?.close();
      this.sockets.set(socket, { failedAt: Date.now() });
      this.opts.log.warn({ socket, err: errorMessage(err) }, 'CSI plugin registration failed');
      await reg.call('NotifyRegistrationStatus', { plugin_registered: false, error: errorMessage(err) }, 5000).catch(() => undefined);
    } finally {
      reg.close();
    }
  }

  private async deregister(name: string): Promise<void> {
    const d = this.drivers.get(name);
    if (!d) return;
    this.drivers.delete(name);
    d.node.close();
    this.opts.log.info({ driver: name }, 'CSI plugin deregistered');
    await this.updateCsiNode((drivers) => drivers.filter((x) => x.name !== name), name, undefined).catch((err) =>
      this.opts.log.warn({ driver: name, err: errorMessage(err) }, 'removing the driver from CSINode failed'),
    );
  }

  /** CSINode <node> (owned by the Node, made if missing) lists the driver; the Node's annotation maps it to nodeID. */
  private async recordDriver(driver: V1CSINodeDriver): Promise<void> {
    await this.updateCsiNode((drivers) => withDriver(drivers, driver), driver.name, driver.nodeID);
  }

  private async updateCsiNode(change: (drivers: V1CSINodeDriver[]) => V1CSINodeDriver[], name: string, nodeId: string | undefined): Promise<void> {
    const storage = this.storage;
    const kube = this.opts.kube;
    if (!storage || !kube) return;
    const nodeName = this.opts.nodeName;
    for (let attempt = 0; ; attempt++) {
      try {
        let csiNode: V1CSINode | undefined = await storage.readCSINode({ name: nodeName }).catch((err) => {
          if (apiErrorCode(err) === 404) return undefined;
          throw err;
        });
        if (!csiNode) {
          const node = await kube.core.readNode({ name: nodeName });
          csiNode = await storage.createCSINode({
            body: {
              apiVersion: 'storage.k8s.io/v1',
              kind: 'CSINode',
              metadata: { name: nodeName, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: nodeName, uid: node.metadata!.uid! }] },
              spec: { drivers: [] },
            },
          });
        }
        await storage.replaceCSINode({ name: nodeName, body: { ...csiNode, spec: { drivers: change(csiNode.spec?.drivers ?? []) } } });
        break;
      } catch (err) {
        const code = apiErrorCode(err);
        if ((code !== 409 && code !== 404) || attempt >= 5) throw err;
        await sleep(200);
      }
    }
    // The annotation the kubelet keeps: {"<driver>": "<nodeID>", ...}.
    const node = await kube.core.readNode({ name: nodeName });
    const ids = JSON.parse(node.metadata?.annotations?.['csi.volume.kubernetes.io/nodeid'] ?? '{}') as Record<string, string>;
    if (nodeId) ids[name] = nodeId;
    else delete ids[name];
    await kube.core.patchNode(
      { name: nodeName, body: { metadata: { annotations: { 'csi.volume.kubernetes.io/nodeid': Object.keys(ids).length ? JSON.stringify(ids) : null } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }
}
