// Debian's containerd 1.6 with its CRI plugin, started for the benchmark on its own socket,
// root and state, with its own CNI config (unique bridge and subnet), plain-HTTP access to
// the local registry, and our pause image as its sandbox image.
import { randomBytes } from 'node:crypto';
import { promises as fsp, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../../test/helpers/spawn.js';
import { connectCri, type CriClient } from '../../test/helpers/cri-client.js';
import { testConflist } from '../../test/helpers/cni.js';
import { socketAnswers } from '../../src/common/unix-socket.js';
import { findProcesses } from './procs.js';

export const CONTAINERD_BINARY = '/usr/bin/containerd';
export const CNI_BIN_DIR = '/usr/lib/cni';

export interface BenchContainerd {
  socket: string;
  pid: number;
  client: CriClient;
  bridge: string;
  subnet: string;
  logFile: string;
  /** Removes every pod (so the shims exit), stops containerd, unmounts leftovers, deletes dirs and the bridge. */
  cleanup(): Promise<void>;
}

export interface ContainerdOptions {
  registry: string;
  sandboxImage: string;
  /** Upstream registries answered by `registry` (its mirror), e.g. registry.k8s.io for critest's images. */
  mirrored?: string[];
}


function containerdConfig(o: { root: string; state: string; socket: string; cniConfDir: string; certsDir: string; sandboxImage: string }): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = ${JSON.stringify(o.root)}
state = ${JSON.stringify(o.state)}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = ${JSON.stringify(o.socket)}

[debug]
  level = "info"

[${cri}]
  sandbox_image = ${JSON.stringify(o.sandboxImage)}
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [${cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [${cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false

  [${cri}.cni]
    bin_dir = ${JSON.stringify(CNI_BIN_DIR)}
    conf_dir = ${JSON.stringify(o.cniConfDir)}

  [${cri}.registry]
    config_path = ${JSON.stringify(o.certsDir)}
`;
}

async function unmountUnder(dirs: string[]): Promise<void> {
  const mounts = (await fsp.readFile('/proc/self/mounts', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m): m is string => !!m && dirs.some((d) => m === d || m.startsWith(d + '/')))
    .reverse();
  for (const m of mounts) await run('umount', ['-l', m], { reject: false, timeoutMs: 10_000 });
}

export async function startContainerd(opts: ContainerdOptions): Promise<BenchContainerd> {
  const tag = randomBytes(4).toString('hex');
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-bench-containerd-'));
  // Unix socket paths are limited to 108 bytes: keep the run dir short.
  const runDir = path.join('/run/nodelet-bench', tag);
  const socket = path.join(runDir, 'containerd.sock');
  const root = path.join(base, 'root');
  const state = path.join(runDir, 'state');
  const cniConfDir = path.join(base, 'cni');
  const certsDir = path.join(base, 'certs.d');
  const bridge = `nlbc${tag}`.slice(0, 15);
  const subnet = `10.${16 + (parseInt(tag.slice(0, 4), 16) % 200)}.${parseInt(tag.slice(4, 6), 16)}.0/24`;
  await fsp.mkdir(runDir, { recursive: true });
  await fsp.mkdir(cniConfDir, { recursive: true });
  await fsp.writeFile(path.join(cniConfDir, '10-bench.conflist'), testConflist(`nodelet-bench-${tag}`, bridge, subnet, path.join(base, 'ipam')));
  await fsp.mkdir(path.join(certsDir, opts.registry), { recursive: true });
  await fsp.writeFile(
    path.join(certsDir, opts.registry, 'hosts.toml'),
    `server = "http://${opts.registry}"\n\n[host."http://${opts.registry}"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n`,
  );
  for (const upstream of opts.mirrored ?? []) {
    await fsp.mkdir(path.join(certsDir, upstream), { recursive: true });
    await fsp.writeFile(
      path.join(certsDir, upstream, 'hosts.toml'),
      `server = "https://${upstream}"\n\n[host."http://${opts.registry}"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n`,
    );
  }
  const configFile = path.join(base, 'config.toml');
  await fsp.writeFile(configFile, containerdConfig({ root, state, socket, cniConfDir, certsDir, sandboxImage: opts.sandboxImage }));
  const logFile = path.join(base, 'containerd.log');
  const log = { file: logFile, append: true } as const;
  const child = spawnChild(CONTAINERD_BINARY, ['--config', configFile], { stdin: 'ignore', stdout: log, stderr: log, buffer: false, reject: false });
  let exited = false;
  void child.then(() => (exited = true), () => (exited = true));

  const removeAll = async (client: CriClient) => {
    const { items } = await client.runtime('ListPodSandbox', {});
    for (const s of items) {
      await client.runtime('StopPodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
      await client.runtime('RemovePodSandbox', { pod_sandbox_id: s.id }).catch(() => undefined);
    }
  };
  const cleanup = async (client?: CriClient) => {
    try {
      if (client && !exited) await removeAll(client).catch(() => undefined);
    } finally {
      client?.close();
      if (!exited) {
        child.kill('SIGTERM');
        await Promise.race([child.then(() => undefined, () => undefined), sleep(10_000)]);
        if (!exited) child.kill('SIGKILL');
      }
      // Shims left behind (a pod we could not remove) hold our socket in their args.
      for (const p of await findProcesses((args) => args[0]?.endsWith('containerd-shim-runc-v2') === true && args.includes(socket))) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await unmountUnder([root, state, runDir]);
      await run('ip', ['link', 'del', bridge], { reject: false });
      await fsp.rm(runDir, { recursive: true, force: true }).catch(() => undefined);
      await fsp.rm(base, { recursive: true, force: true }).catch(() => undefined);
    }
  };

  for (let i = 0; i < 300 && !exited; i++) {
    if (existsSync(socket) && (await socketAnswers(socket))) break;
    await sleep(100);
  }
  if (exited || !existsSync(socket)) {
    const tail = (await fsp.readFile(logFile, 'utf8').catch(() => '')).slice(-4000);
    await cleanup();
    throw new Error(`containerd did not start:\n${tail}`);
  }
  const client = connectCri(socket);
  // The CRI plugin registers after the socket is up; wait until it answers.
  let lastError: unknown;
  for (let i = 0; i < 100; i++) {
    try {
      await client.runtime('Version', {});
      lastError = undefined;
      break;
    } catch (err) {
      lastError = err;
      await sleep(100);
    }
  }
  if (lastError) {
    const tail = (await fsp.readFile(logFile, 'utf8').catch(() => '')).slice(-4000);
    await cleanup(client);
    throw new Error(`containerd's CRI does not answer: ${String(lastError)}\n${tail}`);
  }
  return { socket, pid: child.pid!, client, bridge, subnet, logFile, cleanup: () => cleanup(client) };
}
