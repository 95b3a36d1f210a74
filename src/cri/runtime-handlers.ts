// RuntimeService RPCs: validate the request shape, call the runtime domain, shape the response.
import type { ServiceHandlers } from './server.js';
import type { RuntimeService } from '../runtime/runtime-service.js';
import type { SandboxRecord, ContainerRecord } from '../runtime/records.js';
import { NODELET_VERSION, CRI_API_VERSION } from '../version.js';
import { checkCommand } from '../runtime/validation.js';
import { reportedMounts } from '../runtime/image-volumes.js';
import { criServices } from './grpc.js';
import { EncodedListItems, containerListItems, podSandboxListItems } from './list-responses.js';

export function sandboxStatusMessage(rec: SandboxRecord) {
  const [ip, ...more] = rec.ips;
  return {
    id: rec.id,
    metadata: rec.config.metadata,
    state: rec.state,
    created_at: rec.createdAt,
    network: { ip: ip ?? '', additional_ips: more.map((m) => ({ ip: m })) },
    linux: { namespaces: { options: rec.config.linux?.security_context?.namespace_options ?? { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    labels: rec.config.labels,
    annotations: rec.config.annotations,
    runtime_handler: rec.runtimeHandler,
  };
}

export function containerStatusMessage(rec: ContainerRecord) {
  return {
    id: rec.id,
    metadata: rec.config.metadata,
    state: rec.state,
    created_at: rec.createdAt,
    started_at: rec.startedAt ?? 0,
    finished_at: rec.finishedAt ?? 0,
    exit_code: rec.exitCode ?? 0,
    image: { image: rec.imageName, annotations: rec.config.image?.annotations ?? {} },
    image_ref: rec.imageRef,
    image_id: rec.imageId,
    reason: rec.reason ?? '',
    message: rec.message ?? '',
    labels: rec.config.labels,
    annotations: rec.config.annotations,
    mounts: reportedMounts(rec.config.mounts, rec.imageVolumes),
    log_path: rec.logPath,
    resources: rec.resources ? { linux: rec.resources } : null,
    stop_signal: rec.config.stop_signal,
    user: rec.user ? { linux: { uid: rec.user.uid, gid: rec.user.gid, supplemental_groups: rec.user.additionalGids } } : null,
  };
}

/** What containerStatusMessage reads: values, and objects the runtime replaces (never edits) when they change. */
function containerStatusInputs(rec: ContainerRecord): unknown[] {
  return [
    rec.id, rec.config, rec.state, rec.createdAt, rec.startedAt, rec.finishedAt, rec.exitCode, rec.imageName, rec.imageRef,
    rec.imageId, rec.reason, rec.message, rec.imageVolumes, rec.logPath, rec.resources, rec.user,
  ];
}

/** A container's non-verbose ContainerStatusResponse in wire form, kept until what it reads changes. */
function containerStatusAnswers(serializeResponse: (value: any) => Buffer): EncodedListItems<ContainerRecord> {
  return new EncodedListItems((rec) => serializeResponse({ status: containerStatusMessage(rec), info: {} }), containerStatusInputs);
}

function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

export function runtimeHandlers(rt: RuntimeService): ServiceHandlers {
  const { sandboxes, containers } = rt;
  const service = criServices().runtime;
  const containerItems = containerListItems(service.ListContainers.responseSerialize);
  const sandboxItems = podSandboxListItems(service.ListPodSandbox.responseSerialize);
  const statusAnswers = containerStatusAnswers(service.ContainerStatus.responseSerialize);
  return {
    unary: {
      Version: async () => ({
        version: '0.1.0',
        runtime_name: 'nodelet',
        runtime_version: NODELET_VERSION,
        runtime_api_version: CRI_API_VERSION,
      }),
      Status: async (req: { verbose: boolean }) => ({
        status: { conditions: await rt.conditions() },
        info: req.verbose ? { config: JSON.stringify(rt.ctx.config) } : {},
        // The default handler is also listed under the empty name, which is what clients send for it.
        runtime_handlers: await Promise.all(
          ['', ...rt.ctx.usableHandlers()].map(async (name) => ({
            name,
            features: {
              recursive_read_only_mounts: (await rt.ctx.backend(rt.ctx.handlerName(name)).features()).recursiveReadOnlyMounts,
              user_namespaces: false,
            },
          })),
        ),
        features: { supplemental_groups_policy: true, user_namespaces_host_network: false },
      }),
      RuntimeConfig: async () => ({ linux: { cgroup_driver: 'CGROUPFS' } }),
      UpdateRuntimeConfig: async (req: any) => {
        const cidr = req.runtime_config?.network_config?.pod_cidr;
        if (cidr) await rt.ctx.network.setPodCidr(cidr);
        return {};
      },
      RunPodSandbox: async (req: any) => ({ pod_sandbox_id: await sandboxes.run(req.config, req.runtime_handler) }),
      StopPodSandbox: async (req: any) => {
        await sandboxes.stop(req.pod_sandbox_id);
        return {};
      },
      RemovePodSandbox: async (req: any) => {
        await sandboxes.remove(req.pod_sandbox_id);
        return {};
      },
      PodSandboxStatus: async (req: any) => {
        const rec = await sandboxes.refresh(sandboxes.get(req.pod_sandbox_id));
        const statuses = req.verbose ? await containers.list({ id: '', state: null, pod_sandbox_id: rec.id, label_selector: {} }) : [];
        return {
          status: sandboxStatusMessage(rec),
          info: req.verbose ? { info: JSON.stringify({ pid: rec.infraPid, netnsPath: rec.netnsPath, runtimeHandler: rec.runtimeHandler, config: rec.config }) } : {},
          containers_statuses: statuses.map(containerStatusMessage),
          timestamp: nowNs(),
        };
      },
      ListPodSandbox: async (req: any) => sandboxItems.response(await sandboxes.list(req.filter)),
      CreateContainer: async (req: any) => ({ container_id: await containers.create(req.pod_sandbox_id, req.config) }),
      StartContainer: async (req: any) => {
        await containers.start(req.container_id);
        // Encoded now, once per start, rather than by the status call that follows.
        const started = rt.ctx.containers.get(req.container_id);
        if (started) statusAnswers.entryOf(started);
        return {};
      },
      StopContainer: async (req: any, ctx) => {
        await containers.stop(req.container_id, req.timeout, ctx.signal);
        return {};
      },
      RemoveContainer: async (req: any) => {
        await containers.remove(req.container_id);
        return {};
      },
      ListContainers: async (req: any) => containerItems.response(await containers.list(req.filter)),
      ContainerStatus: async (req: any) => {
        const rec = await containers.get(req.container_id);
        if (!req.verbose) return statusAnswers.message(rec);
        return {
          status: containerStatusMessage(rec),
          info: { info: JSON.stringify({ pid: rec.pid, sandboxId: rec.sandboxId, runtimeHandler: rec.runtimeHandler, rootfs: rec.rootfs, imageVolumes: rec.imageVolumes ?? [], config: rec.config }) },
        };
      },
      UpdateContainerResources: async (req: any) => {
        await containers.updateResources(req.container_id, req.linux);
        return {};
      },
      ReopenContainerLog: async (req: any) => {
        await containers.reopenLog(req.container_id);
        return {};
      },
      ExecSync: async (req: any) => {
        checkCommand(req.cmd, 'cmd');
        const res = await containers.execSync(req.container_id, req.cmd, req.timeout);
        return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
      },
    },
  };
}
