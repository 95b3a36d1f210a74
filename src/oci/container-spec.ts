// CRI CreateContainer config → OCI runtime spec, the way the kubelet expects a runtime
// (containerd's CRI) to build it. Pure: everything read from disk is passed in.
import { posix } from 'node:path';
import { internal, invalidArgument } from '../common/errors.js';
import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';
import type { Mount__Output } from '../cri/generated/runtime/v1/Mount.js';
import type { NamespaceMode__Output } from '../cri/generated/runtime/v1/NamespaceMode.js';
import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { SecurityProfile__Output } from '../cri/generated/runtime/v1/SecurityProfile.js';
import { resolveCapabilities } from './capabilities.js';
import {
  allowAllDeviceRules,
  DEFAULT_MASKED_PATHS,
  DEFAULT_PATH_ENV,
  DEFAULT_READONLY_PATHS,
  DEFAULT_RLIMITS,
  defaultDeviceRules,
  defaultMounts,
} from './defaults.js';
import { seccompFor } from './seccomp.js';
import {
  OCI_VERSION,
  type OciDevice,
  type OciDeviceCgroupRule,
  type OciMount,
  type OciNamespace,
  type OciResources,
  type OciRlimit,
  type OciSpec,
} from './types.js';
import { resolveUser } from './user.js';

/** The parts of an OCI image config the container spec uses. */
export interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  StopSignal?: string;
  ExposedPorts?: Record<string, object>;
  Volumes?: Record<string, object>;
}

/** A device node the caller stat'ed on the host. */
export interface HostDevice {
  type: 'c' | 'b' | 'u' | 'p';
  major: number;
  minor: number;
  fileMode: number;
  uid: number;
  gid: number;
}

/** Per-pod files the sandbox owns, bound into each of its containers. */
export interface SandboxPaths {
  hostname?: string;
  hosts?: string;
  resolvConf?: string;
  /** Directory (a tmpfs) bound at /dev/shm. */
  shm?: string;
}

/** Namespace files the container joins (e.g. /proc/<sandbox pid>/ns/net or /run/netns/x). */
export interface NamespacePaths {
  network?: string;
  ipc?: string;
  uts?: string;
  /** The sandbox's pid namespace for POD, the target container's for TARGET. */
  pid?: string;
}

export interface AppArmorHost {
  /** Name of the profile the caller loaded for RuntimeDefault. */
  defaultProfile: string;
}

export interface ContainerSpecInput {
  containerId: string;
  sandboxId: string;
  config: ContainerConfig__Output;
  sandboxConfig: PodSandboxConfig__Output;
  image: ImageConfig;
  /** Image reference for the annotation; defaults to config.image.image. */
  imageName?: string;
  rootfsPath: string;
  /** The image's /etc/passwd and /etc/group contents ('' when absent). */
  passwd: string;
  group: string;
  sandboxPaths: SandboxPaths;
  namespacePaths: NamespacePaths;
  /** cgroup parent; a name ending in .slice selects the systemd driver's path form. */
  cgroupParent?: string;
  cgroupV2?: boolean;
  /** Clamp negative oom_score_adj to 0 (the daemon lacks CAP_SYS_RESOURCE). */
  restrictOomScoreAdj?: boolean;
  /** false: the host has no hugetlb controller, so hugepage_limits are dropped (runc would fail on them). */
  hugetlbController?: boolean;
  /** host_path → device facts, for config.devices. */
  hostDevices?: Record<string, HostDevice>;
  /** Content of the Localhost seccomp profile file, read by the caller. */
  seccompLocalhostProfile?: string;
  /** Present only when the host has AppArmor enabled. */
  appArmor?: AppArmorHost;
  /** Node.js process.arch value for the seccomp architectures; defaults to this host's. */
  arch?: string;
  /** The daemon's own capabilities: what privileged / ADD ALL means. Defaults to every capability. */
  availableCapabilities?: readonly string[];
  /** process.rlimits; defaults to DEFAULT_RLIMITS. Above the daemon's hard limit runc needs CAP_SYS_RESOURCE. */
  rlimits?: readonly OciRlimit[];
  /** The OCI runtime applies "rro" (recursive read-only bind mounts); without it recursive_read_only is refused. */
  recursiveReadOnlyMounts?: boolean;
}

