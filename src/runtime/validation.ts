// Up-front checks of CRI requests: everything refused here is refused before anything is created,
// with INVALID_ARGUMENT naming the field. Pure functions of the request and a few host facts.
import { isIP } from 'node:net';
import { posix } from 'node:path';
import { invalidArgument, type NodeletError } from '../common/errors.js';
import { Signal } from '../cri/generated/runtime/v1/Signal.js';
import { MountPropagation } from '../cri/generated/runtime/v1/MountPropagation.js';
import { NamespaceMode } from '../cri/generated/runtime/v1/NamespaceMode.js';
import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';

/** What the host allows, read once at start (see readHostLimits). */
export interface HostLimits {
  /** CPUs and memory nodes a cpuset may name. */
  cpus: ReadonlySet<number>;
  mems: ReadonlySet<number>;
  /** Hugepage sizes the kernel has, named as the kubelet names them (2MB, 1GB); empty: unknown. */
  hugepageSizes?: ReadonlySet<string>;
  /** Whether /proc/sys has this sysctl (dotted name). */
  sysctlExists(name: string): boolean;
}

/** The apiserver's limit for all annotations of an object; labels and annotations together here. */
export const MAX_METADATA_BYTES = 256 * 1024;
/** HOST_NAME_MAX. */
export const MAX_HOSTNAME = 64;
export const MAX_NAME = 253;
/** The lowest memory limit a container can start under (Docker's floor; the OCI runtime's own init needs memory). */
export const MIN_MEMORY_BYTES = 6 * 1024 * 1024;
/** Kernel bounds of cpu.cfs_period_us, cpu.cfs_quota_us and cpu.shares (cgroup v1). */
export const CPU_PERIOD = { min: 1000, max: 1_000_000 };
export const CPU_QUOTA = { min: 1000, max: 2 ** 44 - 1 };
export const MAX_CPU_SHARES = 262_144;
const MAX_ID = 4_294_967_294; // uid/gid: 2^32 - 1 is "no id"
const MAX_PORT = 65_535;

const CONTROL = /[\u0000-\u001f\u007f]/;

function describe(value: string): string {
  const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
  return JSON.stringify(shown);
}

/** A string that ends up in a file, an env var, a path or a process argument: no NUL, no control characters. */
export function checkText(value: string, field: string, opts: { max?: number; required?: boolean; allowNewline?: boolean } = {}): void {
  if (!value) {
    if (opts.required) throw invalidArgument(`${field} is required`);
    return;
  }
  if (value.includes('\0')) throw invalidArgument(`${field} contains a NUL byte`);
  const control = opts.allowNewline ? /[\u0001-\u0008\u000b-\u001f\u007f]/ : CONTROL;
  if (control.test(value)) throw invalidArgument(`${field} contains a control character`);
  if (opts.max !== undefined && Buffer.byteLength(value) > opts.max) {
    throw invalidArgument(`${field} is ${Buffer.byteLength(value)} bytes long (at most ${opts.max})`);
  }
}

function checkNoNul(value: string, field: string): void {
  if (value.includes('\0')) throw invalidArgument(`${field} contains a NUL byte`);
}

/** An absolute path with no `..` component and no NUL. */
export function checkAbsolutePath(value: string, field: string, opts: { required?: boolean } = {}): void {
  if (!value) {
    if (opts.required) throw invalidArgument(`${field} is required`);
    return;
  }
  checkNoNul(value, field);
  if (!value.startsWith('/')) throw invalidArgument(`${field} ${describe(value)} is not an absolute path`);
  if (value.split('/').includes('..')) throw invalidArgument(`${field} ${describe(value)} must not contain ".."`);
}

function checkMetadataSize(labels: Record<string, string> | undefined, annotations: Record<string, string> | undefined, field: string): void {
  let total = 0;
  for (const [what, map] of [['labels', labels], ['annotations', annotations]] as const) {
    for (const [k, v] of Object.entries(map ?? {})) {
      if (!k) throw invalidArgument(`${field}.${what}: empty key`);
      checkNoNul(k, `${field}.${what} key`);
      total += Buffer.byteLength(k) + Buffer.byteLength(v);
    }
  }
  if (total > MAX_METADATA_BYTES) {
    throw invalidArgument(`${field}.labels and ${field}.annotations are ${total} bytes together (at most ${MAX_METADATA_BYTES})`);
  }
}

