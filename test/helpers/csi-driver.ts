// A small CSI node plugin for tests (Node + grpc-js): each volume is a directory <backing>/<volume_id>;
// NodeStageVolume bind-mounts it on the staging path, NodePublishVolume bind-mounts the staging path on the
// target (read-only when asked), the Un- calls undo that. It registers itself through the kubelet's plugin
// registration protocol (a socket in the node agent's plugins_registry) and records every call it gets.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { run } from '../../src/common/exec.js';
import { csiProto, registrationProto } from '../../src/agent/csi/grpc.js';

export interface CsiCall {
  method: string;
  request: any;
}

export interface TestCsiDriver {
  name: string;
  nodeId: string;
  backing: string;
  endpoint: string;
  registrationSocket: string;
  calls: CsiCall[];
  /** NotifyRegistrationStatus as the agent sent it. */
  registration?: { plugin_registered: boolean; error: string };
  stop(): Promise<void>;
}

async function isMountpoint(p: string): Promise<boolean> {
  const res = await run('mountpoint', ['-q', p], { reject: false });
  return res.exitCode === 0;
}

function handler(fn: (req: any) => Promise<object>) {
  return (call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) => {
    fn(call.request).then(
      (res) => callback(null, res),
      (err: Error & { code?: number }) => callback({ code: err.code ?? grpc.status.INTERNAL, details: err.message }),
    );
  };
}

function invalid(message: string): Error & { code: number } {
  return Object.assign(new Error(message), { code: grpc.status.INVALID_ARGUMENT });
}

async function listen(server: grpc.Server, socket: string): Promise<void> {
  await fsp.rm(socket, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
}

export async function startTestCsiDriver(opts: { name: string; nodeId: string; dir: string; registryDir: string; stageUnstage?: boolean }): Promise<TestCsiDriver> {
  const backing = path.join(opts.dir, 'backing');
  await fsp.mkdir(backing, { recursive: true });
  const endpoint = path.join(opts.dir, 'csi.sock');
  const registrationSocket = path.join(opts.registryDir, `${opts.name}-reg.sock`);
  const calls: CsiCall[] = [];
  const csi = csiProto();
  const server = new grpc.Server();
  const record = (method: string, fn: (req: any) => Promise<object>) =>
    handler(async (req) => {
      calls.push({ method, request: req });
      return fn(req);
    });
  server.addService(csi.Identity.service, {
    GetPluginInfo: record('GetPluginInfo', async () => ({ name: opts.name, vendor_version: '0.1.0' })),
    GetPluginCapabilities: record('GetPluginCapabilities', async () => ({ capabilities: [] })),
    Probe: record('Probe', async () => ({ ready: { value: true } })),
  });
  server.addService(csi.Node.service, {
    NodeGetInfo: record('NodeGetInfo', async () => ({ node_id: opts.nodeId, max_volumes_per_node: 16 })),
    NodeGetCapabilities: record('NodeGetCapabilities', async () => ({
      capabilities: opts.stageUnstage === false ? [] : [{ rpc: { type: 'STAGE_UNSTAGE_VOLUME' } }],
    })),
    NodeStageVolume: record('NodeStageVolume', async (req) => {
      if (!req.volume_id || !req.staging_target_path) throw invalid('volume_id and staging_target_path are required');
      if (!req.volume_capability?.mount) throw invalid('only mount volumes');
      const source = path.join(backing, req.volume_id);
      await fsp.mkdir(source, { recursive: true });
      await fsp.mkdir(req.staging_target_path, { recursive: true });
      if (!(await isMountpoint(req.staging_target_path))) await run('mount', ['--bind', source, req.staging_target_path]);
      return {};
    }),
    NodeUnstageVolume: record('NodeUnstageVolume', async (req) => {
      if (await isMountpoint(req.staging_target_path)) await run('umount', [req.staging_target_path]);
      return {};
    }),
    NodePublishVolume: record('NodePublishVolume', async (req) => {
      if (!req.volume_id || !req.target_path) throw invalid('volume_id and target_path are required');
      // Unstaged (no STAGE_UNSTAGE_VOLUME, or an inline ephemeral volume): straight from the backing dir.
      const source = req.staging_target_path || path.join(backing, req.volume_id);
      await fsp.mkdir(source, { recursive: true });
      await fsp.mkdir(req.target_path, { recursive: true });
      if (!(await isMountpoint(req.target_path))) {
        await run('mount', ['--bind', source, req.target_path]);
        if (req.readonly) await run('mount', ['-o', 'remount,bind,ro', req.target_path]);
      }
      return {};
    }),
    NodeUnpublishVolume: record('NodeUnpublishVolume', async (req) => {
      if (await isMountpoint(req.target_path)) await run('umount', [req.target_path]);
      await fsp.rmdir(req.target_path).catch(() => undefined);
      return {};
    }),
  });
  await listen(server, endpoint);

  const driver: TestCsiDriver = {
    name: opts.name,
    nodeId: opts.nodeId,
    backing,
    endpoint,
    registrationSocket,
    calls,
    async stop() {
      await fsp.rm(registrationSocket, { force: true });
      await new Promise<void>((resolve) => registration.tryShutdown(() => resolve()));
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await fsp.rm(endpoint, { force: true });
    },
  };
  const registration = new grpc.Server();
  registration.addService(registrationProto().Registration.service, {
    GetInfo: handler(async () => ({ type: 'CSIPlugin', name: opts.name, endpoint, supported_versions: ['1.0.0'] })),
    NotifyRegistrationStatus: handler(async (req) => {
      driver.registration = { plugin_registered: req.plugin_registered, error: req.error };
      return {};
    }),
  });
  await fsp.mkdir(opts.registryDir, { recursive: true });
  await listen(registration, registrationSocket);
  return driver;
}