export const ANNOTATION = {
  containerType: 'io.kubernetes.cri.container-type',
  containerName: 'io.kubernetes.cri.container-name',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
  sandboxName: 'io.kubernetes.cri.sandbox-name',
  sandboxNamespace: 'io.kubernetes.cri.sandbox-namespace',
  sandboxUid: 'io.kubernetes.cri.sandbox-uid',
  sandboxLogDirectory: 'io.kubernetes.cri.sandbox-log-directory',
  imageName: 'io.kubernetes.cri.image-name',
} as const;

/** cgroupfs: `<parent>/<id>` (or /nodelet/<id>); systemd (parent is a .slice): `<slice>:nodelet:<id>`. */
export function cgroupsPathFor(parent: string | undefined, id: string): string {
  const p = (parent ?? '').trim();
  if (p.endsWith('.slice')) return `${posix.basename(p)}:nodelet:${id}`;
  if (p === '') return `/nodelet/${id}`;
  return posix.join(p.startsWith('/') ? p : `/${p}`, id);
}

/** The kubelet's rule for combining CRI command/args with the image's Entrypoint/Cmd. */
export function processArgs(command: readonly string[], args: readonly string[], image: ImageConfig): string[] {
  const entrypoint = image.Entrypoint ?? [];
  const cmd = image.Cmd ?? [];
  let result: string[];
  if (command.length > 0) result = [...command, ...args];
  else if (args.length > 0) result = [...entrypoint, ...args];
  else result = [...entrypoint, ...cmd];
  if (result.length === 0) throw invalidArgument('no command specified: neither the container config nor the image has one');
  return result;
}

const envKey = (entry: string) => {
  const i = entry.indexOf('=');
  return i < 0 ? entry : entry.slice(0, i);
};

/** Image Env, overridden key by key by the CRI envs; PATH and HOSTNAME filled in when absent. */
export function processEnv(
  imageEnv: readonly string[],
  criEnvs: readonly { key: string; value: string }[],
  hostname: string,
): string[] {
  const env: string[] = [];
  const index = new Map<string, number>();
  const put = (entry: string) => {
    const key = envKey(entry);
    const at = index.get(key);
    if (at === undefined) {
      index.set(key, env.length);
      env.push(entry);
    } else {
      env[at] = entry;
    }
  };
  for (const e of imageEnv) put(e);
  for (const kv of criEnvs) {
    if (!kv.key) throw invalidArgument('envs: entry with an empty key');
    put(`${kv.key}=${kv.value}`);
  }
  if (!index.has('PATH')) env.unshift(DEFAULT_PATH_ENV);
  if (!index.has('HOSTNAME')) env.push(`HOSTNAME=${hostname}`);
  return env;
}

function cleanDestination(dest: string, field: string): string {
  if (!dest.startsWith('/')) throw invalidArgument(`${field}: container_path "${dest}" is not absolute`);
  const clean = posix.normalize(dest);
  return clean.length > 1 && clean.endsWith('/') ? clean.slice(0, -1) : clean;
}

const depth = (dest: string) => (dest === '/' ? 0 : dest.split('/').length - 1);

/** Stable sort by path depth, so that a parent directory is mounted before what lies beneath it. */
export function sortMounts(mounts: OciMount[]): OciMount[] {
  return mounts
    .map((m, i) => ({ m, i, d: depth(m.destination) }))
    .sort((a, b) => a.d - b.d || a.i - b.i)
    .map((x) => x.m);
}

const PROPAGATION = {
  PROPAGATION_PRIVATE: 'rprivate',
  PROPAGATION_HOST_TO_CONTAINER: 'rslave',
  PROPAGATION_BIDIRECTIONAL: 'rshared',
} as const;