function checkUint(value: number | undefined, field: string, max: number, min = 0): void {
  if (value === undefined || value === null) return;
  if (!Number.isInteger(value) || value < min || value > max) throw invalidArgument(`${field} ${value} is out of range (${min}..${max})`);
}

/** Kernel namespaces a sysctl belongs to (the OCI runtimes' rule); undefined: not namespaced, so not settable for a pod. */
function sysctlNamespace(name: string): 'ipc' | 'net' | 'uts' | undefined {
  if (['kernel.sem', 'kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced'].includes(name)) return 'ipc';
  if (name.startsWith('fs.mqueue.')) return 'ipc';
  if (name.startsWith('net.')) return 'net';
  if (name === 'kernel.domainname') return 'uts';
  return undefined;
}

/** Device-specific sysctls (net.ipv4.conf.<dev>.*) exist only inside the pod's own network namespace. */
function perDevice(name: string): boolean {
  return /^net\.(ipv4|ipv6)\.(conf|neigh)\./.test(name);
}

export function checkSysctls(sysctls: Record<string, string> | undefined, field: string, ns: { hostNetwork: boolean; hostIpc: boolean }, host: HostLimits): void {
  for (const [key, value] of Object.entries(sysctls ?? {})) {
    const at = `${field}[${JSON.stringify(key)}]`;
    checkText(key, `${field} key`);
    if (!/^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*$/.test(key)) throw invalidArgument(`${at}: ${describe(key)} is not a sysctl name`);
    // Both separators are accepted (the kubelet's rule): the first one used is the separator.
    const dotted = key.includes('/') && (!key.includes('.') || key.indexOf('/') < key.indexOf('.')) ? key.replace(/[./]/g, (c) => (c === '/' ? '.' : '/')) : key;
    const kind = sysctlNamespace(dotted);
    if (!kind) throw invalidArgument(`${at}: sysctl ${dotted} is not namespaced (only IPC, network and kernel.domainname sysctls can be set for a pod)`);
    if (kind === 'net' && ns.hostNetwork) throw invalidArgument(`${at}: sysctl ${dotted} cannot be set for a pod on the host network`);
    if (kind === 'ipc' && ns.hostIpc) throw invalidArgument(`${at}: sysctl ${dotted} cannot be set for a pod in the host IPC namespace`);
    if (!perDevice(dotted) && !host.sysctlExists(dotted)) throw invalidArgument(`${at}: sysctl ${dotted} does not exist on this host`);
    checkText(value, at, { max: 4096 });
  }
}

/** `0-3,5,7-8`: ascending ranges of ids, each within `allowed`. */
export function checkCpuset(value: string, field: string, allowed: ReadonlySet<number>): void {
  if (!value) return;
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(value)) throw invalidArgument(`${field} ${describe(value)} is not a list of ids and ranges (like 0-3,5)`);
  for (const part of value.split(',')) {
    const [a, b = a] = part.split('-').map(Number) as [number, number?];
    if (b! < a) throw invalidArgument(`${field} ${describe(value)}: range ${part} is reversed`);
    for (const n of [a, b!]) {
      if (allowed.size > 0 && !allowed.has(n)) {
        throw invalidArgument(`${field} ${describe(value)}: ${n} is not on this host (available: ${[...allowed].sort((x, y) => x - y).join(',')})`);
      }
    }
  }
}

