// What a node under test needs from the host, each piece undone by a Cleanup step: an interface of
// our own with a private /32 (the node IP the apiserver dials for logs/exec/port-forward, reachable from this
// machine only), a nodelet-cri with its own bridge and a registry mirror, and the node itself — the
// real kubelet or nodelet-agent — with every directory, port and cgroup of its own.
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../helpers/spawn.js';
import { freePort, stopChild } from '../helpers/registries.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import type { ControlPlane } from './control-plane.js';
import type { Cleanup } from './cleanup.js';
import { conformanceBackend, REPO_ROOT, type Tools } from './tools.js';

type Child = ReturnType<typeof spawnChild>;

export interface HostAddress {
  iface: string;
  ip: string;
}

export interface NodeRuntime {
  daemon: TestDaemon;
  endpoint: string;
  /** crictl against this runtime; resolves stdout. */
  crictl(args: string[]): Promise<string>;
}

export interface NodeUnderTest {
  kind: 'kubelet' | 'nodelet-agent';
  name: string;
  ip: string;
  staticPodDir: string;
  /** Where the node writes pod logs (`<ns>_<pod>_<uid>/<container>/N.log`). */
  podLogsDir: string;
  logPath: string;
  /** The last lines of the node's log. */
  logTail(lines?: number): Promise<string>;
  /** undefined while running, else how it ended. */
  exited(): string | undefined;
}



async function tail(file: string, lines: number): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/**
 * An interface of our own holding a random 198.18.x.y/32 (benchmark range, routed nowhere): a dummy
 * link where the kernel has the module, else a veth pair (both ends here, so traffic stays local).
 */
export async function addNodeAddress(cleanup: Cleanup): Promise<HostAddress> {
  const tag = randomBytes(3).toString('hex');
  const iface = `nlcf${tag}`;
  const used = (await run('ip', ['-o', '-4', 'addr', 'show'])).stdout;
  let ip = '';
  for (let i = 0; i < 20 && !ip; i++) {
    const candidate = `198.18.${1 + Math.floor(Math.random() * 254)}.${1 + Math.floor(Math.random() * 254)}`;
    if (!used.includes(` ${candidate}/`)) ip = candidate;
  }
  const dummy = await run('ip', ['link', 'add', iface, 'type', 'dummy'], { reject: false });
  if (dummy.exitCode !== 0) await run('ip', ['link', 'add', iface, 'type', 'veth', 'peer', 'name', `${iface}p`]);
  cleanup.add(`ip link del ${iface}`, () => run('ip', ['link', 'del', iface]));
  await run('ip', ['addr', 'add', `${ip}/32`, 'dev', iface]);
  await run('ip', ['link', 'set', iface, 'up']);
  if (dummy.exitCode !== 0) await run('ip', ['link', 'set', `${iface}p`, 'up']);
  return { iface, ip };
}

/** nodelet-cri with its own root, socket, bridge and subnet; docker.io served by the local registry; NODELET_CONFORMANCE_BACKEND picks its default handler's backend; `extraArgs` last (e.g. a log level). */
export async function startNodeRuntime(tools: Tools, registryHost: string, cleanup: Cleanup, extraArgs: string[] = []): Promise<NodeRuntime> {
  const daemon = await startTestDaemon({ network: true, backend: conformanceBackend(), args: ['--registry-mirror', `docker.io=http://${registryHost}`, ...extraArgs] });
  cleanup.add('nodelet-cri: remove pods, stop, remove its dirs and bridge', async () => {
    // A Ctrl-C reaches the daemon too: bring it back on the same state so it can remove what it ran.
    if (daemon.proc.exitCode !== null || daemon.proc.signalCode !== null) await daemon.restart();
    await daemon.cleanup();
  });
  const endpoint = `unix://${daemon.socket}`;
  return {
    daemon,
    endpoint,
    async crictl(args) {
      const res = await run(tools.crictl, ['--runtime-endpoint', endpoint, '--image-endpoint', endpoint, '--timeout', '20s', ...args], {
        timeoutMs: 60_000, reject: false,
      });
      if (res.exitCode !== 0) throw new Error(`crictl ${args.join(' ')}: exit ${res.exitCode}: ${res.stderr.trim().slice(0, 500)}`);
      return res.stdout;
    },
  };
}