function criMount(m: Mount__Output, index: number, recursiveReadOnlyMounts: boolean): OciMount {
  const field = `mounts[${index}]`;
  if (!m.host_path) throw invalidArgument(`${field}: host_path is empty`);
  if (m.image && m.image.image) throw invalidArgument(`${field}: an image mount reaches the spec builder unresolved (no host path)`);
  const propagation = PROPAGATION[m.propagation] ?? 'rprivate';
  if (m.recursive_read_only) {
    if (!recursiveReadOnlyMounts) throw invalidArgument(`${field}: recursive_read_only is not supported by this runtime handler`);
    if (!m.readonly) throw invalidArgument(`${field}: recursive_read_only needs readonly`);
    // A read-only submount would be undone by mounts propagating in from the host.
    if (propagation !== 'rprivate') throw invalidArgument(`${field}: recursive_read_only needs PROPAGATION_PRIVATE, not ${m.propagation}`);
  }
  return {
    destination: cleanDestination(m.container_path, field),
    type: 'bind',
    source: m.host_path,
    options: ['rbind', propagation, m.readonly ? 'ro' : 'rw', ...(m.recursive_read_only ? ['rro'] : [])],
  };
}

/** Defaults, then the sandbox's files, then the CRI mounts; a later mount at the same destination replaces an earlier one. */
export function containerMounts(
  criMounts: readonly Mount__Output[],
  sandboxPaths: SandboxPaths,
  opts: { privileged: boolean; readonlyRootfs: boolean; recursiveReadOnlyMounts?: boolean },
): { mounts: OciMount[]; rootfsPropagation?: string } {
  const byDestination = new Map<string, OciMount>();
  const add = (m: OciMount) => {
    byDestination.delete(m.destination);
    byDestination.set(m.destination, m);
  };
  for (const m of defaultMounts({ shmPath: sandboxPaths.shm, privileged: opts.privileged })) add(m);
  const access = opts.readonlyRootfs ? 'ro' : 'rw';
  const sandboxFile = (destination: string, source: string | undefined) => {
    if (source) add({ destination, type: 'bind', source, options: ['rbind', 'rprivate', access] });
  };
  sandboxFile('/etc/hostname', sandboxPaths.hostname);
  sandboxFile('/etc/hosts', sandboxPaths.hosts);
  sandboxFile('/etc/resolv.conf', sandboxPaths.resolvConf);

  let rootfsPropagation: string | undefined;
  criMounts.forEach((m, i) => {
    const mount = criMount(m, i, opts.recursiveReadOnlyMounts ?? false);
    if (m.propagation === 'PROPAGATION_BIDIRECTIONAL') rootfsPropagation = 'rshared';
    else if (m.propagation === 'PROPAGATION_HOST_TO_CONTAINER' && rootfsPropagation !== 'rshared') rootfsPropagation = 'rslave';
    add(mount);
  });
  const mounts = sortMounts([...byDestination.values()]);
  return rootfsPropagation ? { mounts, rootfsPropagation } : { mounts };
}

function devicesFor(
  config: ContainerConfig__Output,
  hostDevices: Record<string, HostDevice>,
): { devices: OciDevice[]; rules: OciDeviceCgroupRule[] } {
  const devices: OciDevice[] = [];
  const rules: OciDeviceCgroupRule[] = [];
  config.devices.forEach((d, i) => {
    const field = `devices[${i}]`;
    const host = hostDevices[d.host_path];
    if (!host) throw invalidArgument(`${field}: host device ${d.host_path} not found`);
    const access = d.permissions || 'rwm';
    if (!/^[rwm]{1,3}$/.test(access)) throw invalidArgument(`${field}: permissions "${d.permissions}" is not a combination of r, w, m`);
    const path = d.container_path ? cleanDestination(d.container_path, field) : d.host_path;
    devices.push({ path, type: host.type, major: host.major, minor: host.minor, fileMode: host.fileMode, uid: host.uid, gid: host.gid });
    if (host.type === 'c' || host.type === 'b') {
      rules.push({ allow: true, type: host.type, major: host.major, minor: host.minor, access });
    }
  });
  return { devices, rules };
}