export function checkResources(r: LinuxContainerResources__Output | null | undefined, field: string, host: HostLimits): void {
  if (!r) return;
  if (r.cpu_period !== 0) checkUint(r.cpu_period, `${field}.cpu_period`, CPU_PERIOD.max, CPU_PERIOD.min);
  // -1 (or 0) is "no limit"; the kernel's smallest quota is 1 ms.
  if (r.cpu_quota !== 0 && r.cpu_quota !== -1) checkUint(r.cpu_quota, `${field}.cpu_quota`, CPU_QUOTA.max, CPU_QUOTA.min);
  checkUint(r.cpu_shares, `${field}.cpu_shares`, MAX_CPU_SHARES);
  if (r.memory_limit_in_bytes !== 0) checkUint(r.memory_limit_in_bytes, `${field}.memory_limit_in_bytes`, Number.MAX_SAFE_INTEGER, MIN_MEMORY_BYTES);
  const swap = r.memory_swap_limit_in_bytes;
  if (swap !== 0 && swap !== -1) {
    checkUint(swap, `${field}.memory_swap_limit_in_bytes`, Number.MAX_SAFE_INTEGER, 1);
    if (r.memory_limit_in_bytes > 0 && swap < r.memory_limit_in_bytes) {
      throw invalidArgument(`${field}.memory_swap_limit_in_bytes ${swap} is below memory_limit_in_bytes ${r.memory_limit_in_bytes}`);
    }
  }
  if (!Number.isInteger(r.oom_score_adj) || r.oom_score_adj < -1000 || r.oom_score_adj > 1000) {
    throw invalidArgument(`${field}.oom_score_adj ${r.oom_score_adj} is out of range (-1000..1000)`);
  }
  checkCpuset(r.cpuset_cpus, `${field}.cpuset_cpus`, host.cpus);
  checkCpuset(r.cpuset_mems, `${field}.cpuset_mems`, host.mems);
  r.hugepage_limits.forEach((h, i) => {
    if (!/^\d+(B|KB|MB|GB|TB|PB)$/.test(h.page_size)) throw invalidArgument(`${field}.hugepage_limits[${i}].page_size ${describe(h.page_size)} is not a page size (like 2MB)`);
    if (host.hugepageSizes?.size && !host.hugepageSizes.has(h.page_size)) {
      throw invalidArgument(`${field}.hugepage_limits[${i}].page_size ${h.page_size} is not a hugepage size of this host (${[...host.hugepageSizes].join(', ')})`);
    }
  });
  for (const [k, v] of Object.entries(r.unified ?? {})) {
    if (!/^[a-z][a-z0-9_]*\.[a-z0-9_.]+$/.test(k) || k.includes('..')) throw invalidArgument(`${field}.unified: ${describe(k)} is not a cgroup file name`);
    checkText(v, `${field}.unified[${JSON.stringify(k)}]`, { max: 4096 });
  }
}

/** cgroupfs wants an absolute path; the systemd form is a slice name (or a path of slices). Never `..`. */
export function checkCgroupParent(value: string, field: string): void {
  if (!value) return;
  checkText(value, field, { max: 4096 });
  if (value.split('/').some((p) => p === '..' || p === '.')) throw invalidArgument(`${field} ${describe(value)} must not contain "." or ".." components`);
  if (value.endsWith('.slice')) {
    if (!/^[A-Za-z0-9_.@\\:/-]+$/.test(value)) throw invalidArgument(`${field} ${describe(value)} is not a systemd slice`);
    return;
  }
  if (!value.startsWith('/')) throw invalidArgument(`${field} ${describe(value)} must be an absolute cgroup path (or a systemd .slice)`);
  if (value.includes(':')) throw invalidArgument(`${field} ${describe(value)} must not contain ":"`);
}

function checkHostname(value: string, field: string): void {
  if (!value) return;
  checkText(value, field, { max: MAX_HOSTNAME });
  if (!/^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/.test(value)) throw invalidArgument(`${field} ${describe(value)} is not a valid host name`);
}

