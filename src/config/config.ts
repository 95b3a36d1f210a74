// One typed configuration object for nodelet-cri: built-in defaults, then the config file, then flags.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { invalidArgument } from '../common/errors.js';

export interface MirrorConfig {
  /** Endpoints tried in order, e.g. http://127.0.0.1:5000 */
  endpoints: string[];
  /** Whether the upstream host is tried after every mirror failed (default true, like containerd). */
  fallbackToUpstream: boolean;
}

/** The backend of a handler given as NAME=PATH: the OCI runtime binary under a per-container conmon. */
export const DEFAULT_HANDLER_TYPE = 'runc';

export interface RuntimeHandlerConfig {
  /** Which backend runs this handler's containers (a key of the BackendFactory); absent: the default, an OCI runtime binary under a per-container monitor. */
  type?: string;
  /** Path or name of the OCI runtime binary (runc, crun); empty for a handler whose backend needs none. */
  path: string;
  /** Directory holding the runtime's state (its --root). */
  root?: string;
  /** containerd handlers: the runtime (shim) type, e.g. io.containerd.runc.v2. */
  runtimeType?: string;
}

export const GRPC_SERVERS = ['grpc-js', 'builtin'] as const;
export type GrpcServerKind = (typeof GRPC_SERVERS)[number];

export interface NodeletConfig {
  socket: string;
  root: string;
  runRoot: string;
  logLevel: string;
  /** The gRPC server under the CRI socket: grpc-js (on node:http2), or builtin (nodelet's own HTTP/2 code, src/cri/h2/). */
  grpcServer: GrpcServerKind;
  registry: {
    insecure: string[];
    mirrors: Record<string, MirrorConfig>;
    /** Seconds allowed for a single HTTP request to a registry before retrying. */
    requestTimeoutSeconds: number;
    retries: number;
    /** A manifest or blob download receiving less than 1 KiB in this many seconds has stalled: it fails and is retried. */
    stallTimeoutSeconds: number;
  };
  cni: { confDir: string; binDirs: string[] };
  runtime: {
    defaultHandler: string;
    handlers: Record<string, RuntimeHandlerConfig>;
    conmonPath: string;
    /** Image for the sandbox infra container; empty means the built-in pause. */
    sandboxImage: string;
    /** The containerd that handlers of type containerd run on. */
    containerd: {
      /** Its gRPC socket (a path, or unix://path); empty: nodelet-cri runs its own containerd (root under --root, socket under --run-root). */
      address: string;
      /** The containerd namespace our containers, tasks and snapshots live in. */
      namespace: string;
    };
  };
  streaming: {
    address: string;
    tlsCert?: string;
    tlsKey?: string;
    /** An exec/attach/port-forward connection idle this long is closed; 0 never (the kubelet's streamingConnectionIdleTimeout, 4 h). */
    idleTimeoutSeconds: number;
    /** How long a client may take to open the streams of a SPDY session or a port-forward stream pair (30 s, as the kubelet). */
    streamCreationTimeoutSeconds: number;
  };
  metrics: { address: string };
  /** Caps on one unpacked layer: its tar stream's bytes, and its expansion over the compressed blob. */
  images: { maxLayerBytes: number; maxLayerCompressionRatio: number };
  /** Stats cache refresh: cgroups and network counters, and the slower writable-layer walk. */
  stats: { periodSeconds: number; writableLayerPeriodSeconds: number };
}

export function defaultConfig(): NodeletConfig {
  return {
    socket: '/run/nodelet/cri.sock',
    root: '/var/lib/nodelet',
    runRoot: '/run/nodelet',
    logLevel: 'info',
    grpcServer: 'builtin',
    registry: { insecure: [], mirrors: {}, requestTimeoutSeconds: 30, retries: 3, stallTimeoutSeconds: 60 },
    cni: { confDir: '/etc/cni/net.d', binDirs: ['/usr/lib/cni', '/opt/cni/bin'] },
    runtime: {
      defaultHandler: 'runc',
      handlers: { runc: { path: 'runc' }, crun: { path: 'crun' } },
      conmonPath: 'conmon',
      sandboxImage: '',
      containerd: { address: '', namespace: 'nodelet' },
    },
    streaming: { address: '127.0.0.1:0', idleTimeoutSeconds: 4 * 60 * 60, streamCreationTimeoutSeconds: 30 },
    metrics: { address: '' },
    stats: { periodSeconds: 3, writableLayerPeriodSeconds: 15 },
    images: { maxLayerBytes: 32 * 1024 ** 3, maxLayerCompressionRatio: 200 },
  };
}