/** Splits an iptables-save rule line into argv (double quotes group words). */
function ruleArgs(line: string): string[] {
  const args: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) args.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return args;
}

interface IptablesDump {
  chains: Set<string>; // "table/chain"
  rules: { table: string; args: string[] }[]; // ['-A', chain, ...]
}

async function iptablesDump(save: string): Promise<IptablesDump | undefined> {
  const res = await run(save, [], { reject: false });
  if (res.exitCode !== 0) return undefined;
  const dump: IptablesDump = { chains: new Set(), rules: [] };
  let table = '';
  for (const line of res.stdout.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) dump.chains.add(`${table}/${line.slice(1).split(' ')[0]}`);
    else if (line.startsWith('-A ')) dump.rules.push({ table, args: ruleArgs(line) });
  }
  return dump;
}

// What the kubelet changes on the host whatever its flags say: sysctls (protectKernelDefaults: false),
// KUBE-* iptables chains (canaries, a KUBE-FIREWALL jumped to from INPUT/OUTPUT), /var/lib/kubelet
// (device-plugin socket) and /var/log/containers. Runs side by side share one record of the host as it
// was before any of them; the last one out puts it back.
const HOST_STATE_DIR = '/run/nodelet-conformance';
const KUBELET_SYSCTLS = [
  'vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops', 'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes',
];
const KUBELET_PATHS = ['/var/lib/kubelet', '/var/log/containers'];
const IPTABLES = [['iptables-save', 'iptables'], ['ip6tables-save', 'ip6tables']] as const;

interface HostBefore {
  sysctls: [string, string][];
  /** iptables-save → its chains ("table/chain"), null when that iptables is missing. */
  chains: Record<string, string[] | null>;
  absentPaths: string[];
}

