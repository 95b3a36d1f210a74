// Pod spec → CRI configs: sandbox config, container config, DNS, env. Pure except env lookups passed in.
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import path from 'node:path';
import { invalidArgument } from '../common/errors.js';
import { containerLinuxResources, qosClassOf } from './qos.js';

import { TERMINATION_MESSAGE_PATH_ANNOTATION, TERMINATION_MESSAGE_POLICY_ANNOTATION } from './termination-message.js';
export const POD_UID_LABEL = 'io.kubernetes.pod.uid';
export const POD_NAME_LABEL = 'io.kubernetes.pod.name';
export const POD_NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
export const CONTAINER_NAME_LABEL = 'io.kubernetes.container.name';
export const CONTAINER_KIND_ANNOTATION = 'io.nodelet.container.kind';
export const RESTART_COUNT_ANNOTATION = 'io.kubernetes.container.restartCount';

export interface ResolvedDns {
  servers: string[];
  searches: string[];
  options: string[];
}

export interface DnsContext {
  clusterDns: string[];
  clusterDomain: string;
  /** The host's resolv.conf, for dnsPolicy Default. */
  hostResolvConf: string;
}

export function parseResolvConf(text: string): ResolvedDns {
  const dns: ResolvedDns = { servers: [], searches: [], options: [] };
  for (const raw of text.split('\n')) {
    const fields = raw.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (fields[0] === 'nameserver' && fields[1]) dns.servers.push(fields[1]);
    else if (fields[0] === 'search' || fields[0] === 'domain') dns.searches = fields.slice(1);
    else if (fields[0] === 'options') dns.options.push(...fields.slice(1));
  }
  return dns;
}

/** The kubelet's DNS rules: ClusterFirst (→ Default without cluster DNS or on host network), Default, None; dnsConfig merged on top. */
export function podDns(pod: V1Pod, ctx: DnsContext): ResolvedDns {
  const spec = pod.spec!;
  let policy = spec.dnsPolicy ?? 'ClusterFirst';
  if (policy === 'ClusterFirst' && spec.hostNetwork) policy = 'Default';
  if (policy === 'ClusterFirstWithHostNet') policy = 'ClusterFirst';
  if (policy === 'ClusterFirst' && ctx.clusterDns.length === 0) policy = 'Default';
  let dns: ResolvedDns;
  if (policy === 'None') dns = { servers: [], searches: [], options: [] };
  else if (policy === 'Default') dns = parseResolvConf(ctx.hostResolvConf);
  else {
    const ns = pod.metadata?.namespace ?? 'default';
    const d = ctx.clusterDomain;
    const host = parseResolvConf(ctx.hostResolvConf);
    dns = { servers: [...ctx.clusterDns], searches: [`${ns}.svc.${d}`, `svc.${d}`, d, ...host.searches], options: ['ndots:5'] };
  }
  const extra = spec.dnsConfig;
  if (extra) {
    dns.servers = unique([...dns.servers, ...(extra.nameservers ?? [])]);
    dns.searches = unique([...dns.searches, ...(extra.searches ?? [])]);
    const byName = new Map(dns.options.map((o) => [o.split(':')[0], o]));
    for (const o of extra.options ?? []) if (o.name) byName.set(o.name, o.value !== undefined ? `${o.name}:${o.value}` : o.name);
    dns.options = [...byName.values()];
  }
  dns.searches = dns.searches.slice(0, 32);
  return dns;
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}

export function podLogDirectory(logsRoot: string, pod: V1Pod): string {
  const m = pod.metadata!;
  return path.join(logsRoot, `${m.namespace}_${m.name}_${m.uid}`);
}

function namespaceMode(host: boolean | undefined, pod: 'POD' | 'CONTAINER' = 'POD'): string {
  return host ? 'NODE' : pod;
}

export function namespaceOptions(pod: V1Pod): Record<string, string> {
  const spec = pod.spec!;
  return {
    network: namespaceMode(spec.hostNetwork),
    pid: namespaceMode(spec.hostPID, spec.shareProcessNamespace ? 'POD' : 'CONTAINER'),
    ipc: namespaceMode(spec.hostIPC),
  };
}

