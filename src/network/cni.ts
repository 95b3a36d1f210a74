// Our own CNI 1.0 client: picks the network config, runs the plugin chain for a pod, and keeps
// what it ran in a per-sandbox cache so teardown works after a restart or a config change.
//
// `lo` is brought up by a separate loopback plugin call with its own tiny config (as containerd
// does), so any conflist — ours or the admin's — gets a working loopback without listing it.
import { promises as fsp, constants as fsConstants, accessSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { run } from '../common/exec.js';
import { NodeletError, errorMessage, hasCode, internal, invalidArgument } from '../common/errors.js';
import { ensureDir, pathExists, readJsonIfExists, writeJsonAtomic } from '../common/fsutil.js';
import { logger } from '../common/log.js';

export const NETWORK_NOT_READY_REASON = 'NetworkPluginNotReady';
export const DEFAULT_CONFIG_FILE = '10-nodelet.conflist';
/** Top-level key marking a conflist written by ensureDefaultConfig (so setPodCidr only edits ours). */
export const MANAGED_MARKER = 'nodeletManaged';

const CONFIG_EXTENSIONS = new Set(['.conflist', '.conf', '.json']);
const POD_IFNAME = 'eth0';
const DEFAULT_PLUGIN_TIMEOUT_MS = 60_000;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const SAFE_ID = /^[A-Za-z0-9_.-]{1,128}$/;
const PLUGIN_TYPE = /^[A-Za-z0-9_.-]+$/;

export interface PluginConfig {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface NetworkConfigList {
  cniVersion: string;
  name: string;
  plugins: PluginConfig[];
  [key: string]: unknown;
}

export interface LoadedNetwork {
  file: string;
  list: NetworkConfigList;
  /** Written by ensureDefaultConfig. */
  managed: boolean;
}

export interface DefaultNetworkOptions {
  /** Network name (default "nodelet"). */
  name?: string;
  /** File written into confDir (default 10-nodelet.conflist). */
  fileName?: string;
  /** Linux bridge name, at most 15 characters (default nodelet0). */
  bridgeName?: string;
  /** Pod subnet(s), comma separated for dual stack (default 10.88.0.0/16). */
  subnet?: string;
  /** host-local IPAM state directory (default: the plugin's own /var/lib/cni/networks). */
  ipamDataDir?: string;
  mtu?: number;
}

export interface CniNetworkOptions {
  confDir: string;
  binDirs: string[];
  /** Our per-sandbox record of what was set up: the config used and the result. */
  cacheDir: string;
  defaultConfig?: DefaultNetworkOptions;
  pluginTimeoutMs?: number;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIp?: string;
}

/** Traffic shaping for the bandwidth plugin: rates in bits per second, bursts in bits. */
export interface BandwidthLimits {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

export interface PodNetworkOptions {
  podName: string;
  podNamespace: string;
  podUid: string;
  portMappings?: PortMapping[];
  bandwidth?: BandwidthLimits;
}

export interface CniInterface {
  name: string;
  mac?: string;
  sandbox?: string;
}

export interface CniIpConfig {
  address: string;
  gateway?: string;
  interface?: number;
}

export interface CniResult {
  cniVersion?: string;
  interfaces?: CniInterface[];
  ips?: CniIpConfig[];
  routes?: { dst: string; gw?: string }[];
  dns?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface PodNetwork {
  /** Pod addresses without prefix length, in the order the plugins reported them. */
  ips: string[];
  interfaces: CniInterface[];
  result: CniResult;
}

export interface NetworkStatus {
  ready: boolean;
  reason?: string;
  message?: string;
}

interface CachedAttachment {
  version: 1;
  sandboxId: string;
  netnsPath: string;
  ifName: string;
  cniArgs: string;
  network: NetworkConfigList;
  runtimeConfig: Record<string, unknown>;
  /** Absent while ADD is in flight (a crash then still leaves enough to tear down). */
  result?: CniResult;
  createdAt: string;
}

const LOOPBACK_NETWORK: NetworkConfigList = {
  cniVersion: '1.0.0',
  name: 'cni-loopback',
  plugins: [{ type: 'loopback' }],
};

/** The network config we write when confDir has none. */
export function buildDefaultNetworkConfig(opts: DefaultNetworkOptions = {}): NetworkConfigList {
  const bridgeName = opts.bridgeName ?? 'nodelet0';
  if (bridgeName.length > 15) throw invalidArgument(`bridge name ${bridgeName} is longer than 15 characters`);
  const ipam: Record<string, unknown> = { type: 'host-local', ...subnetIpam(opts.subnet ?? '10.88.0.0/16') };
  if (opts.ipamDataDir) ipam.dataDir = opts.ipamDataDir;
  const bridge: PluginConfig = {
    type: 'bridge',
    bridge: bridgeName,
    isGateway: true,
    ipMasq: true,
    hairpinMode: true,
    ipam,
  };
  if (opts.mtu) bridge.mtu = opts.mtu;
  return {
    cniVersion: '1.0.0',
    name: opts.name ?? 'nodelet',
    [MANAGED_MARKER]: true,
    plugins: [bridge, { type: 'portmap', capabilities: { portMappings: true } }],
  };
}

function subnetIpam(subnets: string): { ranges: { subnet: string }[][]; routes: { dst: string }[] } {
  const cidrs = subnets
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (cidrs.length === 0) throw invalidArgument('runtime_config.network_config.pod_cidr is empty');
  for (const cidr of cidrs) validateCidr(cidr);
  return {
    ranges: cidrs.map((subnet) => [{ subnet }]),
    routes: cidrs.map((c) => ({ dst: net.isIPv6(c.split('/')[0]!) ? '::/0' : '0.0.0.0/0' })),
  };
}

function validateCidr(cidr: string): void {
  const [addr, prefix, extra] = cidr.split('/');
  const family = net.isIP(addr ?? '');
  const bits = Number(prefix);
  if (extra !== undefined || family === 0 || !/^\d+$/.test(prefix ?? '') || bits > (family === 4 ? 32 : 128)) {
    throw invalidArgument(`runtime_config.network_config.pod_cidr ${JSON.stringify(cidr)} is not an IP network like 10.88.0.0/16`);
  }
}

/** Turns the parsed content of a config file into a network list; undefined when it is neither form. */
export function toNetworkConfigList(raw: unknown): NetworkConfigList | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const obj = raw as Record<string, unknown>;
  if (typeof obj.name !== 'string' || obj.name === '') return undefined;
  const cniVersion = typeof obj.cniVersion === 'string' ? obj.cniVersion : '';
  if (Array.isArray(obj.plugins)) {
    const plugins = obj.plugins as unknown[];
    if (plugins.length === 0) return undefined;
    if (!plugins.every((p) => typeof p === 'object' && p !== null && typeof (p as PluginConfig).type === 'string')) return undefined;
    return { ...obj, cniVersion, name: obj.name, plugins: plugins as PluginConfig[] };
  }
  if (typeof obj.type === 'string') {
    // A single-plugin .conf becomes a list of one.
    return { cniVersion, name: obj.name, plugins: [{ ...obj, type: obj.type }] };
  }
  return undefined;
}

function buildCniArgs(sandboxId: string, opts: PodNetworkOptions): string {
  const pairs: [string, string][] = [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', opts.podNamespace],
    ['K8S_POD_NAME', opts.podName],
    ['K8S_POD_INFRA_CONTAINER_ID', sandboxId],
    ['K8S_POD_UID', opts.podUid],
  ];
  for (const [key, value] of pairs) {
    if (/[;=]/.test(value)) throw invalidArgument(`${key} value ${JSON.stringify(value)} must not contain ';' or '='`);
  }
  return pairs.map(([k, v]) => `${k}=${v}`).join(';');
}

function buildRuntimeConfig(opts: PodNetworkOptions): Record<string, unknown> {
  const runtimeConfig: Record<string, unknown> = {};
  const mappings = (opts.portMappings ?? []).filter((m) => m.hostPort > 0);
  if (mappings.length > 0) {
    runtimeConfig.portMappings = mappings.map((m) => ({
      hostPort: m.hostPort,
      containerPort: m.containerPort,
      protocol: m.protocol,
      ...(m.hostIp ? { hostIP: m.hostIp } : {}),
    }));
  }
  if (opts.bandwidth && Object.values(opts.bandwidth).some((v) => v !== undefined && v > 0)) {
    runtimeConfig.bandwidth = opts.bandwidth;
  }
  return runtimeConfig;
}

/** The stdin of one plugin call: its config plus the list's name and version, prevResult and runtimeConfig. */
export function buildPluginInput(
  list: NetworkConfigList,
  plugin: PluginConfig,
  prevResult: CniResult | undefined,
  runtimeConfig: Record<string, unknown>,
): Record<string, unknown> {
  const input: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult) input.prevResult = prevResult;
  const wanted: Record<string, unknown> = {};
  for (const [capability, enabled] of Object.entries(plugin.capabilities ?? {})) {
    if (enabled && runtimeConfig[capability] !== undefined) wanted[capability] = runtimeConfig[capability];
  }
  if (Object.keys(wanted).length > 0) input.runtimeConfig = wanted;
  else delete input.runtimeConfig;
  return input;
}

/** Pod IPs of a result: addresses on interfaces inside the sandbox (or all, when not attributed). */
export function podIpsOfResult(result: CniResult): string[] {
  const interfaces = result.interfaces ?? [];
  const ips: string[] = [];
  for (const ip of result.ips ?? []) {
    const iface = ip.interface !== undefined ? interfaces[ip.interface] : undefined;
    if (iface && !iface.sandbox) continue;
    const address = ip.address.split('/')[0]!;
    if (!ips.includes(address)) ips.push(address);
  }
  // CNI 0.2.0 results
  const legacy = result as { ip4?: { ip?: string }; ip6?: { ip?: string } };
  for (const ip of [legacy.ip4?.ip, legacy.ip6?.ip]) if (ip) ips.push(ip.split('/')[0]!);
  return ips;
}

export class CniPluginError extends NodeletError {
  constructor(
    readonly plugin: string,
    readonly network: string,
    readonly command: string,
    readonly code: number | undefined,
    detail: string,
  ) {
    super('Internal', `CNI plugin ${plugin} of network ${network} failed ${command}${code !== undefined ? ` (code ${code})` : ''}: ${detail}`);
  }
}

export class CniNetwork {
  private readonly opts: CniNetworkOptions;
  private readonly log = logger({ component: 'cni' });
  private loadedSignature: string | undefined;
  private loaded: LoadedNetwork | undefined;

  constructor(opts: CniNetworkOptions) {
    this.opts = opts;
  }

  private get defaultFileName(): string {
    return this.opts.defaultConfig?.fileName ?? DEFAULT_CONFIG_FILE;
  }

  // The directory listing, the stats and the plugin lookups are synchronous: Status runs them on every call
  // (the kubelet's, every few seconds), they only read metadata of local config and binary directories, and
  // the thread-pool round trip of the promise versions cost several times the syscalls themselves.
  private async configFiles(): Promise<string[]> {
    let names: string[];
    try {
      names = readdirSync(this.opts.confDir);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return [];
      throw err;
    }
    return names.filter((n) => !n.startsWith('.') && CONFIG_EXTENSIONS.has(path.extname(n))).sort();
  }

  /** The network in use: the first valid config file by name; re-read only when the files changed. */
  async load(): Promise<LoadedNetwork | undefined> {
    const files = await this.configFiles();
    const parts: string[] = [];
    for (const name of files) {
      const st = statSync(path.join(this.opts.confDir, name), { throwIfNoEntry: false });
      if (st) parts.push(`${name}:${st.mtimeMs}:${st.size}:${st.ino}`);
    }
    const signature = parts.join('|');
    if (signature === this.loadedSignature) return this.loaded;

    let chosen: LoadedNetwork | undefined;
    for (const name of files) {
      const file = path.join(this.opts.confDir, name);
      let list: NetworkConfigList | undefined;
      try {
        list = toNetworkConfigList(JSON.parse(await fsp.readFile(file, 'utf8')));
      } catch (err) {
        this.log.warn({ file, err: errorMessage(err) }, 'skipping unreadable CNI config');
        continue;
      }
      if (!list) {
        this.log.warn({ file }, 'skipping CNI config without a name and plugins');
        continue;
      }
      chosen = { file, list, managed: list[MANAGED_MARKER] === true };
      break;
    }
    if (chosen?.file !== this.loaded?.file || this.loaded === undefined) {
      this.log.info({ file: chosen?.file, network: chosen?.list.name }, 'CNI config loaded');
    }
    this.loaded = chosen;
    this.loadedSignature = signature;
    return chosen;
  }

  async status(): Promise<NetworkStatus> {
    const loaded = await this.load();
    if (!loaded) {
      return {
        ready: false,
        reason: NETWORK_NOT_READY_REASON,
        message: `Network plugin returns error: cni config uninitialized: no network config found in ${this.opts.confDir}`,
      };
    }
    const types = [...loaded.list.plugins.map((p) => p.type), 'loopback'];
    for (const type of types) {
      if (!(await this.findPlugin(type))) {
        return {
          ready: false,
          reason: NETWORK_NOT_READY_REASON,
          message: `Network plugin returns error: CNI plugin ${type} of network ${loaded.list.name} not found in ${this.opts.binDirs.join(':')}`,
        };
      }
    }
    return { ready: true };
  }

  /** Writes our default conflist when confDir holds no config at all; true when it wrote one. */
  async ensureDefaultConfig(): Promise<boolean> {
    if ((await this.configFiles()).length > 0) return false;
    await ensureDir(this.opts.confDir);
    const list = buildDefaultNetworkConfig(this.opts.defaultConfig);
    await writeJsonAtomic(path.join(this.opts.confDir, this.defaultFileName), list);
    this.log.info({ confDir: this.opts.confDir, network: list.name }, 'wrote default CNI config');
    return true;
  }

  /** Points our default config at the node's pod CIDR (UpdateRuntimeConfig); false when the config is not ours. */
  async setPodCidr(cidr: string): Promise<boolean> {
    if (cidr.trim() === '') return false;
    const ipamFields = subnetIpam(cidr);
    const file = path.join(this.opts.confDir, this.defaultFileName);
    const raw = await readJsonIfExists<Record<string, unknown>>(file);
    const list = raw && toNetworkConfigList(raw);
    if (!list || list[MANAGED_MARKER] !== true) return false;
    const bridge = list.plugins.find((p) => p.type === 'bridge');
    const ipam = bridge?.ipam as Record<string, unknown> | undefined;
    if (!ipam || ipam.type !== 'host-local') return false;
    if (JSON.stringify(ipam.ranges) === JSON.stringify(ipamFields.ranges)) return false;
    delete ipam.subnet;
    ipam.ranges = ipamFields.ranges;
    ipam.routes = ipamFields.routes;
    await writeJsonAtomic(file, list);
    this.log.info({ file, cidr }, 'pod CIDR set in default CNI config');
    return true;
  }

  /** Runs ADD for loopback and every plugin of the network; on failure undoes what it did. */
  async setUp(sandboxId: string, netnsPath: string, opts: PodNetworkOptions): Promise<PodNetwork> {
    validateSandboxId(sandboxId);
    const cniArgs = buildCniArgs(sandboxId, opts);
    if (await this.readCache(sandboxId)) {
      // A previous attempt for this sandbox left state behind; start clean.
      await this.tearDown(sandboxId, netnsPath);
    }
    const loaded = await this.load();
    if (!loaded) throw internal(`cni config uninitialized: no network config found in ${this.opts.confDir}`);
    for (const plugin of [...LOOPBACK_NETWORK.plugins, ...loaded.list.plugins]) {
      if (!(await this.findPlugin(plugin.type))) {
        throw new CniPluginError(plugin.type, loaded.list.name, 'ADD', undefined, `binary not found in ${this.opts.binDirs.join(':')}`);
      }
    }
    const attachment: CachedAttachment = {
      version: 1,
      sandboxId,
      netnsPath,
      ifName: POD_IFNAME,
      cniArgs,
      network: loaded.list,
      runtimeConfig: buildRuntimeConfig(opts),
      createdAt: new Date().toISOString(),
    };
    await ensureDir(this.opts.cacheDir, 0o700);
    await writeJsonAtomic(this.cachePath(sandboxId), attachment);

    const log = this.log.child({ sandboxId, network: loaded.list.name });
    let attempted = 0;
    let result: CniResult | undefined;
    try {
      await this.invoke('ADD', LOOPBACK_NETWORK, LOOPBACK_NETWORK.plugins[0]!, attachment, 'lo', undefined);
      for (const plugin of loaded.list.plugins) {
        attempted++;
        result = (await this.invoke('ADD', loaded.list, plugin, attachment, POD_IFNAME, result)) ?? result;
      }
      if (!result) throw internal(`CNI network ${loaded.list.name} returned no result for sandbox ${sandboxId}`);
      attachment.result = result;
      await writeJsonAtomic(this.cachePath(sandboxId), attachment);
      const network: PodNetwork = { ips: podIpsOfResult(result), interfaces: result.interfaces ?? [], result };
      log.info({ ips: network.ips }, 'pod network set up');
      return network;
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'pod network setup failed; removing what was added');
      try {
        // Only the plugins that were run get a DEL (the failing one included: it may have done part).
        await this.deleteAttachment({ ...attachment, result }, netnsPath, attempted);
      } catch (cleanupErr) {
        log.error({ err: errorMessage(cleanupErr) }, 'cleanup after failed network setup failed');
      }
      throw err;
    }
  }

  /**
   * Runs DEL in reverse order with the config recorded at setup. A missing namespace or record is
   * fine, so repeated calls succeed; the record goes only when every DEL succeeded.
   */
  async tearDown(sandboxId: string, netnsPath: string | undefined): Promise<void> {
    validateSandboxId(sandboxId);
    // The record is written before the first ADD, so without one there is nothing to undo.
    const attachment = await this.readCache(sandboxId);
    if (!attachment) return;
    await this.deleteAttachment(attachment, netnsPath, attachment.network.plugins.length);
  }

  /** DEL for the first `pluginCount` plugins in reverse, then loopback; drops the record when all succeeded. */
  private async deleteAttachment(attachment: CachedAttachment, netnsPath: string | undefined, pluginCount: number): Promise<void> {
    const { sandboxId } = attachment;
    const nsPath = netnsPath ?? attachment.netnsPath;
    const del: CachedAttachment = { ...attachment, netnsPath: nsPath && (await pathExists(nsPath)) ? nsPath : '' };
    const errors: string[] = [];
    for (const plugin of attachment.network.plugins.slice(0, pluginCount).reverse()) {
      try {
        await this.invoke('DEL', attachment.network, plugin, del, attachment.ifName, attachment.result);
      } catch (err) {
        errors.push(errorMessage(err));
      }
    }
    if (del.netnsPath) {
      try {
        await this.invoke('DEL', LOOPBACK_NETWORK, LOOPBACK_NETWORK.plugins[0]!, del, 'lo', undefined);
      } catch (err) {
        errors.push(errorMessage(err));
      }
    }
    if (!del.netnsPath && attachment.result) await this.removeOrphanedMasquerade(attachment, attachment.result);
    if (errors.length > 0) throw internal(`tearing down the network of sandbox ${sandboxId}: ${errors.join('; ')}`);
    await fsp.rm(this.cachePath(sandboxId), { force: true });
    this.log.info({ sandboxId, network: attachment.network.name }, 'pod network torn down');
  }

  /**
   * bridge and ptp learn the pod address for their ipMasq rules from eth0 inside the namespace, so
   * with the namespace gone their DEL leaves the rules behind. We know the address from the
   * recorded result and remove the rule and chain the way the plugins name them.
   */
  private async removeOrphanedMasquerade(attachment: CachedAttachment, result: CniResult): Promise<void> {
    const { network, sandboxId } = attachment;
    if (!network.plugins.some((p) => (p.type === 'bridge' || p.type === 'ptp') && p.ipMasq === true)) return;
    const chain = masqueradeChainName(network.name, sandboxId);
    const comment = `name: "${network.name}" id: "${sandboxId}"`;
    for (const ip of podIpsOfResult(result)) {
      const v6 = net.isIPv6(ip);
      const tool = v6 ? 'ip6tables' : 'iptables';
      const source = `${ip}/${v6 ? 128 : 32}`;
      const steps = [
        ['-w', '-t', 'nat', '-D', 'POSTROUTING', '-s', source, '-m', 'comment', '--comment', comment, '-j', chain],
        ['-w', '-t', 'nat', '-F', chain],
        ['-w', '-t', 'nat', '-X', chain],
      ];
      for (const args of steps) {
        const res = await run(tool, args, { reject: false, timeoutMs: 30_000 });
        if (res.exitCode !== 0) break; // already gone (or never made): nothing more to do
      }
    }
  }

  /** Runs CHECK for every plugin (CNI >= 0.4.0) against the recorded result. */
  async check(sandboxId: string, netnsPath: string): Promise<void> {
    validateSandboxId(sandboxId);
    const attachment = await this.readCache(sandboxId);
    if (!attachment?.result) throw internal(`no network set up for sandbox ${sandboxId}`);
    const { network } = attachment;
    if (network.disableCheck === true || compareVersions(network.cniVersion, '0.4.0') < 0) return;
    for (const plugin of network.plugins) {
      await this.invoke('CHECK', network, plugin, { ...attachment, netnsPath }, attachment.ifName, attachment.result);
    }
  }

  /** The recorded result of a sandbox's setup, if any. */
  async cachedResult(sandboxId: string): Promise<PodNetwork | undefined> {
    validateSandboxId(sandboxId);
    const result = (await this.readCache(sandboxId))?.result;
    return result && { ips: podIpsOfResult(result), interfaces: result.interfaces ?? [], result };
  }

  private cachePath(sandboxId: string): string {
    return path.join(this.opts.cacheDir, `${sandboxId}.json`);
  }

  private async readCache(sandboxId: string): Promise<CachedAttachment | undefined> {
    return readJsonIfExists<CachedAttachment>(this.cachePath(sandboxId));
  }

  private async findPlugin(type: string): Promise<string | undefined> {
    if (!PLUGIN_TYPE.test(type)) return undefined;
    for (const dir of this.opts.binDirs) {
      const candidate = path.join(dir, type);
      try {
        accessSync(candidate, fsConstants.X_OK);
        return candidate;
      } catch {
        // try the next directory
      }
    }
    return undefined;
  }

  private async invoke(
    command: 'ADD' | 'DEL' | 'CHECK',
    list: NetworkConfigList,
    plugin: PluginConfig,
    attachment: CachedAttachment,
    ifName: string,
    prevResult: CniResult | undefined,
  ): Promise<CniResult | undefined> {
    const binary = await this.findPlugin(plugin.type);
    if (!binary) {
      throw new CniPluginError(plugin.type, list.name, command, undefined, `binary not found in ${this.opts.binDirs.join(':')}`);
    }
    const input = buildPluginInput(list, plugin, prevResult, attachment.runtimeConfig);
    const res = await run(binary, [], {
      input: JSON.stringify(input),
      extendEnv: false,
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: attachment.sandboxId,
        CNI_NETNS: attachment.netnsPath,
        CNI_IFNAME: ifName,
        CNI_PATH: this.opts.binDirs.join(':'),
        CNI_ARGS: attachment.cniArgs,
        PATH: process.env.PATH ?? DEFAULT_PATH,
      },
      timeoutMs: this.opts.pluginTimeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS,
      reject: false,
    });
    if (res.timedOut) throw new CniPluginError(plugin.type, list.name, command, undefined, 'timed out');
    if (res.exitCode !== 0) {
      throw new CniPluginError(plugin.type, list.name, command, parseErrorCode(res.stdout), describeFailure(res.stdout, res.stderr, res.exitCode));
    }
    if (command !== 'ADD') return undefined;
    try {
      return JSON.parse(res.stdout) as CniResult;
    } catch {
      throw new CniPluginError(plugin.type, list.name, command, undefined, `result is not JSON: ${res.stdout.slice(0, 500)}`);
    }
  }
}

/** The per-sandbox iptables chain name of the CNI plugins: CNI- and 24 hex of sha512(network + id). */
export function masqueradeChainName(networkName: string, sandboxId: string): string {
  return `CNI-${createHash('sha512').update(networkName + sandboxId).digest('hex').slice(0, 24)}`;
}

function validateSandboxId(sandboxId: string): void {
  if (!SAFE_ID.test(sandboxId)) throw invalidArgument(`sandbox id ${JSON.stringify(sandboxId)} is not a valid id`);
}

function parseErrorCode(stdout: string): number | undefined {
  try {
    const code = (JSON.parse(stdout) as { code?: unknown }).code;
    return typeof code === 'number' ? code : undefined;
  } catch {
    return undefined;
  }
}

function describeFailure(stdout: string, stderr: string, exitCode: number): string {
  try {
    const err = JSON.parse(stdout) as { msg?: unknown; details?: unknown };
    if (typeof err.msg === 'string') return err.details ? `${err.msg}: ${String(err.details)}` : err.msg;
  } catch {
    // not a CNI error object
  }
  const text = (stdout.trim() || stderr.trim()).slice(0, 2000);
  return `exit code ${exitCode}${text ? `: ${text}` : ''}`;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