/** linux.resources (without devices) and process.oomScoreAdj from the CRI resources. */
export function resourcesFor(
  r: LinuxContainerResources__Output | null | undefined,
  opts: { cgroupV2?: boolean; restrictOomScoreAdj?: boolean; hugetlbController?: boolean },
): { resources: OciResources; oomScoreAdj?: number } {
  const resources: OciResources = {};
  if (!r) return { resources };
  const cpu: NonNullable<OciResources['cpu']> = {};
  if (r.cpu_shares > 0) cpu.shares = r.cpu_shares;
  if (r.cpu_quota !== 0) cpu.quota = r.cpu_quota;
  if (r.cpu_period > 0) cpu.period = r.cpu_period;
  if (r.cpuset_cpus) cpu.cpus = r.cpuset_cpus;
  if (r.cpuset_mems) cpu.mems = r.cpuset_mems;
  if (Object.keys(cpu).length > 0) resources.cpu = cpu;
  const memory: NonNullable<OciResources['memory']> = {};
  if (r.memory_limit_in_bytes > 0) memory.limit = r.memory_limit_in_bytes;
  if (r.memory_swap_limit_in_bytes !== 0) memory.swap = r.memory_swap_limit_in_bytes;
  if (Object.keys(memory).length > 0) resources.memory = memory;
  // The kubelet sends a limit for every page size the kernel lists, whether or not the controller is there.
  if (r.hugepage_limits.length > 0 && opts.hugetlbController !== false) {
    resources.hugepageLimits = r.hugepage_limits.map((h) => ({ pageSize: h.page_size, limit: h.limit }));
  }
  // runc refuses a unified map on a cgroup v1 host.
  if (opts.cgroupV2 && Object.keys(r.unified ?? {}).length > 0) resources.unified = { ...r.unified };
  let oomScoreAdj = r.oom_score_adj;
  if (opts.restrictOomScoreAdj && oomScoreAdj < 0) oomScoreAdj = 0;
  return { resources, oomScoreAdj };
}

type NamespaceModes = { network: NamespaceMode__Output; pid: NamespaceMode__Output; ipc: NamespaceMode__Output };

function joined(type: OciNamespace['type'], path: string | undefined, what: string): OciNamespace {
  if (!path) throw internal(`container spec: no ${what} namespace path to join`);
  return { type, path };
}

/** Namespaces of a container that joins its sandbox's. */
export function containerNamespaces(modes: NamespaceModes, paths: NamespacePaths, cgroupV2: boolean): OciNamespace[] {
  const ns: OciNamespace[] = [{ type: 'mount' }];
  if (modes.network !== 'NODE') {
    ns.push(joined('network', paths.network, 'network'));
    ns.push(joined('uts', paths.uts, 'uts'));
  }
  if (modes.ipc === 'CONTAINER') ns.push({ type: 'ipc' });
  else if (modes.ipc !== 'NODE') ns.push(joined('ipc', paths.ipc, 'ipc'));
  switch (modes.pid) {
    case 'CONTAINER':
      ns.push({ type: 'pid' });
      break;
    case 'POD':
      ns.push(joined('pid', paths.pid, 'sandbox pid'));
      break;
    case 'TARGET':
      ns.push(joined('pid', paths.pid, 'target container pid'));
      break;
    case 'NODE':
      break;
  }
  if (cgroupV2) ns.push({ type: 'cgroup' });
  return ns;
}

/** AppArmor profile name for process.apparmorProfile, or undefined for none. */
export function appArmorProfileFor(
  profile: SecurityProfile__Output | null | undefined,
  legacy: string,
  privileged: boolean,
  host: AppArmorHost | undefined,
): string | undefined {
  if (!host) return undefined;
  if (profile) {
    if (profile.profile_type === 'Unconfined') return undefined;
    if (profile.profile_type === 'Localhost') {
      if (!profile.localhost_ref) throw invalidArgument('apparmor: Localhost profile without localhost_ref');
      return profile.localhost_ref;
    }
    return host.defaultProfile;
  }
  const l = legacy.trim();
  if (l === 'unconfined') return undefined;
  if (l.startsWith('localhost/')) return l.slice('localhost/'.length);
  if (l === '' && privileged) return undefined;
  return host.defaultProfile;
}