export function sandboxConfigFor(pod: V1Pod, attempt: number, dns: ResolvedDns, logsRoot: string, cgroupParent = ''): Record<string, any> {
  const m = pod.metadata!;
  const spec = pod.spec!;
  let hostname = spec.hostNetwork ? '' : (spec.hostname ?? m.name!);
  if (hostname.length > 63) hostname = hostname.slice(0, 63).replace(/[-.]+$/, '');
  const portMappings = [...(spec.initContainers ?? []), ...spec.containers]
    .flatMap((c) => c.ports ?? [])
    .filter((p) => p.hostPort)
    .map((p) => ({ protocol: p.protocol ?? 'TCP', container_port: p.containerPort, host_port: p.hostPort, host_ip: p.hostIP ?? '' }));
  const sc = spec.securityContext ?? {};
  return {
    metadata: { name: m.name, namespace: m.namespace, uid: m.uid, attempt },
    hostname,
    log_directory: podLogDirectory(logsRoot, pod),
    dns_config: dns,
    port_mappings: portMappings,
    labels: { ...(m.labels ?? {}), [POD_NAME_LABEL]: m.name!, [POD_NAMESPACE_LABEL]: m.namespace!, [POD_UID_LABEL]: m.uid! },
    annotations: { ...(m.annotations ?? {}) },
    linux: {
      cgroup_parent: cgroupParent,
      security_context: {
        namespace_options: namespaceOptions(pod),
        run_as_user: sc.runAsUser !== undefined ? { value: sc.runAsUser } : undefined,
        run_as_group: sc.runAsGroup !== undefined ? { value: sc.runAsGroup } : undefined,
        supplemental_groups: supplementalGroups(pod),
        seccomp: seccompProfile(sc.seccompProfile, '/var/lib/kubelet/seccomp'),
      },
      sysctls: Object.fromEntries((sc.sysctls ?? []).map((s) => [s.name, s.value])),
    },
  };
}

export interface EnvContext {
  nodeName: string;
  podIP: string;
  podIPs: string[];
  hostIP: string;
  /** Reads a ConfigMap's or Secret's data (secret values already decoded); undefined when it does not exist. */
  lookup(kind: 'ConfigMap' | 'Secret', namespace: string, name: string): Promise<Record<string, string> | undefined>;
  /** The Services' variables (service-env.ts): the container's own env overrides them and may refer to them. */
  serviceEnv?: Map<string, string>;
}

export function fieldRefValue(pod: V1Pod, fieldPath: string, ctx: EnvContext): string {
  const m = pod.metadata!;
  const labelMatch = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (labelMatch) return (labelMatch[1] === 'labels' ? m.labels : m.annotations)?.[labelMatch[2]] ?? '';
  switch (fieldPath) {
    case 'metadata.name': return m.name ?? '';
    case 'metadata.namespace': return m.namespace ?? '';
    case 'metadata.uid': return m.uid ?? '';
    case 'metadata.labels': return Object.entries(m.labels ?? {}).map(([k, v]) => `${k}="${v}"`).join('\n');
    case 'metadata.annotations': return Object.entries(m.annotations ?? {}).map(([k, v]) => `${k}="${v}"`).join('\n');
    case 'spec.nodeName': return pod.spec?.nodeName ?? ctx.nodeName;
    case 'spec.serviceAccountName': return pod.spec?.serviceAccountName ?? '';
    case 'status.podIP': return ctx.podIP;
    case 'status.podIPs': return ctx.podIPs.join(',');
    case 'status.hostIP': return ctx.hostIP;
    case 'status.hostIPs': return ctx.hostIP;
    default: throw invalidArgument(`unsupported fieldRef ${fieldPath}`);
  }
}

const CPU_UNITS: Record<string, number> = { '': 1, m: 0.001 };

/** Parses a Kubernetes quantity ("100m", "64Mi", "1G", "2") to a number of base units. */
export function parseQuantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^([0-9.]+(?:e[0-9]+)?)([a-zA-Z]*)$/.exec(q.trim());
  if (!m) throw invalidArgument(`bad quantity ${JSON.stringify(q)}`);
  const n = Number(m[1]);
  const suffix = m[2];
  const binary: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
  const decimal: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
  const factor = binary[suffix] ?? decimal[suffix] ?? CPU_UNITS[suffix];
  if (factor === undefined) throw invalidArgument(`bad quantity suffix in ${JSON.stringify(q)}`);
  return n * factor;
}

