// CRI RunPodSandbox config → OCI spec of the pod infra ("pause") container, which owns
// the pod's namespaces. Pure: the caller provides the netns file, shm dir and profile contents.
import { invalidArgument } from '../common/errors.js';
import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import { resolveCapabilities } from './capabilities.js';
import { ANNOTATION, appArmorProfileFor, cgroupsPathFor, type AppArmorHost } from './container-spec.js';
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
import { OCI_VERSION, type OciNamespace, type OciRlimit, type OciSpec } from './types.js';

/** The pause process's oom_score_adj: the last thing on the node the OOM killer should pick. */
export const SANDBOX_OOM_SCORE_ADJ = -998;
/** The pause process barely uses CPU; a small weight is enough. */
export const SANDBOX_CPU_SHARES = 2;

export interface SandboxSpecInput {
  sandboxId: string;
  config: PodSandboxConfig__Output;
  rootfsPath: string;
  /** Path of the static pause binary inside the rootfs, e.g. /pause. */
  pausePath: string;
  /** Network namespace file made by the network layer; a fresh one when absent. Ignored for host network. */
  netnsPath?: string;
  /** Per-pod /dev/shm directory (a tmpfs the caller mounted). */
  shmPath?: string;
  /** Overrides config.linux.cgroup_parent. */
  cgroupParent?: string;
  cgroupV2?: boolean;
  restrictOomScoreAdj?: boolean;
  seccompLocalhostProfile?: string;
  appArmor?: AppArmorHost;
  arch?: string;
  /** The daemon's own capabilities: what a privileged sandbox gets. Defaults to every capability. */
  availableCapabilities?: readonly string[];
  /** process.rlimits; defaults to DEFAULT_RLIMITS. */
  rlimits?: readonly OciRlimit[];
}

export function buildSandboxSpec(input: SandboxSpecInput): OciSpec {
  const { config } = input;
  if (!input.pausePath.startsWith('/')) throw invalidArgument(`pause path "${input.pausePath}" is not absolute`);
  const sc = config.linux?.security_context ?? null;
  const privileged = sc?.privileged ?? false;
  const nsOpts = sc?.namespace_options ?? null;
  const hostNetwork = nsOpts?.network === 'NODE';
  const hostIpc = nsOpts?.ipc === 'NODE';
  const hostPid = nsOpts?.pid === 'NODE';
  if (nsOpts?.userns_options && nsOpts.userns_options.mode !== 'NODE') {
    throw invalidArgument('namespace_options.userns_options: user namespaces are not supported');
  }

  const namespaces: OciNamespace[] = [{ type: 'mount' }];
  if (!hostNetwork) {
    namespaces.push(input.netnsPath ? { type: 'network', path: input.netnsPath } : { type: 'network' });
    namespaces.push({ type: 'uts' });
  }
  if (!hostIpc) namespaces.push({ type: 'ipc' });
  // POD and CONTAINER both give the sandbox its own pid namespace, so pause is pid 1 there.
  if (!hostPid) namespaces.push({ type: 'pid' });
  if (input.cgroupV2) namespaces.push({ type: 'cgroup' });

  const capabilities = resolveCapabilities(null, privileged, input.availableCapabilities);
  let oomScoreAdj = SANDBOX_OOM_SCORE_ADJ;
  if (input.restrictOomScoreAdj) oomScoreAdj = Math.max(0, oomScoreAdj);
  const uid = sc?.run_as_user ? sc.run_as_user.value : 0;
  const gid = sc?.run_as_group ? sc.run_as_group.value : 0;
  const additionalGids = [...new Set([gid, ...(sc?.supplemental_groups ?? [])])].sort((a, b) => a - b);

  const spec: OciSpec = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: { uid, gid, additionalGids },
      args: [input.pausePath],
      env: [DEFAULT_PATH_ENV],
      cwd: '/',
      capabilities,
      rlimits: (input.rlimits ?? DEFAULT_RLIMITS).map((r) => ({ ...r })),
      noNewPrivileges: true,
      oomScoreAdj,
    },
    root: { path: input.rootfsPath, readonly: true },
    mounts: defaultMounts({ shmPath: input.shmPath, privileged }),
    annotations: {
      ...config.annotations,
      [ANNOTATION.containerType]: 'sandbox',
      [ANNOTATION.sandboxId]: input.sandboxId,
      [ANNOTATION.sandboxName]: config.metadata?.name ?? '',
      [ANNOTATION.sandboxNamespace]: config.metadata?.namespace ?? '',
      [ANNOTATION.sandboxUid]: config.metadata?.uid ?? '',
      [ANNOTATION.sandboxLogDirectory]: config.log_directory,
    },
    linux: {
      namespaces,
      cgroupsPath: cgroupsPathFor(input.cgroupParent ?? config.linux?.cgroup_parent, input.sandboxId),
      resources: {
        cpu: { shares: SANDBOX_CPU_SHARES },
        devices: privileged ? allowAllDeviceRules() : defaultDeviceRules(),
      },
    },
  };
  if (!hostNetwork && config.hostname) spec.hostname = config.hostname;
  const sysctls = config.linux?.sysctls ?? {};
  if (Object.keys(sysctls).length > 0) spec.linux.sysctl = { ...sysctls };
  if (!privileged) {
    spec.linux.maskedPaths = [...DEFAULT_MASKED_PATHS];
    spec.linux.readonlyPaths = [...DEFAULT_READONLY_PATHS];
    const seccomp = seccompFor(
      sc?.seccomp,
      sc?.seccomp_profile_path ?? '',
      capabilities.bounding,
      input.seccompLocalhostProfile,
      input.arch,
    );
    if (seccomp) spec.linux.seccomp = seccomp;
  }
  const apparmor = appArmorProfileFor(sc?.apparmor, '', privileged, input.appArmor);
  if (apparmor) spec.process.apparmorProfile = apparmor;
  return spec;
}
