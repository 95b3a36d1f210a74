// nodelet-agent's configuration: defaults, then a KubeletConfiguration-style file (--config), then flags (the kubelet's names).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import os from 'node:os';
import { invalidArgument } from '../common/errors.js';
import { parseQuantity } from './pod-spec.js';
import { DEFAULT_EVICTION_HARD, parseEvictionHard, type Threshold } from './eviction.js';

export interface AgentConfig {
  kubeconfig?: string;
  /** TLS bootstrap: credentials (a bootstrap token) that may ask for a node client certificate when --kubeconfig has none. */
  bootstrapKubeconfig?: string;
  nodeName: string;
  criEndpoint: string;
  /** The agent's own state directory (the kubelet's --root-dir). */
  root: string;
  /** Where pod log directories are made: <podLogsDir>/<ns>_<name>_<uid>. */
  podLogsDir: string;
  podManifestPath?: string;
  clusterDns: string[];
  clusterDomain: string;
  maxPods: number;
  nodeIp?: string;
  kubeletApiAddress: string;
  tlsCertFile?: string;
  tlsPrivateKeyFile?: string;
  clientCaFile?: string;
  /** Where the node's certificates are kept (the kubelet's --cert-dir; default <root>/pki). */
  certDir?: string;
  /** Renew the client certificate through CSRs before it expires (the kubelet's rotateCertificates). */
  rotateCertificates: boolean;
  /** Get (and renew) the kubelet API's serving certificate through CSRs (kubelet-serving; serverTLSBootstrap). */
  rotateServerCertificates: boolean;
  /** Where CSI plugins put their registration sockets (default <root>/plugins_registry). */
  pluginsRegistryDir?: string;
  /** The node's log directory, served by the kubelet API under /logs/ (default /var/log). */
  nodeLogDir?: string;
  logLevel: string;
  /** How often each pod worker re-checks its containers through CRI when nothing woke it (the kubelet's syncFrequency). */
  podResyncMs: number;
  /** The PLEG's relist period (the kubelet's 1 s), and its safety-net period while GetContainerEvents delivers. */
  plegRelistMs: number;
  plegEventedRelistMs: number;
  /** Use the runtime's GetContainerEvents stream when it has one (the kubelet's EventedPLEG). */
  eventedPleg: boolean;
  /** How often a static pod manifest directory is re-read. */
  manifestPollMs: number;
  leaseRenewSeconds: number;
  nodeStatusReportSeconds: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** Container log rotation (the kubelet's containerLogMaxSize, containerLogMaxFiles, containerLogMonitorInterval). */
  containerLogMaxSizeBytes: number;
  containerLogMaxFiles: number;
  containerLogMonitorIntervalMs: number;
  /** Pod cgroups under <cgroupRoot>/kubepods[/burstable|/besteffort]/pod<uid> (the kubelet's cgroupsPerQOS, cgroupfs driver). */
  cgroupsPerQOS: boolean;
  cgroupRoot: string;
  /** --eviction-hard: node pressure conditions and eviction (the kubelet's defaults). */
  evictionHard: Threshold[];
  /** How often the signals are observed and one pod may be evicted (the kubelet's 10 s housekeeping). */
  evictionIntervalMs: number;
  /** --kube-reserved / --system-reserved: taken off the capacity in allocatable (cpu in cores, others in bytes). */
  kubeReserved: Record<string, number>;
  systemReserved: Record<string, number>;
  /** Image GC (--image-gc-high-threshold, --image-gc-low-threshold, --minimum-image-ttl-duration). */
  imageGcHighThresholdPercent: number;
  imageGcLowThresholdPercent: number;
  imageMinimumGcAgeMs: number;
  imageGcIntervalMs: number;
}

export function defaultAgentConfig(): AgentConfig {
  return {
    nodeName: os.hostname().toLowerCase(),
    criEndpoint: 'unix:///run/nodelet/cri.sock',
    root: '/var/lib/nodelet-agent',
    podLogsDir: '/var/log/pods',
    clusterDns: [],
    clusterDomain: 'cluster.local',
    maxPods: 110,
    kubeletApiAddress: '0.0.0.0:10250',
    logLevel: 'info',
    podResyncMs: 10_000,
    plegRelistMs: 1000,
    plegEventedRelistMs: 10_000,
    eventedPleg: true,
    manifestPollMs: 1000,
    leaseRenewSeconds: 10,
    nodeStatusReportSeconds: 60,
    backoffInitialMs: 10_000,
    backoffMaxMs: 300_000,
    containerLogMaxSizeBytes: 10 * 1024 * 1024,
    containerLogMaxFiles: 5,
    containerLogMonitorIntervalMs: 10_000,
    cgroupsPerQOS: true,
    cgroupRoot: '/',
    rotateCertificates: false,
    rotateServerCertificates: false,
    evictionHard: parseEvictionHard(DEFAULT_EVICTION_HARD),
    evictionIntervalMs: 10_000,
    kubeReserved: {},
    systemReserved: {},
    imageGcHighThresholdPercent: 85,
    imageGcLowThresholdPercent: 80,
    imageMinimumGcAgeMs: 120_000,
    imageGcIntervalMs: 300_000,
  };
}

const FLAG_OPTIONS = {
  config: { type: 'string' },
  kubeconfig: { type: 'string' },
  'bootstrap-kubeconfig': { type: 'string' },
  'node-name': { type: 'string' },
  'hostname-override': { type: 'string' },
  'cri-endpoint': { type: 'string' },
  'container-runtime-endpoint': { type: 'string' },
  root: { type: 'string' },
  'root-dir': { type: 'string' },
  'pod-logs-dir': { type: 'string' },
  'pod-manifest-path': { type: 'string' },
  'cluster-dns': { type: 'string', multiple: true },
  'cluster-domain': { type: 'string' },
  'max-pods': { type: 'string' },
  'node-ip': { type: 'string' },
  'kubelet-api-address': { type: 'string' },
  'tls-cert-file': { type: 'string' },
  'tls-private-key-file': { type: 'string' },
  'client-ca-file': { type: 'string' },
  'log-level': { type: 'string' },
  'container-log-max-size': { type: 'string' },
  'container-log-max-files': { type: 'string' },
  'cgroup-root': { type: 'string' },
  'cgroups-per-qos': { type: 'string' },
  'eviction-hard': { type: 'string' },
  'kube-reserved': { type: 'string' },
  'system-reserved': { type: 'string' },
  'image-gc-high-threshold': { type: 'string' },
  'image-gc-low-threshold': { type: 'string' },
  'minimum-image-ttl-duration': { type: 'string' },
  'cert-dir': { type: 'string' },
  'rotate-certificates': { type: 'boolean' },
  'rotate-server-certificates': { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

export const AGENT_USAGE = `usage: nodelet-agent [flags]
  --kubeconfig FILE          connect to the cluster (omit for standalone static pods)
  --bootstrap-kubeconfig FILE  TLS bootstrap: when --kubeconfig has no valid client certificate, get one through
                             a CertificateSigningRequest with these credentials and write --kubeconfig
  --node-name NAME           node name (default: hostname)
  --cri-endpoint URL         CRI socket (default unix:///run/nodelet/cri.sock)
  --root DIR                 agent state directory (default /var/lib/nodelet-agent)
  --pod-logs-dir DIR         pod log root (default /var/log/pods)
  --pod-manifest-path DIR    static pod manifests (YAML or JSON)
  --cluster-dns IP           DNS server for ClusterFirst pods (repeatable, or comma separated)
  --cluster-domain DOMAIN    (default cluster.local)
  --max-pods N               (default 110)
  --node-ip IP               address reported for the node
  --kubelet-api-address, --tls-cert-file, --tls-private-key-file, --client-ca-file
  --container-log-max-size Q, --container-log-max-files N   log rotation (default 10Mi, 5; config file:
                             containerLogMaxSize, containerLogMaxFiles, containerLogMonitorInterval)
  --cert-dir DIR             node certificates (default <root>/pki): kubelet-client-current.pem, kubelet-server-current.pem
  --rotate-certificates      renew the client certificate by CSR at 70-90% of its lifetime (config: rotateCertificates)
  --rotate-server-certificates  the kubelet API's serving certificate by CSR (signer kubernetes.io/kubelet-serving,
                             approved by an operator; config: serverTLSBootstrap)
  --cgroup-root PATH         pod cgroups go under PATH/kubepods (default /)
  --cgroups-per-qos BOOL     make the kubepods QoS and pod cgroups (default true)
  --eviction-hard LIST       e.g. memory.available<100Mi,nodefs.available<10% (default the kubelet's:
                             ${DEFAULT_EVICTION_HARD})
  --kube-reserved, --system-reserved cpu=100m,memory=100Mi,ephemeral-storage=1Gi   off the allocatable
  --image-gc-high-threshold N, --image-gc-low-threshold N   percent of the image filesystem (default 85, 80)
  --minimum-image-ttl-duration D   an image is not collected before this age (default 2m)
  --config FILE              KubeletConfiguration-style YAML (flags win)
  --log-level LEVEL`;

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw invalidArgument(`${flag} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

function logMaxSize(value: string, flag: string): number {
  let bytes: number;
  try {
    bytes = parseQuantity(value);
  } catch {
    throw invalidArgument(`${flag} must be a quantity like 10Mi, got ${JSON.stringify(value)}`);
  }
  if (!(bytes > 0)) throw invalidArgument(`${flag} must be positive, got ${JSON.stringify(value)}`);
  return Math.floor(bytes);
}

function logMaxFiles(value: string, flag: string): number {
  const n = positiveInt(value, flag);
  if (n < 2) throw invalidArgument(`${flag} must be at least 2 (the current file and one rotated), got ${n}`);
  return n;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go-style duration ("10s", "1m30s", "500ms") in milliseconds. */
export function parseDuration(value: string, field: string): number {
  const parts = [...String(value).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== String(value)) throw invalidArgument(`${field} must be a duration like 10s, got ${JSON.stringify(value)}`);
  const ms = parts.reduce((sum, p) => sum + Number(p[1]) * DURATION_UNITS[p[2]!]!, 0);
  if (!(ms > 0)) throw invalidArgument(`${field} must be positive, got ${JSON.stringify(value)}`);
  return ms;
}

/** "cpu=100m,memory=100Mi" → cpu in cores, memory and ephemeral-storage in bytes. */
export function parseReserved(value: string, flag: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [key, quantity] = entry.split('=');
    if (!key || quantity === undefined || !['cpu', 'memory', 'ephemeral-storage', 'pid'].includes(key)) {
      throw invalidArgument(`${flag}: ${JSON.stringify(entry)} is not cpu=, memory=, ephemeral-storage= or pid=<quantity>`);
    }
    try {
      out[key] = parseQuantity(quantity);
    } catch {
      throw invalidArgument(`${flag}: ${JSON.stringify(quantity)} is not a quantity`);
    }
  }
  return out;
}

function percent(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 100) throw invalidArgument(`${flag} must be an integer percentage 0-100, got ${JSON.stringify(value)}`);
  return n;
}

function splitList(values: readonly string[] | string | undefined): string[] {
  if (values === undefined) return [];
  const list = Array.isArray(values) ? values : [values as string];
  return list.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

/** Applies a KubeletConfiguration-style document (the keys nodelet-agent understands). */
function applyConfigFile(cfg: AgentConfig, file: string): void {
  const doc = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as Record<string, any>;
  if (typeof doc !== 'object') throw invalidArgument(`config file ${file} is not a mapping`);
  if (doc.kubeconfig) cfg.kubeconfig = String(doc.kubeconfig);
  if (doc.nodeName) cfg.nodeName = String(doc.nodeName);
  if (doc.containerRuntimeEndpoint) cfg.criEndpoint = String(doc.containerRuntimeEndpoint);
  if (doc.rootDir) cfg.root = String(doc.rootDir);
  if (doc.podLogsDir) cfg.podLogsDir = String(doc.podLogsDir);
  if (doc.staticPodPath) cfg.podManifestPath = String(doc.staticPodPath);
  if (doc.clusterDNS) cfg.clusterDns = splitList(doc.clusterDNS);
  if (doc.clusterDomain) cfg.clusterDomain = String(doc.clusterDomain);
  if (doc.maxPods !== undefined) cfg.maxPods = positiveInt(String(doc.maxPods), 'maxPods');
  if (doc.nodeIP) cfg.nodeIp = String(doc.nodeIP);
  if (doc.address || doc.port) cfg.kubeletApiAddress = `${doc.address ?? '0.0.0.0'}:${doc.port ?? 10250}`;
  if (doc.tlsCertFile) cfg.tlsCertFile = String(doc.tlsCertFile);
  if (doc.tlsPrivateKeyFile) cfg.tlsPrivateKeyFile = String(doc.tlsPrivateKeyFile);
  if (doc.authentication?.x509?.clientCAFile) cfg.clientCaFile = String(doc.authentication.x509.clientCAFile);
  if (doc.logLevel) cfg.logLevel = String(doc.logLevel);
  if (doc.containerLogMaxSize !== undefined) cfg.containerLogMaxSizeBytes = logMaxSize(String(doc.containerLogMaxSize), 'containerLogMaxSize');
  if (doc.containerLogMaxFiles !== undefined) cfg.containerLogMaxFiles = logMaxFiles(String(doc.containerLogMaxFiles), 'containerLogMaxFiles');
  if (doc.cgroupRoot) cfg.cgroupRoot = String(doc.cgroupRoot);
  if (doc.cgroupsPerQOS !== undefined) cfg.cgroupsPerQOS = doc.cgroupsPerQOS !== false && String(doc.cgroupsPerQOS) !== 'false';
  if (doc.certDir) cfg.certDir = String(doc.certDir);
  if (doc.rotateCertificates !== undefined) cfg.rotateCertificates = doc.rotateCertificates === true || String(doc.rotateCertificates) === 'true';
  if (doc.serverTLSBootstrap !== undefined) cfg.rotateServerCertificates = doc.serverTLSBootstrap === true || String(doc.serverTLSBootstrap) === 'true';
  if (doc.containerLogMonitorInterval !== undefined) cfg.containerLogMonitorIntervalMs = parseDuration(String(doc.containerLogMonitorInterval), 'containerLogMonitorInterval');
}

export function parseAgentFlags(argv: string[]): AgentConfig & { help: boolean } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: FLAG_OPTIONS, strict: true, allowPositionals: false });
  } catch (err) {
    throw invalidArgument((err as Error).message);
  }
  const v = parsed.values;
  const cfg = defaultAgentConfig();
  if (v.config) applyConfigFile(cfg, v.config);
  if (v.kubeconfig) cfg.kubeconfig = v.kubeconfig;
  if (v['bootstrap-kubeconfig']) cfg.bootstrapKubeconfig = v['bootstrap-kubeconfig'];
  if (cfg.bootstrapKubeconfig && !cfg.kubeconfig) throw invalidArgument('--bootstrap-kubeconfig needs --kubeconfig (where the issued credentials go)');
  const nodeName = v['node-name'] ?? v['hostname-override'];
  if (nodeName) cfg.nodeName = nodeName.toLowerCase();
  const endpoint = v['cri-endpoint'] ?? v['container-runtime-endpoint'];
  if (endpoint) cfg.criEndpoint = endpoint;
  const root = v.root ?? v['root-dir'];
  if (root) cfg.root = root;
  if (v['pod-logs-dir']) cfg.podLogsDir = v['pod-logs-dir'];
  if (v['pod-manifest-path']) cfg.podManifestPath = v['pod-manifest-path'];
  if (v['cluster-dns']) cfg.clusterDns = splitList(v['cluster-dns']);
  if (v['cluster-domain']) cfg.clusterDomain = v['cluster-domain'];
  if (v['max-pods']) cfg.maxPods = positiveInt(v['max-pods'], '--max-pods');
  if (v['node-ip']) cfg.nodeIp = v['node-ip'];
  if (v['kubelet-api-address']) cfg.kubeletApiAddress = v['kubelet-api-address'];
  if (v['tls-cert-file']) cfg.tlsCertFile = v['tls-cert-file'];
  if (v['tls-private-key-file']) cfg.tlsPrivateKeyFile = v['tls-private-key-file'];
  if (v['client-ca-file']) cfg.clientCaFile = v['client-ca-file'];
  if (v['log-level']) cfg.logLevel = v['log-level'];
  if (v['container-log-max-size']) cfg.containerLogMaxSizeBytes = logMaxSize(v['container-log-max-size'], '--container-log-max-size');
  if (v['container-log-max-files']) cfg.containerLogMaxFiles = logMaxFiles(v['container-log-max-files'], '--container-log-max-files');
  if (v['cgroup-root']) cfg.cgroupRoot = v['cgroup-root'];
  if (v['cgroups-per-qos'] !== undefined) cfg.cgroupsPerQOS = v['cgroups-per-qos'] !== 'false';
  if (v['cert-dir']) cfg.certDir = v['cert-dir'];
  if (v['rotate-certificates']) cfg.rotateCertificates = true;
  if (v['rotate-server-certificates']) cfg.rotateServerCertificates = true;
  if (v['eviction-hard'] !== undefined) cfg.evictionHard = parseEvictionHard(v['eviction-hard']);
  if (v['kube-reserved']) cfg.kubeReserved = parseReserved(v['kube-reserved'], '--kube-reserved');
  if (v['system-reserved']) cfg.systemReserved = parseReserved(v['system-reserved'], '--system-reserved');
  if (v['image-gc-high-threshold']) cfg.imageGcHighThresholdPercent = percent(v['image-gc-high-threshold'], '--image-gc-high-threshold');
  if (v['image-gc-low-threshold']) cfg.imageGcLowThresholdPercent = percent(v['image-gc-low-threshold'], '--image-gc-low-threshold');
  if (v['minimum-image-ttl-duration']) cfg.imageMinimumGcAgeMs = parseDuration(v['minimum-image-ttl-duration'], '--minimum-image-ttl-duration');
  if (cfg.imageGcLowThresholdPercent > cfg.imageGcHighThresholdPercent) throw invalidArgument('--image-gc-low-threshold must not be above --image-gc-high-threshold');
  if (!v.help && !cfg.kubeconfig && !cfg.podManifestPath) throw invalidArgument('need --kubeconfig, --pod-manifest-path or both');
  return { ...cfg, help: v.help ?? false };
}
