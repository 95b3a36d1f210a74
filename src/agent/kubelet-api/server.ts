// The kubelet API on HTTPS: /healthz, /pods, /containerLogs, and /exec, /attach, /portForward proxied to
// the runtime's streaming server — what the apiserver calls for `kubectl logs`, `exec` and `port-forward`.
// /stats/summary and /metrics/resource (stats.ts) are what metrics-server reads for `kubectl top`; /metrics,
// /metrics/probes (metrics.ts), /metrics/cadvisor (cadvisor.ts), /runningpods, /configz and /logs/ (node-info.ts)
// are what Prometheus, kubectl get --raw and the node log viewers read.
import { listenOn, parseHostPort } from '../../common/address.js';
import { promises as fsp } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import { errorMessage } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { CriClient } from '../cri-client.js';
import { CONTAINER_NAME_LABEL, POD_UID_LABEL, podLogDirectory } from '../pod-spec.js';
import { KubeletAuth } from './auth.js';
import { streamCriLog, type LogReadOptions } from './cri-log.js';
import { proxyUpgrade, rawReply, streamingTarget } from './stream-proxy.js';
import { servingCertificate } from './tls.js';
import { NodeStatsSource, resourceMetricsText } from './stats.js';
import type { AgentMetrics } from './metrics.js';
import { cadvisorMetrics } from './cadvisor.js';
import { runningPodList, serveNodeLog } from './node-info.js';
import { claimVolumeStats, type ClaimMount } from './volume-stats.js';

export interface KubeletApiHost {
  /** The pods this node runs (from the API and static manifests), each with its latest status. */
  pods(): V1Pod[];
  cri: CriClient;
  podLogsDir: string;
}

export interface KubeletApiOptions {
  /** HOST:PORT; port 0 picks a free one. */
  address: string;
  nodeName: string;
  /** The agent root: a self-signed serving certificate is kept under <root>/pki. */
  root: string;
  tlsCertFile?: string;
  tlsPrivateKeyFile?: string;
  clientCaFile?: string;
  /** Addresses the self-signed certificate names. */
  addresses: string[];
  /** The cluster, for TokenReview and SubjectAccessReview. */
  kube?: KubeConfig;
  host: KubeletApiHost;
  log: Logger;
  /** The agent's metrics (/metrics, /metrics/probes); without them those answer 404. */
  metrics?: AgentMetrics;
  /** The /configz document. */
  configz?: () => object;
  /** The node's log directory served under /logs/ (default /var/log). */
  nodeLogDir?: string;
  /** The sync loop's health check (/healthz/syncloop): false when the agent's loop has stalled. */
  syncLoopHealthy?: () => boolean;
  /** The pods' mounted claim volumes (pods[].volume in /stats/summary). */
  claimMounts?: () => ClaimMount[];
  /** The serving certificate comes later through setServingCertificate (a CSR): until then handshakes fail. */
  servingCertificateFromCsr?: boolean;
}

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';

/** An answer with an HTTP status (plain requests get it as text, upgrades as a raw response). */
class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 500: 'Internal Server Error' };

function flag(q: URLSearchParams, name: string): boolean {
  return /^(1|t|true)$/i.test(q.get(name) ?? '');
}

