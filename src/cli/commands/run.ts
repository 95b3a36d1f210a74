// `nodelet run`: pull if needed, run a pod sandbox, create and start one container in it.
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { ContainerConfig } from '../../cri/generated/runtime/v1/ContainerConfig.js';
import type { PodSandboxConfig } from '../../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { PortMapping } from '../../cri/generated/runtime/v1/PortMapping.js';
import type { Protocol } from '../../cri/generated/runtime/v1/Protocol.js';
import type { CriClient } from '../client.js';
import { CliError, keyValues, UsageError, type Args, type Command } from '../command.js';
import { parseCreds } from './images.js';

export const DEFAULT_POD_LOG_ROOT = '/var/log/pods';

/** "8080:80", "127.0.0.1:8080:80/udp" into a CRI port mapping. */
export function parsePortMapping(spec: string): PortMapping {
  const [ports, proto = 'tcp'] = spec.split('/');
  const protocol = proto.toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') throw new UsageError(`--port protocol must be tcp, udp or sctp: ${spec}`, 'run');
  const parts = ports!.split(':');
  const port = (s: string | undefined) => {
    const n = Number(s);
    if (!s || !Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--port wants [HOST-IP:]HOST-PORT:CONTAINER-PORT[/PROTO], got "${spec}"`, 'run');
    return n;
  };
  if (parts.length === 2) return { host_port: port(parts[0]), container_port: port(parts[1]), protocol: protocol as Protocol };
  if (parts.length === 3) return { host_ip: parts[0]!, host_port: port(parts[1]), container_port: port(parts[2]), protocol: protocol as Protocol };
  throw new UsageError(`--port wants [HOST-IP:]HOST-PORT:CONTAINER-PORT[/PROTO], got "${spec}"`, 'run');
}

/** A container name from an image reference: its last path part without tag or digest. */
export function nameFromImage(image: string): string {
  const noDigest = image.split('@')[0]!;
  const last = noDigest.slice(noDigest.lastIndexOf('/') + 1);
  const noTag = last.includes(':') ? last.slice(0, last.indexOf(':')) : last;
  const name = noTag.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return name || 'container';
}

/** The kubelet's pod log directory: <root>/<namespace>_<name>_<uid>/. */
export function podLogDirectory(root: string, namespace: string, name: string, uid: string): string {
  return path.join(root, `${namespace}_${name}_${uid}`) + '/';
}

export interface RunSpec {
  pod: PodSandboxConfig;
  container: ContainerConfig;
}

/** Fills what a spec file may leave out: pod uid, attempt, log directory, hostname, container log path. */
export function completeSpec(spec: RunSpec, logRoot: string): RunSpec {
  const pod: PodSandboxConfig = { ...spec.pod };
  const containerName = spec.container.metadata?.name || (spec.container.image?.image ? nameFromImage(spec.container.image.image) : 'container');
  const podName = pod.metadata?.name || `${containerName}-${randomBytes(3).toString('hex')}`;
  const namespace = pod.metadata?.namespace || 'default';
  const uid = pod.metadata?.uid || randomUUID();
  pod.metadata = { ...pod.metadata, name: podName, namespace, uid, attempt: pod.metadata?.attempt ?? 0 };
  pod.hostname ??= podName;
  pod.log_directory ??= podLogDirectory(logRoot, namespace, podName, uid);
  const attempt = spec.container.metadata?.attempt ?? 0;
  const container: ContainerConfig = {
    ...spec.container,
    metadata: { ...spec.container.metadata, name: containerName, attempt },
    log_path: spec.container.log_path ?? `${containerName}/${attempt}.log`,
  };
  return { pod, container };
}

/** The run spec from the command line flags. */
export function specFromFlags(args: Args): RunSpec {
  const [image] = args.expectPositionals(1, 1);
  const containerName = args.string('name') || nameFromImage(image!);
  const labels = keyValues(args.list('label'), '--label', 'run');
  const envs = Object.entries(keyValues(args.list('env'), '--env', 'run')).map(([key, value]) => ({ key, value }));
  const pod: PodSandboxConfig = {
    metadata: { name: args.string('pod-name') ?? '', namespace: args.string('namespace') ?? 'default', attempt: 0 },
    labels,
    port_mappings: args.list('port').map(parsePortMapping),
    linux: { security_context: { namespace_options: { network: args.flag('host-network') ? 'NODE' : 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
  };
  const entrypoint = args.string('entrypoint');
  const container: ContainerConfig = {
    metadata: { name: containerName, attempt: 0 },
    image: { image: image! },
    labels,
    envs,
    ...(entrypoint ? { command: [entrypoint] } : {}),
    ...(args.verbatim.length > 0 ? { args: args.verbatim } : {}),
    ...(args.string('workdir') ? { working_dir: args.string('workdir')! } : {}),
  };
  return { pod, container };
}

async function readSpecFile(file: string): Promise<RunSpec> {
  const text = await fsp.readFile(file, 'utf8').catch((err: unknown) => {
    throw new CliError(`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
  });
  let parsed: unknown;
  try {
    parsed = YAML.parse(text);
  } catch (err) {
    throw new CliError(`${file} is not valid YAML: ${err instanceof Error ? err.message : String(err)}`);
  }
  const spec = parsed as Partial<RunSpec> | null;
  if (!spec || typeof spec !== 'object' || typeof spec.pod !== 'object' || typeof spec.container !== 'object' || !spec.pod || !spec.container) {
    throw new CliError(`${file} must hold "pod" (PodSandboxConfig) and "container" (ContainerConfig) objects`);
  }
  if (!spec.container.image?.image) throw new CliError(`${file}: container.image.image is required`);
  return { pod: spec.pod, container: spec.container };
}