export function resourceFieldValue(container: V1Container, resource: string, divisor?: string): string {
  const [kind, name] = resource.split('.');
  const table = kind === 'limits' ? container.resources?.limits : container.resources?.requests;
  const raw = table?.[name];
  if (raw === undefined) return '0';
  const value = parseQuantity(raw) / parseQuantity(divisor ?? '1');
  return String(Math.ceil(value));
}

/** $(VAR) references expand from the env defined so far; $$ escapes. */
export function expandVars(text: string, env: Map<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) => {
    if (whole === '$$') return '$';
    return env.has(name!) ? env.get(name!)! : whole;
  });
}

export async function resolveEnv(pod: V1Pod, container: V1Container, ctx: EnvContext): Promise<Map<string, string>> {
  const ns = pod.metadata!.namespace!;
  const env = new Map<string, string>(ctx.serviceEnv ?? []);
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    if (!ref) continue;
    const kind = from.configMapRef ? 'ConfigMap' : 'Secret';
    const data = await ctx.lookup(kind, ns, ref.name!);
    if (!data) {
      if (ref.optional) continue;
      throw invalidArgument(`${kind.toLowerCase()} "${ref.name}" not found`);
    }
    for (const [k, v] of Object.entries(data)) env.set(`${from.prefix ?? ''}${k}`, v);
  }
  for (const e of container.env ?? []) {
    const src = e.valueFrom;
    if (!src) {
      env.set(e.name, expandVars(e.value ?? '', env));
      continue;
    }
    if (src.fieldRef) env.set(e.name, fieldRefValue(pod, src.fieldRef.fieldPath, ctx));
    else if (src.resourceFieldRef) env.set(e.name, resourceFieldValue(container, src.resourceFieldRef.resource, src.resourceFieldRef.divisor as string | undefined));
    else {
      const keyRef = src.configMapKeyRef ?? src.secretKeyRef;
      if (!keyRef) continue;
      const kind = src.configMapKeyRef ? 'ConfigMap' : 'Secret';
      const data = await ctx.lookup(kind, ns, keyRef.name!);
      const value = data?.[keyRef.key];
      if (value === undefined) {
        if (keyRef.optional) continue;
        throw invalidArgument(data ? `key "${keyRef.key}" not found in ${kind.toLowerCase()} "${keyRef.name}"` : `${kind.toLowerCase()} "${keyRef.name}" not found`);
      }
      env.set(e.name, value);
    }
  }
  return env;
}

/** ephemeral: a debug container added through the pods/ephemeralcontainers subresource (`kubectl debug`), run once. */
export type ContainerKind = 'init' | 'app' | 'ephemeral';