export function buildContainerSpec(input: ContainerSpecInput): OciSpec {
  const { config, sandboxConfig } = input;
  const sc = config.linux?.security_context ?? null;
  const sandboxSc = sandboxConfig.linux?.security_context ?? null;
  const privileged = sc?.privileged ?? false;
  const readonlyRootfs = sc?.readonly_rootfs ?? false;
  const nsOpts = sc?.namespace_options ?? sandboxSc?.namespace_options ?? null;
  const modes: NamespaceModes = {
    network: nsOpts?.network ?? 'POD',
    pid: nsOpts?.pid ?? 'CONTAINER',
    ipc: nsOpts?.ipc ?? 'POD',
  };
  if (nsOpts?.userns_options && nsOpts.userns_options.mode !== 'NODE') {
    throw invalidArgument('namespace_options.userns_options: user namespaces are not supported');
  }

  const args = processArgs(config.command, config.args, input.image);
  const hostname = sandboxConfig.hostname;
  const env = processEnv(input.image.Env ?? [], config.envs, hostname);
  const user = resolveUser({
    runAsUser: sc?.run_as_user ? sc.run_as_user.value : undefined,
    runAsUsername: sc?.run_as_username || undefined,
    runAsGroup: sc?.run_as_group ? sc.run_as_group.value : undefined,
    imageUser: input.image.User,
    supplementalGroups: sc?.supplemental_groups ?? [],
    strictSupplementalGroups: sc?.supplemental_groups_policy === 'Strict',
    passwd: input.passwd,
    group: input.group,
  });
  const capabilities = resolveCapabilities(sc?.capabilities, privileged, input.availableCapabilities);
  const { resources, oomScoreAdj } = resourcesFor(config.linux?.resources, input);
  const { devices, rules } = devicesFor(config, input.hostDevices ?? {});
  resources.devices = privileged ? allowAllDeviceRules() : [...defaultDeviceRules(), ...rules];
  const { mounts, rootfsPropagation } = containerMounts(config.mounts, input.sandboxPaths, {
    privileged,
    readonlyRootfs,
    recursiveReadOnlyMounts: input.recursiveReadOnlyMounts,
  });
  const namespaces = containerNamespaces(modes, input.namespacePaths, input.cgroupV2 ?? false);

  const spec: OciSpec = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: config.tty,
      user,
      args,
      env,
      cwd: config.working_dir || input.image.WorkingDir || '/',
      capabilities,
      rlimits: (input.rlimits ?? DEFAULT_RLIMITS).map((r) => ({ ...r })),
      noNewPrivileges: sc?.no_new_privs ?? false,
    },
    root: { path: input.rootfsPath, readonly: readonlyRootfs },
    mounts,
    annotations: {
      ...config.annotations,
      [ANNOTATION.containerType]: 'container',
      [ANNOTATION.sandboxId]: input.sandboxId,
      [ANNOTATION.sandboxName]: sandboxConfig.metadata?.name ?? '',
      [ANNOTATION.sandboxNamespace]: sandboxConfig.metadata?.namespace ?? '',
      [ANNOTATION.sandboxUid]: sandboxConfig.metadata?.uid ?? '',
      [ANNOTATION.containerName]: config.metadata?.name ?? '',
      [ANNOTATION.imageName]: input.imageName ?? config.image?.image ?? '',
    },
    linux: {
      namespaces,
      cgroupsPath: cgroupsPathFor(input.cgroupParent, input.containerId),
      resources,
    },
  };
  if (oomScoreAdj !== undefined) spec.process.oomScoreAdj = oomScoreAdj;
  // Only a container in the pod's UTS namespace may set its name; host-network pods keep the node's.
  if (modes.network !== 'NODE' && hostname) spec.hostname = hostname;
  if (devices.length > 0) spec.linux.devices = devices;
  if (rootfsPropagation) spec.linux.rootfsPropagation = rootfsPropagation;
  const sysctls = sandboxConfig.linux?.sysctls ?? {};
  if (Object.keys(sysctls).length > 0) spec.linux.sysctl = { ...sysctls };

  if (!privileged) {
    spec.linux.maskedPaths = sc?.masked_paths?.length ? [...sc.masked_paths] : [...DEFAULT_MASKED_PATHS];
    spec.linux.readonlyPaths = sc?.readonly_paths?.length ? [...sc.readonly_paths] : [...DEFAULT_READONLY_PATHS];
    const seccomp = seccompFor(
      sc?.seccomp,
      sc?.seccomp_profile_path ?? '',
      capabilities.bounding,
      input.seccompLocalhostProfile,
      input.arch,
    );
    if (seccomp) spec.linux.seccomp = seccomp;
  }
  const apparmor = appArmorProfileFor(sc?.apparmor, sc?.apparmor_profile ?? '', privileged, input.appArmor);
  if (apparmor) spec.process.apparmorProfile = apparmor;
  return spec;
}