export function checkSandboxConfig(config: PodSandboxConfig__Output, host: HostLimits): void {
  const md = config.metadata;
  if (!md) throw invalidArgument('config.metadata is required');
  checkText(md.name, 'config.metadata.name', { required: true, max: MAX_NAME });
  checkText(md.namespace, 'config.metadata.namespace', { required: true, max: MAX_NAME });
  checkText(md.uid, 'config.metadata.uid', { required: true, max: MAX_NAME });
  checkHostname(config.hostname, 'config.hostname');
  checkAbsolutePath(config.log_directory, 'config.log_directory');
  checkMetadataSize(config.labels, config.annotations, 'config');
  const dns = config.dns_config;
  if (dns) {
    dns.servers.forEach((s, i) => {
      if (!isIP(s)) throw invalidArgument(`config.dns_config.servers[${i}] ${describe(s)} is not an IP address`);
    });
    // Each ends up on a line of resolv.conf: no whitespace or control characters inside.
    dns.searches.forEach((s, i) => {
      checkText(s, `config.dns_config.searches[${i}]`, { max: MAX_NAME });
      if (/\s/.test(s)) throw invalidArgument(`config.dns_config.searches[${i}] ${describe(s)} contains whitespace`);
    });
    dns.options.forEach((s, i) => {
      checkText(s, `config.dns_config.options[${i}]`, { max: 256 });
      if (/\s/.test(s)) throw invalidArgument(`config.dns_config.options[${i}] ${describe(s)} contains whitespace`);
    });
  }
  config.port_mappings.forEach((p, i) => {
    const at = `config.port_mappings[${i}]`;
    checkUint(p.container_port, `${at}.container_port`, MAX_PORT, 1);
    checkUint(p.host_port, `${at}.host_port`, MAX_PORT);
    if (p.host_ip && !isIP(p.host_ip)) throw invalidArgument(`${at}.host_ip ${describe(p.host_ip)} is not an IP address`);
    if (!['TCP', 'UDP', 'SCTP'].includes(String(p.protocol))) throw invalidArgument(`${at}.protocol ${String(p.protocol)} is not TCP, UDP or SCTP`);
  });
  const linux = config.linux;
  if (linux) {
    checkCgroupParent(linux.cgroup_parent, 'config.linux.cgroup_parent');
    const ns = linux.security_context?.namespace_options;
    checkSysctls(linux.sysctls, 'config.linux.sysctls', { hostNetwork: ns?.network === 'NODE', hostIpc: ns?.ipc === 'NODE' }, host);
    const sc = linux.security_context;
    if (sc) {
      checkNamespaceOptions(sc.namespace_options, 'config.linux.security_context.namespace_options', false);
      checkUint(sc.run_as_user?.value, 'config.linux.security_context.run_as_user', MAX_ID);
      checkUint(sc.run_as_group?.value, 'config.linux.security_context.run_as_group', MAX_ID);
      sc.supplemental_groups.forEach((g, i) => checkUint(g, `config.linux.security_context.supplemental_groups[${i}]`, MAX_ID));
    }
    checkResources(linux.resources, 'config.linux.resources', host);
    checkResources(linux.overhead, 'config.linux.overhead', host);
  }
}

const NAMESPACE_MODES = new Set<string>(Object.values(NamespaceMode));

/** Modes nodelet can honour: the network is the pod's or the node's; only a container's pid joins a target. */
function checkNamespaceOptions(ns: { network?: unknown; pid?: unknown; ipc?: unknown } | null | undefined, field: string, forContainer: boolean): void {
  if (!ns) return;
  for (const kind of ['network', 'pid', 'ipc'] as const) {
    const mode = String(ns[kind] ?? 'POD');
    if (!NAMESPACE_MODES.has(mode)) throw invalidArgument(`${field}.${kind} ${mode} is not a namespace mode`);
    const allowed = kind === 'network' ? mode === 'POD' || mode === 'NODE' : mode !== 'TARGET' || (kind === 'pid' && forContainer);
    if (!allowed) throw invalidArgument(`${field}.${kind} ${mode} is not supported for a ${forContainer ? 'container' : 'pod'}`);
  }
}

/** log_path is relative to the sandbox's log_directory and must stay inside it. */
export function checkLogPath(logPath: string, field: string): void {
  if (!logPath) return;
  checkText(logPath, field, { max: 4096 });
  if (logPath.startsWith('/')) throw invalidArgument(`${field} ${describe(logPath)} must be relative to the sandbox's log_directory`);
  const normal = posix.normalize(logPath);
  if (normal === '.' || normal.endsWith('/') || logPath.split('/').includes('..')) {
    throw invalidArgument(`${field} ${describe(logPath)} must name a file inside the sandbox's log_directory (no "..")`);
  }
}

const SIGNALS = new Set<string>(Object.values(Signal));
const PROPAGATIONS = new Set<string>(Object.values(MountPropagation));