export function containerConfigFor(
  pod: V1Pod,
  container: V1Container,
  kind: ContainerKind,
  attempt: number,
  env: Map<string, string>,
  mounts: object[] = [],
  resources: Record<string, number> = containerLinuxResources(container, qosClassOf(pod)),
  extra: {
    /** An ephemeral container's targetContainerName, running: its process namespace is joined. */
    targetId?: string;
    /** Where Localhost seccomp profiles are (the kubelet's <root-dir>/seccomp). */
    seccompRoot?: string;
  } = {},
): Record<string, any> {
  const { targetId, seccompRoot = '/var/lib/kubelet/seccomp' } = extra;
  const m = pod.metadata!;
  const sc = { ...(pod.spec!.securityContext ?? {}), ...(container.securityContext ?? {}) } as Record<string, any>;
  const expand = (list: string[] | undefined) => (list ?? []).map((s) => expandVars(s, env));
  return {
    metadata: { name: container.name, attempt },
    image: { image: container.image },
    command: expand(container.command),
    args: expand(container.args),
    working_dir: container.workingDir ?? '',
    envs: [...env].map(([key, value]) => ({ key, value })),
    mounts,
    labels: {
      [POD_NAME_LABEL]: m.name!,
      [POD_NAMESPACE_LABEL]: m.namespace!,
      [POD_UID_LABEL]: m.uid!,
      [CONTAINER_NAME_LABEL]: container.name,
    },
    annotations: {
      [RESTART_COUNT_ANNOTATION]: String(attempt),
      [CONTAINER_KIND_ANNOTATION]: kind,
      [TERMINATION_MESSAGE_PATH_ANNOTATION]: container.terminationMessagePath ?? '/dev/termination-log',
      [TERMINATION_MESSAGE_POLICY_ANNOTATION]: container.terminationMessagePolicy ?? 'File',
    },
    log_path: path.join(container.name, `${attempt}.log`),
    stdin: container.stdin ?? false,
    stdin_once: container.stdinOnce ?? false,
    tty: container.tty ?? false,
    linux: {
      resources,
      security_context: {
        namespace_options: targetId ? { ...namespaceOptions(pod), pid: 'TARGET', target_id: targetId } : namespaceOptions(pod),
        privileged: sc.privileged ?? false,
        readonly_rootfs: sc.readOnlyRootFilesystem ?? false,
        run_as_user: sc.runAsUser !== undefined ? { value: sc.runAsUser } : undefined,
        run_as_group: sc.runAsGroup !== undefined ? { value: sc.runAsGroup } : undefined,
        run_as_username: '',
        no_new_privs: sc.allowPrivilegeEscalation === false,
        capabilities: sc.capabilities ? { add_capabilities: sc.capabilities.add ?? [], drop_capabilities: sc.capabilities.drop ?? [] } : undefined,
        supplemental_groups: supplementalGroups(pod),
        seccomp: seccompProfile(sc.seccompProfile, seccompRoot),
        ...(sc.appArmorProfile ? { apparmor: appArmorProfile(sc.appArmorProfile) } : {}),
        // procMount Default: the kubelet's masked and read-only /proc paths; Unmasked: none.
        masked_paths: container.securityContext?.procMount === 'Unmasked' ? [] : [...DEFAULT_MASKED_PATHS],
        readonly_paths: container.securityContext?.procMount === 'Unmasked' ? [] : [...DEFAULT_READONLY_PATHS],
      },
    },
  };
}

/** The kubelet's defaults for procMount Default (pkg/securitycontext). */
export const DEFAULT_MASKED_PATHS = [
  '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];
export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** The pod's supplementalGroups, and its fsGroup: the containers can use their volumes through it. */
export function supplementalGroups(pod: V1Pod): number[] {
  const sc = pod.spec?.securityContext;
  const groups = [...(sc?.supplementalGroups ?? [])];
  if (sc?.fsGroup !== undefined && sc.fsGroup !== null && !groups.includes(sc.fsGroup)) groups.push(sc.fsGroup);
  return groups;
}

/** seccompProfile → CRI; none means Unconfined, as the kubelet without SeccompDefault. */
export function seccompProfile(p: { type?: string; localhostProfile?: string } | undefined, root: string): Record<string, string> {
  switch (p?.type) {
    case 'RuntimeDefault':
      return { profile_type: 'RuntimeDefault' };
    case 'Localhost':
      return { profile_type: 'Localhost', localhost_ref: path.join(root, p.localhostProfile ?? '') };
    default:
      return { profile_type: 'Unconfined' };
  }
}

/** appArmorProfile → CRI (a Localhost profile by its loaded name). */
export function appArmorProfile(p: { type?: string; localhostProfile?: string }): Record<string, string> {
  if (p.type === 'Localhost') return { profile_type: 'Localhost', localhost_ref: p.localhostProfile ?? '' };
  return { profile_type: p.type === 'Unconfined' ? 'Unconfined' : 'RuntimeDefault' };
}

/** imagePullPolicy as the apiserver defaults it (static pods are not defaulted by anyone else). */
export function pullPolicyOf(container: V1Container): string {
  if (container.imagePullPolicy) return container.imagePullPolicy;
  const image = container.image ?? '';
  const lastPart = image.split('/').pop() ?? '';
  if (image.includes('@')) return 'IfNotPresent';
  const tag = lastPart.includes(':') ? lastPart.split(':').pop() : undefined;
  return !tag || tag === 'latest' ? 'Always' : 'IfNotPresent';
}