function nonNegativeInt(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new ApiError(400, `${name}: must be a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

interface ContainerRef {
  id: string;
  state: string;
  logPath: string;
}

export class KubeletApiServer {
  private server?: https.Server;
  private readonly sockets = new Set<Duplex>();
  private readonly auth: KubeletAuth;
  private readonly stats: NodeStatsSource;
  private readonly log: Logger;
  private boundPort = 0;
  private clientCa?: Buffer;

  constructor(private readonly opts: KubeletApiOptions) {
    this.auth = new KubeletAuth({ nodeName: opts.nodeName, kube: opts.kube });
    this.stats = new NodeStatsSource(opts.host.cri, opts.nodeName);
    this.log = opts.log.child({ component: 'kubelet-api' });
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.opts.address, 'kubelet API address');
    const serving = this.opts.servingCertificateFromCsr
      ? undefined
      : await servingCertificate({
          certFile: this.opts.tlsCertFile,
          keyFile: this.opts.tlsPrivateKeyFile,
          root: this.opts.root,
          nodeName: this.opts.nodeName,
          addresses: this.opts.addresses,
        });
    const clientCa = this.opts.clientCaFile ? await fsp.readFile(this.opts.clientCaFile) : undefined;
    this.clientCa = clientCa;
    const server = https.createServer({
      ...(serving ? { cert: serving.cert, key: serving.key } : {}),
      // Certificates are checked, not required: a caller may use a bearer token instead.
      ...(clientCa ? { requestCert: true, rejectUnauthorized: false, ca: clientCa } : {}),
    });
    server.on('secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.onRequest(req, res).catch((err: unknown) => this.fail(res, err));
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => undefined);
      this.onUpgrade(req, socket, head).catch((err: unknown) => {
        const status = err instanceof ApiError ? err.status : 500;
        if (status === 500) this.log.warn({ err: errorMessage(err), url: req.url }, 'kubelet API upgrade failed');
        rawReply(socket, status, REASONS[status] ?? 'Error', `${errorMessage(err)}\n`);
      });
    });
    server.on('tlsClientError', () => undefined);
    await listenOn(server, host, port);
    this.server = server;
    this.boundPort = (server.address() as AddressInfo).port;
    this.log.info({ address: `${host}:${this.boundPort}`, clientCa: Boolean(clientCa), webhook: Boolean(this.opts.kube) }, 'kubelet API listening');
  }

  /** Serves with this certificate from the next handshake on (a rotated or newly issued one; PEM, may be one file). */
  setServingCertificate(cert: Buffer, key: Buffer): void {
    if (!this.server) throw new Error('kubelet API not started');
    this.server.setSecureContext({ cert, key, ...(this.clientCa ? { ca: this.clientCa } : {}) });
    this.log.info('kubelet API serving certificate updated');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private fail(res: ServerResponse, err: unknown): void {
    const status = err instanceof ApiError ? err.status : 500;
    if (status === 500) this.log.warn({ err: errorMessage(err) }, 'kubelet API request failed');
    if (!res.headersSent) res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
    if (!res.writableEnded) res.end(`${errorMessage(err)}\n`);
  }

  private async authorizeRequest(req: IncomingMessage, pathname: string): Promise<void> {
    const outcome = await this.auth.check(req, pathname);
    if (!outcome.ok) throw new ApiError(outcome.code, outcome.message);
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://kubelet');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    await this.authorizeRequest(req, url.pathname);
    switch (parts[0]) {
      case 'healthz':
        return this.healthz(res, parts.slice(1));
      case 'pods': {
        if (parts.length > 1) throw new ApiError(404, '404 page not found');
        const items = this.opts.host.pods().map((p) => ({ apiVersion: 'v1', kind: 'Pod', ...p }));
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items }));
        return;
      }
      case 'stats': {
        if (parts.length > 2 || (parts[1] ?? 'summary') !== 'summary') throw new ApiError(404, '404 page not found');
        const summary = await this.stats.summary();
        const volumes = await claimVolumeStats(this.opts.claimMounts?.() ?? []);
        for (const pod of summary.pods as any[]) {
          const own = volumes.filter((v) => v.podUid === pod.podRef.uid).map(({ podUid: _, ...v }) => v);
          if (own.length) pod.volume = own;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(summary));
        return;
      }
      case 'metrics':
        return this.metricsText(res, parts);
      case 'runningpods': {
        if (parts.length > 1) throw new ApiError(404, '404 page not found');
        const cri = this.opts.host.cri;
        const [{ items }, { containers }] = await Promise.all([cri.runtime('ListPodSandbox', {}), cri.runtime('ListContainers', {})]);
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(runningPodList(items, containers)));
        return;
      }
      case 'configz':
        if (parts.length > 1 || !this.opts.configz) throw new ApiError(404, '404 page not found');
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(this.opts.configz()));
        return;
      case 'logs':
        // Like the kubelet's mux: /logs is /logs/.
        if (url.pathname === '/logs') return void res.writeHead(301, { Location: '/logs/' }).end();
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new ApiError(405, 'Method Not Allowed');
        return serveNodeLog(res, this.opts.nodeLogDir ?? '/var/log', parts.slice(1).join('/'), url.pathname, req.method === 'HEAD');
      case 'containerLogs':
        if (parts.length !== 4) throw new ApiError(400, 'path must be /containerLogs/{namespace}/{pod}/{container}');
        return this.containerLogs(res, parts[1]!, parts[2]!, parts[3]!, url.searchParams);
      case 'exec':
      case 'attach':
      case 'portForward':
        throw new ApiError(400, 'Upgrade request required');
      default:
        throw new ApiError(404, '404 page not found');
    }
  }

  /** The kubelet's /healthz checks: ping, log, syncloop; /healthz/<name> runs one. */
  private healthz(res: ServerResponse, rest: string[]): void {
    const checks: Record<string, () => boolean> = { ping: () => true, log: () => true, syncloop: () => this.opts.syncLoopHealthy?.() ?? true };
    if (rest.length > 1 || (rest.length === 1 && !checks[rest[0]!])) throw new ApiError(404, '404 page not found');
    const names = rest.length ? [rest[0]!] : Object.keys(checks);
    const results = names.map((name) => {
      const ok = checks[name]!();
      this.opts.metrics?.healthcheck(name, ok);
      return { name, ok };
    });
    if (results.every((r) => r.ok)) return void res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' }).end('ok');
    const lines = results.map((r) => (r.ok ? `[+]${r.name} ok` : `[-]${r.name} failed: reason withheld`));
    res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${lines.join('\n')}\nhealthz check failed\n`);
  }

  private async metricsText(res: ServerResponse, parts: string[]): Promise<void> {
    const which = parts.length === 1 ? '' : parts.length === 2 ? parts[1] : undefined;
    let text: string;
    if (which === 'resource') text = resourceMetricsText(await this.stats.summary());
    else if (which === 'cadvisor') text = await cadvisorMetrics(this.opts.host.cri);
    else if (which === '' && this.opts.metrics) text = await this.opts.metrics.text();
    else if (which === 'probes' && this.opts.metrics) text = await this.opts.metrics.probesText();
    else if (which === 'slis' && this.opts.metrics) text = await this.opts.metrics.slisText();
    else throw new ApiError(404, '404 page not found');
    res.writeHead(200, { 'Content-Type': PROMETHEUS_TEXT }).end(text);
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const url = new URL(req.url ?? '/', 'https://kubelet');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    await this.authorizeRequest(req, url.pathname);
    const streamUrl = await this.streamUrl(parts, url.searchParams);
    this.log.debug({ path: url.pathname, upgrade: req.headers.upgrade }, 'proxying stream');
    await proxyUpgrade(req, socket, head, streamingTarget(streamUrl, url.searchParams), this.log);
  }

  /** Asks the runtime for the streaming URL of an exec, attach or port-forward request. */
  private async streamUrl(parts: string[], q: URLSearchParams): Promise<string> {
    const [kind, namespace, podName] = parts;
    const cri = this.opts.host.cri;
    if (kind === 'exec' || kind === 'attach') {
      // /{kind}/{ns}/{pod}/{container} or /{kind}/{ns}/{pod}/{uid}/{container}
      if (parts.length !== 4 && parts.length !== 5) throw new ApiError(400, `path must be /${kind}/{namespace}/{pod}/{container}`);
      const pod = this.findPod(namespace!, podName!);
      const container = await this.findContainer(pod, parts[parts.length - 1]!, false);
      if (container.state !== 'CONTAINER_RUNNING') throw new ApiError(400, `container ${parts[parts.length - 1]} is not running`);
      const tty = flag(q, 'tty');
      // The apiserver names them input/output/error (the kubelet's parameters); direct clients often stdin/stdout/stderr.
      const stdio = {
        stdin: flag(q, 'input') || flag(q, 'stdin'),
        stdout: flag(q, 'output') || flag(q, 'stdout'),
        stderr: (flag(q, 'error') || flag(q, 'stderr')) && !tty,
        tty,
      };
      if (!stdio.stdin && !stdio.stdout && !stdio.stderr) throw new ApiError(400, 'you must specify at least 1 of stdin, stdout, stderr');
      if (kind === 'exec') {
        const cmd = q.getAll('command');
        if (cmd.length === 0) throw new ApiError(400, 'command is required');
        return (await cri.runtime('Exec', { container_id: container.id, cmd, ...stdio })).url;
      }
      return (await cri.runtime('Attach', { container_id: container.id, ...stdio })).url;
    }
    if (kind === 'portForward') {
      if (parts.length !== 3 && parts.length !== 4) throw new ApiError(400, 'path must be /portForward/{namespace}/{pod}');
      const pod = this.findPod(namespace!, podName!);
      const { items } = await cri.runtime('ListPodSandbox', {
        filter: { label_selector: { [POD_UID_LABEL]: pod.metadata!.uid! }, state: { state: 'SANDBOX_READY' } },
      });
      const sandbox = (items as any[]).sort((a, b) => Number(b.created_at) - Number(a.created_at))[0];
      if (!sandbox) throw new ApiError(400, `pod ${namespace}/${podName} has no running sandbox`);
      const ports = [...q.getAll('ports'), ...q.getAll('port')].flatMap((p) => p.split(',')).filter(Boolean).map(Number);
      if (ports.some((p) => !Number.isInteger(p) || p <= 0 || p > 65535)) throw new ApiError(400, 'ports must be integers in 1-65535');
      return (await cri.runtime('PortForward', { pod_sandbox_id: sandbox.id, port: ports })).url;
    }
    throw new ApiError(404, '404 page not found');
  }

  private findPod(namespace: string, name: string): V1Pod {
    const pod = this.opts.host.pods().find((p) => p.metadata?.namespace === namespace && p.metadata?.name === name);
    if (!pod) throw new ApiError(404, `pod "${name}" in namespace "${namespace}" not found on this node`);
    return pod;
  }

  /** The newest container of that name in the pod (or the one before it, for previous=true). */
  private async findContainer(pod: V1Pod, name: string, previous: boolean): Promise<ContainerRef> {
    const spec = pod.spec;
    const known = [...(spec?.containers ?? []), ...(spec?.initContainers ?? []), ...(spec?.ephemeralContainers ?? [])].some((c) => c.name === name);
    if (!known) throw new ApiError(400, `container ${name} is not valid for pod ${pod.metadata!.name}`);
    const cri = this.opts.host.cri;
    const { containers } = await cri.runtime('ListContainers', {
      filter: { label_selector: { [POD_UID_LABEL]: pod.metadata!.uid!, [CONTAINER_NAME_LABEL]: name } },
    });
    const sorted = (containers as any[]).sort(
      (a, b) => (b.metadata?.attempt ?? 0) - (a.metadata?.attempt ?? 0) || Number(b.created_at) - Number(a.created_at),
    );
    const chosen = sorted[previous ? 1 : 0];
    if (!chosen) {
      throw new ApiError(
        400,
        previous
          ? `previous terminated container "${name}" in pod "${pod.metadata!.name}" not found`
          : `container "${name}" in pod "${pod.metadata!.name}" is waiting to start: ContainerCreating`,
      );
    }
    const { status } = await cri.runtime('ContainerStatus', { container_id: chosen.id });
    const logPath: string = status?.log_path ?? '';
    return {
      id: chosen.id,
      state: status?.state ?? chosen.state,
      logPath: !logPath || path.isAbsolute(logPath) ? logPath : path.join(podLogDirectory(this.opts.host.podLogsDir, pod), logPath),
    };
  }

  private async containerLogs(res: ServerResponse, namespace: string, podName: string, name: string, q: URLSearchParams): Promise<void> {
    const pod = this.findPod(namespace, podName);
    const opts: LogReadOptions = {
      follow: flag(q, 'follow'),
      timestamps: flag(q, 'timestamps'),
      tailLines: nonNegativeInt(q, 'tailLines'),
      limitBytes: nonNegativeInt(q, 'limitBytes'),
    };
    if (opts.limitBytes === 0) throw new ApiError(400, 'limitBytes: must be greater than 0');
    const sinceSeconds = nonNegativeInt(q, 'sinceSeconds');
    const sinceTime = q.get('sinceTime');
    if (sinceSeconds !== undefined && sinceTime) throw new ApiError(400, 'at most one of sinceTime or sinceSeconds may be specified');
    if (sinceSeconds !== undefined) opts.since = new Date(Date.now() - sinceSeconds * 1000);
    else if (sinceTime) {
      const t = Date.parse(sinceTime);
      if (Number.isNaN(t)) throw new ApiError(400, `sinceTime: not an RFC3339 time: ${sinceTime}`);
      opts.since = new Date(t);
    }
    const previous = flag(q, 'previous');
    const container = await this.findContainer(pod, name, previous);
    if (!container.logPath) throw new ApiError(400, `container ${name} has no log file`);
    await fsp.access(container.logPath).catch(() => {
      throw new ApiError(404, `log file of container ${name} not found`);
    });
    if (previous) opts.follow = false;

    const abort = new AbortController();
    res.once('close', () => abort.abort());
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-cache' });
    res.flushHeaders();
    const write = (text: string) =>
      new Promise<void>((resolve) => {
        if (res.destroyed || res.writableEnded) return resolve();
        if (res.write(text)) resolve();
        else {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.once('drain', done);
          res.once('close', done);
        }
      });
    const stillRunning = async () => {
      try {
        const { status } = await this.opts.host.cri.runtime('ContainerStatus', { container_id: container.id });
        return status?.state === 'CONTAINER_RUNNING' || status?.state === 'CONTAINER_CREATED';
      } catch {
        return false;
      }
    };
    try {
      await streamCriLog(container.logPath, opts, write, abort.signal, stillRunning);
    } finally {
      if (!res.writableEnded) res.end();
    }
  }
}