export function checkContainerConfig(config: ContainerConfig__Output, host: HostLimits): void {
  const md = config.metadata;
  if (!md) throw invalidArgument('config.metadata is required');
  checkText(md.name, 'config.metadata.name', { required: true, max: MAX_NAME });
  if (!config.image) throw invalidArgument('config.image is required');
  checkText(config.image.image, 'config.image.image', { required: true, max: 4096 });
  config.command.forEach((a, i) => checkNoNul(a, `config.command[${i}]`));
  config.args.forEach((a, i) => checkNoNul(a, `config.args[${i}]`));
  if (config.working_dir) {
    checkNoNul(config.working_dir, 'config.working_dir');
    if (!config.working_dir.startsWith('/')) throw invalidArgument(`config.working_dir ${describe(config.working_dir)} is not an absolute path`);
  }
  config.envs.forEach((e, i) => {
    if (!e.key) throw invalidArgument(`config.envs[${i}].key is required`);
    if (e.key.includes('=')) throw invalidArgument(`config.envs[${i}].key ${describe(e.key)} contains "="`);
    checkNoNul(e.key, `config.envs[${i}].key`);
    checkNoNul(e.value, `config.envs[${i}].value`);
  });
  config.mounts.forEach((m, i) => {
    checkAbsolutePath(m.container_path, `config.mounts[${i}].container_path`, { required: true });
    // An image volume names an image instead of a host path.
    if (!m.image?.image) checkAbsolutePath(m.host_path, `config.mounts[${i}].host_path`, { required: true });
    if (!PROPAGATIONS.has(String(m.propagation))) throw invalidArgument(`config.mounts[${i}].propagation ${String(m.propagation)} is not a known propagation`);
  });
  config.devices.forEach((d, i) => {
    checkAbsolutePath(d.host_path, `config.devices[${i}].host_path`, { required: true });
    checkAbsolutePath(d.container_path, `config.devices[${i}].container_path`);
  });
  checkLogPath(config.log_path, 'config.log_path');
  checkMetadataSize(config.labels, config.annotations, 'config');
  const stop = config.stop_signal as unknown;
  if (stop !== undefined && stop !== null && stop !== '' && (typeof stop !== 'string' || !SIGNALS.has(stop))) {
    throw invalidArgument(`config.stop_signal ${String(stop)} is not a known signal`);
  }
  const linux = config.linux;
  if (!linux) return;
  checkResources(linux.resources, 'config.linux.resources', host);
  const sc = linux.security_context;
  if (!sc) return;
  const at = 'config.linux.security_context';
  checkNamespaceOptions(sc.namespace_options, `${at}.namespace_options`, true);
  checkUint(sc.run_as_user?.value, `${at}.run_as_user`, MAX_ID);
  checkUint(sc.run_as_group?.value, `${at}.run_as_group`, MAX_ID);
  sc.supplemental_groups.forEach((g, i) => checkUint(g, `${at}.supplemental_groups[${i}]`, MAX_ID));
  checkText(sc.run_as_username, `${at}.run_as_username`, { max: 256 });
  sc.masked_paths.forEach((p, i) => checkAbsolutePath(p, `${at}.masked_paths[${i}]`, { required: true }));
  sc.readonly_paths.forEach((p, i) => checkAbsolutePath(p, `${at}.readonly_paths[${i}]`, { required: true }));
}

/** The OCI runtime failing to write a sysctl the request named: the request's fault, naming the key. */
export function sysctlFault(err: unknown, sysctls: Record<string, string> | undefined, field: string): NodeletError | undefined {
  const m = /write \/proc\/sys\/([^:"\s]+): ([^"]+)/.exec(err instanceof Error ? err.message : String(err));
  if (!m) return undefined;
  const dotted = m[1]!.replace(/\//g, '.');
  const key = Object.keys(sysctls ?? {}).find((k) => k.replace(/\//g, '.') === dotted || k === dotted) ?? dotted;
  return invalidArgument(`${field}[${JSON.stringify(key)}]: the kernel refused the value ${describe((sysctls ?? {})[key] ?? '')}: ${m[2]!.trim()}`);
}

/** ExecSync / Exec command: at least one word, none with a NUL byte. */
export function checkCommand(cmd: readonly string[] | undefined, field: string): void {
  if (!Array.isArray(cmd) || cmd.length === 0 || !cmd[0]) throw invalidArgument(`${field} is required`);
  cmd.forEach((a, i) => checkNoNul(a, `${field}[${i}]`));
}