async function withHostLock<T>(fn: () => Promise<T>): Promise<T> {
  const lock = path.join(HOST_STATE_DIR, 'lock');
  await fsp.mkdir(HOST_STATE_DIR, { recursive: true });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await fsp.mkdir(lock);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // The last run out removes the whole dir: make it again.
      if (code === 'ENOENT') {
        await fsp.mkdir(HOST_STATE_DIR, { recursive: true });
        continue;
      }
      if (code !== 'EEXIST') throw err;
      // A holder killed mid-update leaves the lock: break it after a bound.
      if (Date.now() > deadline) await fsp.rm(lock, { recursive: true, force: true });
      else await sleep(100);
    }
  }
  try {
    return await fn();
  } finally {
    await fsp.rm(lock, { recursive: true, force: true });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The holder files of runs still alive (a dead run's file is removed). */
async function liveHolders(): Promise<string[]> {
  const dir = path.join(HOST_STATE_DIR, 'holders');
  const live: string[] = [];
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (pidAlive(Number(name.split('-')[0]))) live.push(name);
    else await fsp.rm(path.join(dir, name), { force: true });
  }
  return live;
}

async function restoreHost(before: HostBefore): Promise<void> {
  for (const [file, value] of before.sysctls) {
    if ((await fsp.readFile(file, 'utf8')).trim() !== value) await fsp.writeFile(file, value);
  }
  for (const [save, bin] of IPTABLES) {
    const was = before.chains[save];
    const now = await iptablesDump(save);
    if (!was || !now) continue;
    const wasSet = new Set(was);
    const added = [...now.chains].filter((c) => c.split('/')[1]!.startsWith('KUBE-') && !wasSet.has(c));
    const addedIn = (table: string) => new Set(added.filter((c) => c.startsWith(`${table}/`)).map((c) => c.split('/')[1]!));
    for (const rule of now.rules) {
      const names = addedIn(rule.table);
      const target = rule.args[rule.args.indexOf('-j') + 1] ?? '';
      if (names.has(target) && !names.has(rule.args[1]!)) {
        await run(bin, ['-w', '5', '-t', rule.table, '-D', ...rule.args.slice(1)], { reject: false });
      }
    }
    for (const c of added) await run(bin, ['-w', '5', '-t', c.split('/')[0]!, '-F', c.split('/')[1]!], { reject: false });
    for (const c of added) await run(bin, ['-w', '5', '-t', c.split('/')[0]!, '-X', c.split('/')[1]!], { reject: false });
  }
  for (const p of before.absentPaths) await fsp.rm(p, { recursive: true, force: true });
}

/** Records the host as it is before the first kubelet of ours; the last run out restores it. */
async function holdKubeletHostState(cleanup: Cleanup): Promise<void> {
  const beforeFile = path.join(HOST_STATE_DIR, 'before.json');
  const holder = path.join(HOST_STATE_DIR, 'holders', `${process.pid}-${randomBytes(3).toString('hex')}`);
  await withHostLock(async () => {
    await liveHolders();
    // A record left by a run that was killed holds the host's true values: keep it.
    if (!existsSync(beforeFile)) {
      const before: HostBefore = { sysctls: [], chains: {}, absentPaths: KUBELET_PATHS.filter((p) => !existsSync(p)) };
      for (const key of KUBELET_SYSCTLS) {
        const file = path.join('/proc/sys', key);
        const value = await fsp.readFile(file, 'utf8').catch(() => undefined);
        if (value !== undefined) before.sysctls.push([file, value.trim()]);
      }
      for (const [save] of IPTABLES) {
        const dump = await iptablesDump(save);
        before.chains[save] = dump ? [...dump.chains] : null;
      }
      await fsp.writeFile(beforeFile, JSON.stringify(before));
    }
    await fsp.mkdir(path.dirname(holder), { recursive: true });
    await fsp.writeFile(holder, '');
  });
  cleanup.add('put back what the kubelet changed on the host (when no other run needs it)', () => withHostLock(async () => {
    await fsp.rm(holder, { force: true });
    if ((await liveHolders()).length > 0) return;
    await restoreHost(JSON.parse(await fsp.readFile(beforeFile, 'utf8')) as HostBefore);
    await fsp.rm(HOST_STATE_DIR, { recursive: true, force: true });
  }));
}

/** Creates a cgroup in every hierarchy (the kubelet wants its cgroupRoot to exist), cpuset filled from the top. */
async function createCgroup(root: string): Promise<void> {
  const hierarchies = await fsp.readdir('/sys/fs/cgroup', { withFileTypes: true });
  for (const h of hierarchies) {
    if (!h.isDirectory()) continue;
    const dir = path.join('/sys/fs/cgroup', h.name, root);
    await fsp.mkdir(dir, { recursive: true });
    if (h.name === 'cpuset') {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        await fsp.writeFile(path.join(dir, f), await fsp.readFile(path.join('/sys/fs/cgroup', h.name, f), 'utf8'));
      }
    }
  }
}

/** Removes a cgroup subtree (deepest first) in every v1 hierarchy and the unified one. */
async function removeCgroupTree(root: string): Promise<void> {
  const hierarchies = await fsp.readdir('/sys/fs/cgroup', { withFileTypes: true });
  for (const h of hierarchies) {
    if (!h.isDirectory()) continue;
    const top = path.join('/sys/fs/cgroup', h.name, root);
    if (!existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = async (dir: string) => {
      dirs.push(dir);
      for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) await walk(path.join(dir, e.name));
      }
    };
    await walk(top);
    for (const dir of dirs.reverse()) {
      // A cgroup a process just left can be busy for a moment.
      for (let i = 0; i < 20; i++) {
        try {
          await fsp.rmdir(dir);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
          if (i === 19) throw err;
          await sleep(100);
        }
      }
    }
  }
}