/** "123", "64Mi", "32Gi", "10G" → bytes. */
export function parseByteSize(text: string, what: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?)?B?$/i.exec(text.trim());
  if (!m) throw invalidArgument(`${what} ${text}: want a size like 1073741824, 512Mi or 32Gi`);
  const unit = (m[2] ?? '').toUpperCase();
  const power = { '': 0, K: 1, M: 2, G: 3, T: 4 }[unit[0] ?? ''] ?? 0;
  const base = unit.endsWith('I') ? 1024 : 1000;
  const bytes = Math.floor(Number(m[1]) * base ** power);
  if (!(bytes > 0)) throw invalidArgument(`${what} ${text}: want a positive size`);
  return bytes;
}

const FLAGS = {
  socket: { type: 'string' },
  root: { type: 'string' },
  'run-root': { type: 'string' },
  config: { type: 'string' },
  'log-level': { type: 'string' },
  'grpc-server': { type: 'string' },
  'insecure-registry': { type: 'string', multiple: true },
  'registry-mirror': { type: 'string', multiple: true },
  'registry-stall-timeout': { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  'cni-bin-dir': { type: 'string', multiple: true },
  'runtime-handler': { type: 'string', multiple: true },
  'default-runtime': { type: 'string' },
  conmon: { type: 'string' },
  'containerd-address': { type: 'string' },
  'containerd-namespace': { type: 'string' },
  'sandbox-image': { type: 'string' },
  'streaming-address': { type: 'string' },
  'streaming-tls-cert': { type: 'string' },
  'streaming-tls-key': { type: 'string' },
  'stream-idle-timeout': { type: 'string' },
  'metrics-address': { type: 'string' },
  'stats-period': { type: 'string' },
  'max-layer-size': { type: 'string' },
  'max-layer-ratio': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

export const USAGE = `Usage: nodelet-cri [flags]
  --socket PATH                 CRI socket (default /run/nodelet/cri.sock)
  --root DIR                    persistent state (default /var/lib/nodelet)
  --run-root DIR                runtime files (default /run/nodelet)
  --config FILE                 YAML or JSON config file (flags win over it)
  --log-level LEVEL             trace|debug|info|warn|error (default info)
  --grpc-server builtin|grpc-js the gRPC server on the socket: nodelet's own HTTP/2 code (about
                                half the CPU per call; default), or grpc-js on node:http2
  --insecure-registry HOST[:PORT]   allow plain HTTP / unverified TLS (repeatable)
  --registry-mirror REGISTRY=URL    mirror tried first for REGISTRY (repeatable)
  --registry-stall-timeout DURATION  fail (and retry) a manifest or blob download that receives
                                less than 1 KiB in this long (e.g. 60s, 2m; default 60s)
  --cni-conf-dir DIR            CNI configs (default /etc/cni/net.d)
  --cni-bin-dir DIR             CNI plugins (repeatable; default /usr/lib/cni, /opt/cni/bin)
  --runtime-handler NAME=PATH   an OCI runtime handler run under conmon (repeatable; runc and crun built in)
  --runtime-handler NAME=containerd:RUNTIME_TYPE
                                a handler containerd runs (e.g. shim=containerd:io.containerd.runc.v2)
  --default-runtime NAME        handler for an empty runtime_handler (default runc)
  --conmon PATH                 conmon binary (default conmon)
  --containerd-address ADDR     containerd socket for containerd handlers (default: none, nodelet-cri
                                starts its own /usr/bin/containerd under --root and --run-root)
  --containerd-namespace NS     containerd namespace of our containers (default nodelet)
  --sandbox-image REF           infra image instead of the built-in pause
  --streaming-address HOST:PORT exec/attach/port-forward server (default 127.0.0.1:0)
  --stream-idle-timeout DURATION  close an exec/attach/port-forward connection idle this long
                                (e.g. 4h, 30m, 90s, 1h30m; 0 never; default 4h)
  --metrics-address HOST:PORT   Prometheus metrics and /healthz (default off)
  --stats-period SECONDS        how often container and pod stats are sampled (default 3)
  --max-layer-size SIZE         most a layer may unpack to, e.g. 32Gi (default 32Gi)
  --max-layer-ratio N           most a layer over 64Mi may expand per compressed byte (default 200)
`;

export interface ParsedCommandLine {
  config: NodeletConfig;
  help: boolean;
  version: boolean;
}

/** Builds the config from argv (flags) over an optional config file over the defaults. */
export function loadConfig(argv: string[]): ParsedCommandLine {
  let values: ReturnType<typeof parseArgs<{ options: typeof FLAGS; args: string[]; allowPositionals: false }>>['values'];
  try {
    values = parseArgs({ args: argv, options: FLAGS, allowPositionals: false }).values;
  } catch (err) {
    throw invalidArgument((err as Error).message);
  }
  let config = defaultConfig();
  if (values.config) config = mergeConfigFile(config, readConfigFile(values.config));
  if (values.socket) config.socket = values.socket;
  if (values.root) config.root = values.root;
  if (values['run-root']) config.runRoot = values['run-root'];
  if (values['log-level']) config.logLevel = values['log-level'];
  if (values['grpc-server'] !== undefined) config.grpcServer = values['grpc-server'] as GrpcServerKind;
  if (!GRPC_SERVERS.includes(config.grpcServer)) throw invalidArgument(`grpcServer (--grpc-server): want ${GRPC_SERVERS.join(' or ')}, not ${JSON.stringify(config.grpcServer)}`);
  for (const host of values['insecure-registry'] ?? []) config.registry.insecure.push(host);
  for (const spec of values['registry-mirror'] ?? []) {
    const eq = spec.indexOf('=');
    if (eq <= 0) throw invalidArgument(`--registry-mirror ${spec}: want REGISTRY=URL`);
    const registry = spec.slice(0, eq);
    const url = spec.slice(eq + 1);
    const m = (config.registry.mirrors[registry] ??= { endpoints: [], fallbackToUpstream: true });
    m.endpoints.push(url);
  }
  if (values['registry-stall-timeout'] !== undefined) {
    const seconds = parseDuration(values['registry-stall-timeout']);
    if (seconds === undefined) throw invalidArgument(`--registry-stall-timeout ${values['registry-stall-timeout']}: want a duration such as 60s or 2m`);
    config.registry.stallTimeoutSeconds = seconds;
  }
  {
    const v = config.registry.stallTimeoutSeconds;
    if (typeof v !== 'number' || !(v > 0)) throw invalidArgument(`registry.stallTimeoutSeconds: want a positive number of seconds, not ${JSON.stringify(v)}`);
  }
  if (values['cni-conf-dir']) config.cni.confDir = values['cni-conf-dir'];
  if (values['cni-bin-dir']?.length) config.cni.binDirs = [...values['cni-bin-dir']];
  for (const spec of values['runtime-handler'] ?? []) {
    const { name, handler } = parseRuntimeHandler(spec);
    config.runtime.handlers[name] = handler;
  }
  if (values['default-runtime']) config.runtime.defaultHandler = values['default-runtime'];
  if (values.conmon) config.runtime.conmonPath = values.conmon;
  if (values['containerd-address'] !== undefined) config.runtime.containerd.address = values['containerd-address'];
  if (values['containerd-namespace'] !== undefined) config.runtime.containerd.namespace = values['containerd-namespace'];
  checkRuntimeConfig(config);
  if (values['sandbox-image'] !== undefined) config.runtime.sandboxImage = values['sandbox-image'];
  if (values['streaming-address']) config.streaming.address = values['streaming-address'];
  if (values['streaming-tls-cert']) config.streaming.tlsCert = values['streaming-tls-cert'];
  if (values['streaming-tls-key']) config.streaming.tlsKey = values['streaming-tls-key'];
  if (values['stream-idle-timeout'] !== undefined) {
    const seconds = parseDuration(values['stream-idle-timeout']);
    if (seconds === undefined) throw invalidArgument(`--stream-idle-timeout ${values['stream-idle-timeout']}: want a duration such as 4h, 30m, 90s or 0`);
    config.streaming.idleTimeoutSeconds = seconds;
  }
  for (const key of ['idleTimeoutSeconds', 'streamCreationTimeoutSeconds'] as const) {
    const v = config.streaming[key];
    if (typeof v !== 'number' || !(v >= 0)) throw invalidArgument(`streaming.${key}: want a number of seconds, not ${JSON.stringify(v)}`);
  }
  if (values['metrics-address'] !== undefined) config.metrics.address = values['metrics-address'];
  if (values['stats-period'] !== undefined) {
    const seconds = Number(values['stats-period']);
    if (!(seconds > 0)) throw invalidArgument(`--stats-period ${values['stats-period']}: want a positive number of seconds`);
    config.stats.periodSeconds = seconds;
  }
  if (values['max-layer-size'] !== undefined) config.images.maxLayerBytes = parseByteSize(values['max-layer-size'], '--max-layer-size');
  if (values['max-layer-ratio'] !== undefined) {
    const ratio = Number(values['max-layer-ratio']);
    if (!(ratio >= 1)) throw invalidArgument(`--max-layer-ratio ${values['max-layer-ratio']}: want a number of at least 1`);
    config.images.maxLayerCompressionRatio = ratio;
  }
  if (!config.runtime.handlers[config.runtime.defaultHandler]) {
    throw invalidArgument(`default runtime ${config.runtime.defaultHandler} is not a configured handler`);
  }
  return { config, help: Boolean(values.help), version: Boolean(values.version) };
}

const HANDLER_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/i;
/** containerd's runtime type names: io.containerd.runc.v2, io.containerd.kata.v2, ... */
const CONTAINERD_RUNTIME_TYPE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const CONTAINERD_NAMESPACE = /^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/;

/**
 * `--runtime-handler` values: `NAME=PATH` (an OCI runtime binary under conmon, e.g. crun=/usr/bin/crun)
 * or `NAME=containerd:RUNTIME_TYPE` (containerd runs it, e.g. shim=containerd:io.containerd.runc.v2).
 */
export function parseRuntimeHandler(spec: string): { name: string; handler: RuntimeHandlerConfig } {
  const eq = spec.indexOf('=');
  const name = eq > 0 ? spec.slice(0, eq) : '';
  const value = eq > 0 ? spec.slice(eq + 1) : '';
  if (!HANDLER_NAME.test(name) || value === '') {
    throw invalidArgument(`--runtime-handler ${spec}: want NAME=PATH or NAME=containerd:RUNTIME_TYPE (NAME: letters, digits and dashes)`);
  }
  if (value.startsWith('containerd:')) {
    const runtimeType = value.slice('containerd:'.length);
    if (!CONTAINERD_RUNTIME_TYPE.test(runtimeType)) {
      throw invalidArgument(`--runtime-handler ${spec}: want NAME=containerd:RUNTIME_TYPE with a runtime type such as io.containerd.runc.v2`);
    }
    return { name, handler: { type: 'containerd', path: '', runtimeType } };
  }
  return { name, handler: { path: value } };
}

/** What flags and the config file said about runtimes, checked once both are merged. */
function checkRuntimeConfig(config: NodeletConfig): void {
  for (const [name, h] of Object.entries(config.runtime.handlers)) {
    const where = `runtime.handlers.${name}`;
    if (!HANDLER_NAME.test(name)) throw invalidArgument(`${where}: a handler name is letters, digits and dashes`);
    if (!h || typeof h !== 'object') throw invalidArgument(`${where}: want a mapping (path, or type: containerd and runtimeType)`);
    const type = h.type ?? DEFAULT_HANDLER_TYPE;
    if (type === 'containerd') {
      if (typeof h.runtimeType !== 'string' || !CONTAINERD_RUNTIME_TYPE.test(h.runtimeType)) {
        throw invalidArgument(`${where}.runtimeType: want a containerd runtime type such as io.containerd.runc.v2, not ${JSON.stringify(h.runtimeType)}`);
      }
      h.path ??= '';
    } else if (type === DEFAULT_HANDLER_TYPE) {
      if (typeof h.path !== 'string' || h.path === '') throw invalidArgument(`${where}.path: want the OCI runtime binary (a path or a name in PATH)`);
      if (h.runtimeType !== undefined) throw invalidArgument(`${where}.runtimeType: only for handlers of type containerd`);
    } else {
      throw invalidArgument(`${where}.type: want ${DEFAULT_HANDLER_TYPE} or containerd, not ${JSON.stringify(type)}`);
    }
  }
  const { address, namespace } = config.runtime.containerd;
  // Empty is left to the containerd backend to give a meaning (a containerd of its own); unix:// alone names nothing.
  if (typeof address !== 'string' || address === 'unix://') throw invalidArgument('runtime.containerd.address: want the socket path of containerd (or unix://path)');
  if (typeof namespace !== 'string' || !CONTAINERD_NAMESPACE.test(namespace)) {
    throw invalidArgument(`runtime.containerd.namespace: want letters, digits, '.', '_' and '-', not ${JSON.stringify(namespace)}`);
  }
}

/** A Go-style duration (`4h`, `30m`, `1h30m`, `90s`, `500ms`) or a plain number of seconds, in seconds. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Number(t);
  if (!/^(\d+(\.\d+)?(h|ms|m|s))+$/.test(t)) return undefined;
  const unit: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 };
  let seconds = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s)/g)) seconds += Number(m[1]) * unit[m[2]!]!;
  return seconds;
}

function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw invalidArgument(`config file ${file}: ${(err as Error).message}`);
  }
  try {
    // yaml (~8 MiB of RSS) only when there is a config file to read.
    const { parse } = createRequire(import.meta.url)('yaml') as typeof import('yaml');
    return parse(text);
  } catch (err) {
    throw invalidArgument(`config file ${file}: ${(err as Error).message}`);
  }
}

type Json = Record<string, unknown>;

/** Deep-merges a parsed config file over the config; arrays replace, objects merge, unknown keys are refused. */
export function mergeConfigFile(base: NodeletConfig, file: unknown): NodeletConfig {
  if (file === null || file === undefined) return base;
  if (typeof file !== 'object' || Array.isArray(file)) throw invalidArgument('config file: want a mapping at the top');
  const out = structuredClone(base) as unknown as Json;
  mergeInto(out, file as Json, '');
  const config = out as unknown as NodeletConfig;
  for (const [registry, m] of Object.entries(config.registry.mirrors)) {
    if (!Array.isArray(m.endpoints)) throw invalidArgument(`config file: registry.mirrors.${registry}.endpoints must be a list`);
    m.fallbackToUpstream = m.fallbackToUpstream ?? true;
  }
  return config;
}

// Maps whose keys are names chosen by the user, not fields.
const FREE_MAPS = new Set(['registry.mirrors', 'runtime.handlers']);

function mergeInto(target: Json, source: Json, prefix: string): void {
  for (const [key, value] of Object.entries(source)) {
    const where = prefix ? `${prefix}.${key}` : key;
    if (!FREE_MAPS.has(prefix) && !(key in target)) throw invalidArgument(`config file: unknown key ${where}`);
    const current = target[key];
    if (value && typeof value === 'object' && !Array.isArray(value) && current && typeof current === 'object' && !Array.isArray(current)) {
      mergeInto(current as Json, value as Json, where);
    } else if (FREE_MAPS.has(prefix) && value && typeof value === 'object') {
      target[key] = { ...(value as Json) };
    } else {
      target[key] = value;
    }
  }
}