/** Pulls the image unless the runtime has it already. */
async function ensureImage(client: CriClient, image: string, args: Args): Promise<void> {
  const status = await client.image('ImageStatus', { image: { image } });
  if (status.image) return;
  const auth = parseCreds(args.string('creds'), undefined);
  await client.image('PullImage', { image: { image }, ...(auth ? { auth } : {}) });
}

export const runCommand: Command = {
  name: 'run',
  summary: 'Run a container in a new pod sandbox (pulling its image if needed) and print its id',
  usage: 'IMAGE [-- COMMAND [ARG...]]  |  nodelet run -f SPEC.yaml',
  verbatimAfter: 1,
  options: {
    file: { type: 'string', short: 'f', value: 'SPEC.yaml', description: 'YAML with "pod" (PodSandboxConfig) and "container" (ContainerConfig)' },
    'pod-name': { type: 'string', value: 'NAME', description: 'Pod name (default: container name and a random suffix)' },
    namespace: { type: 'string', short: 'n', value: 'NS', description: 'Pod namespace (default "default")' },
    name: { type: 'string', value: 'NAME', description: 'Container name (default: from the image name)' },
    port: { type: 'string', short: 'p', multiple: true, value: 'HOST:CONTAINER', description: 'Publish a port: [HOST-IP:]HOST-PORT:CONTAINER-PORT[/tcp|udp|sctp]' },
    env: { type: 'string', short: 'e', multiple: true, value: 'K=V', description: 'Environment variable' },
    label: { type: 'string', short: 'l', multiple: true, value: 'K=V', description: 'Label on the pod and the container' },
    'host-network': { type: 'boolean', description: "Use the node's network namespace" },
    entrypoint: { type: 'string', value: 'PATH', description: "Replace the image's entrypoint" },
    workdir: { type: 'string', short: 'w', value: 'DIR', description: 'Working directory in the container' },
    runtime: { type: 'string', value: 'HANDLER', description: 'Runtime handler' },
    creds: { type: 'string', value: 'USER:PASS', description: 'Registry credentials for the pull' },
    'log-root': { type: 'string', value: 'DIR', description: `Root of pod log directories (default ${DEFAULT_POD_LOG_ROOT})` },
    verbose: { type: 'boolean', short: 'v', description: 'Also print the pod sandbox id' },
  },
  async run(ctx, args) {
    const file = args.string('file');
    if (file && (args.positionals.length > 0 || args.verbatim.length > 0)) throw new UsageError('run takes either -f SPEC.yaml or IMAGE, not both', 'run');
    const raw = file ? await readSpecFile(file) : specFromFlags(args);
    const { pod, container } = completeSpec(raw, args.string('log-root') ?? DEFAULT_POD_LOG_ROOT);
    const client = ctx.client();
    await ensureImage(client, container.image!.image!, args);
    const runtimeHandler = args.string('runtime');
    const { pod_sandbox_id: podId } = await client.runtime('RunPodSandbox', { config: pod, ...(runtimeHandler ? { runtime_handler: runtimeHandler } : {}) });
    try {
      const { container_id: containerId } = await client.runtime('CreateContainer', { pod_sandbox_id: podId, config: container, sandbox_config: pod });
      await client.runtime('StartContainer', { container_id: containerId });
      if (args.flag('verbose')) ctx.stdout.write(`pod ${podId}\ncontainer ${containerId}\n`);
      else ctx.stdout.write(`${containerId}\n`);
    } catch (err) {
      // Leave nothing half made behind.
      await client.runtime('StopPodSandbox', { pod_sandbox_id: podId }).catch(() => undefined);
      await client.runtime('RemovePodSandbox', { pod_sandbox_id: podId }).catch(() => undefined);
      throw err;
    }
  },
};