/** The kubelet links /var/log/containers/* to the pod logs (a fixed path): remove ours. */
async function removeContainerLogLinks(podLogsDir: string): Promise<void> {
  const dir = '/var/log/containers';
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    const link = path.join(dir, name);
    const target = await fsp.readlink(link).catch(() => '');
    if (target.startsWith(`${podLogsDir}/`)) await fsp.rm(link, { force: true });
  }
}

/** The started node as the checks see it; stopping it is registered with `cleanup`. */
function nodeUnderTest(
  kind: NodeUnderTest['kind'], name: string, ip: string, dirs: Awaited<ReturnType<typeof nodeDirs>>, child: Child, cleanup: Cleanup,
): NodeUnderTest {
  cleanup.add(`stop ${kind}`, () => stopChild(child, 15_000));
  return {
    kind,
    name,
    ip,
    staticPodDir: dirs.staticPods,
    podLogsDir: dirs.podLogs,
    logPath: dirs.log,
    logTail: (lines = 20) => tail(dirs.log, lines),
    exited: () => describeExit(child),
  };
}

async function nodeDirs(kind: string, cleanup: Cleanup) {
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), `nodelet-cf-${kind}-`));
  cleanup.add(`remove ${base}`, async () => {
    // Pod volumes (tmpfs for secrets/tokens) the node left mounted would keep the dir busy.
    const mounts = (await fsp.readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '')
      .map((m) => m.replace(/\\040/g, ' ')).filter((m) => m.startsWith(`${base}/`)).sort().reverse();
    for (const m of mounts) await run('umount', ['-l', m], { reject: false });
    await fsp.rm(base, { recursive: true, force: true });
  });
  const dirs = {
    base,
    root: path.join(base, 'root'),
    staticPods: path.join(base, 'manifests'),
    podLogs: path.join(base, 'pod-logs'),
    log: path.join(base, `${kind}.log`),
  };
  for (const d of [dirs.root, dirs.staticPods, dirs.podLogs]) await fsp.mkdir(d, { recursive: true });
  return dirs;
}

function spawnLogged(file: string, args: string[], logPath: string): Child {
  const out = { file: logPath, append: true } as const;
  return spawnChild(file, args, { stdin: 'ignore', stdout: out, stderr: out, buffer: false });
}

function describeExit(child: Child): string | undefined {
  if (child.exitCode !== null) return `exited ${child.exitCode}`;
  if (child.signalCode !== null) return `killed by ${child.signalCode}`;
  return undefined;
}

/**
 * What the kubelet changes on the host beyond its own dirs — a cgroup root, sysctls, iptables chains,
 * fixed paths — prepared (and its undo registered) before the runtime starts, so the undo runs after the runtime's.
 */
export async function prepareKubeletHost(cleanup: Cleanup): Promise<{ cgroupRoot: string }> {
  await holdKubeletHostState(cleanup);
  return prepareCgroupRoot(cleanup);
}

/** A cgroup root of the node's own for its pod cgroups (`<root>/kubepods/...`), removed after the runtime's undo. */
export async function prepareCgroupRoot(cleanup: Cleanup): Promise<{ cgroupRoot: string }> {
  const cgroupRoot = `/nodelet-cf-${randomBytes(3).toString('hex')}`;
  cleanup.add(`remove cgroups ${cgroupRoot}`, () => removeCgroupTree(cgroupRoot));
  await createCgroup(cgroupRoot);
  return { cgroupRoot };
}

/** The real kubelet on `runtime`, joined to `cp` as `nodeName`, serving its API on `address.ip`. */
export async function startKubelet(
  tools: Tools, cp: ControlPlane, runtime: NodeRuntime, address: HostAddress, nodeName: string, cgroupRoot: string, cleanup: Cleanup,
): Promise<NodeUnderTest> {
  const dirs = await nodeDirs('kubelet', cleanup);
  cleanup.add('remove /var/log/containers links', () => removeContainerLogLinks(dirs.podLogs));
  const kubeconfig = await cp.nodeCredentials(nodeName);
  const port = await freePort(address.ip);
  const healthzPort = await freePort();
  const config = {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    cgroupRoot,
    oomScoreAdj: 0,
    failSwapOn: false,
    containerRuntimeEndpoint: runtime.endpoint,
    imageServiceEndpoint: runtime.endpoint,
    staticPodPath: dirs.staticPods,
    fileCheckFrequency: '1s',
    podLogsDir: dirs.podLogs,
    // Small, so the rotation check (ReopenContainerLog) sees a rotation within seconds.
    containerLogMaxSize: '1Mi',
    containerLogMaxFiles: 2,
    containerLogMonitorInterval: '3s',
    volumePluginDir: path.join(dirs.base, 'volume-plugins'),
    address: address.ip,
    port,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort,
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: cp.caPath },
    },
    authorization: { mode: 'Webhook' },
    serializeImagePulls: false,
    // A shared test disk must not make the node evict or refuse pods.
    evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    resolvConf: '/etc/resolv.conf',
    // e.g. NODELET_CONFORMANCE_KUBELET_FEATURE_GATES=EventedPLEG=true,PodAndContainerStatsFromCRI=true
    featureGates: Object.fromEntries((process.env.NODELET_CONFORMANCE_KUBELET_FEATURE_GATES ?? '').split(',').filter(Boolean)
      .map((kv) => [kv.split('=')[0]!.trim(), kv.split('=')[1]?.trim() !== 'false'])),
  };
  const configPath = path.join(dirs.base, 'kubelet-config.yaml');
  await fsp.writeFile(configPath, YAML.stringify(config));
  const child = spawnLogged(tools.kubelet, [
    `--config=${configPath}`,
    `--kubeconfig=${kubeconfig}`,
    `--root-dir=${dirs.root}`,
    `--cert-dir=${path.join(dirs.base, 'pki')}`,
    `--hostname-override=${nodeName}`,
    `--node-ip=${address.ip}`,
    '--v=2',
  ], dirs.log);
  return nodeUnderTest('kubelet', nodeName, address.ip, dirs, child, cleanup);
}

/** nodelet-agent on `runtime`, joined to `cp` as `nodeName`, its kubelet API on `address.ip` (logging at debug unless `logLevel` says otherwise). */
export async function startAgent(
  cp: ControlPlane, runtime: NodeRuntime, address: HostAddress, nodeName: string, cgroupRoot: string, cleanup: Cleanup,
  opts: { logLevel?: string } = {},
): Promise<NodeUnderTest> {
  const dirs = await nodeDirs('agent', cleanup);
  const kubeconfig = await cp.nodeCredentials(nodeName);
  const port = await freePort(address.ip);
  // The kubelet's log rotation settings, in the KubeletConfiguration-style file the agent reads.
  const configPath = path.join(dirs.base, 'agent-config.yaml');
  await fsp.writeFile(configPath, YAML.stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1', kind: 'KubeletConfiguration',
    containerLogMaxSize: '1Mi', containerLogMaxFiles: 2, containerLogMonitorInterval: '3s',
  }));
  const child = spawnLogged(path.join(REPO_ROOT, 'bin', 'nodelet-agent'), [
    '--config', configPath,
    '--kubeconfig', kubeconfig,
    '--node-name', nodeName,
    '--cri-endpoint', runtime.endpoint,
    '--root', dirs.root,
    '--pod-logs-dir', dirs.podLogs,
    '--pod-manifest-path', dirs.staticPods,
    '--node-ip', address.ip,
    '--kubelet-api-address', `${address.ip}:${port}`,
    '--client-ca-file', cp.caPath,
    '--cgroup-root', cgroupRoot,
    // As the kubelet's config above: a shared test disk must not make the node evict pods or collect images.
    '--eviction-hard', 'memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%',
    '--image-gc-high-threshold', '100',
    '--image-gc-low-threshold', '99',
    '--log-level', opts.logLevel ?? 'debug',
  ], dirs.log);
  return nodeUnderTest('nodelet-agent', nodeName, address.ip, dirs, child, cleanup);
}
