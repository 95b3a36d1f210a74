// The kubelet API's node-level answers: /runningpods (pods as the runtime sees them, the kubelet's PodList),
// /configz ({"kubeletconfig": ...}) and /logs/ (the node's log directory: listings as Go's http.FileServer
// writes them, files streamed, nothing outside the directory). The builders are pure.
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { ServerResponse } from 'node:http';
import type { AgentConfig } from '../config.js';
import { CONTAINER_NAME_LABEL, POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL } from '../pod-spec.js';

/** /runningpods: every pod with a ready sandbox or a running container, its running containers (name, image). */
export function runningPodList(sandboxes: any[], containers: any[]): object {
  const pods = new Map<string, { metadata: any; spec: { containers: any[] }; status: object }>();
  const podOf = (uid: string, name: string, namespace: string) => {
    let pod = pods.get(uid);
    if (!pod) pods.set(uid, (pod = { metadata: { name, namespace, uid, creationTimestamp: null }, spec: { containers: [] }, status: {} }));
    return pod;
  };
  for (const s of sandboxes) {
    if (s.state !== 'SANDBOX_READY') continue;
    const labels = s.labels ?? {};
    podOf(labels[POD_UID_LABEL] ?? s.metadata?.uid ?? s.id, labels[POD_NAME_LABEL] ?? s.metadata?.name ?? '', labels[POD_NAMESPACE_LABEL] ?? s.metadata?.namespace ?? '');
  }
  for (const c of containers) {
    if (c.state !== 'CONTAINER_RUNNING') continue;
    const labels = c.labels ?? {};
    const uid = labels[POD_UID_LABEL];
    if (!uid) continue;
    podOf(uid, labels[POD_NAME_LABEL] ?? '', labels[POD_NAMESPACE_LABEL] ?? '').spec.containers.push({
      name: labels[CONTAINER_NAME_LABEL] ?? c.metadata?.name ?? '',
      image: c.image?.image || c.image_ref || '',
      resources: {},
    });
  }
  return { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: [...pods.values()] };
}

const seconds = (ms: number) => `${ms / 1000}s`;

/** /configz: the agent's configuration under the KubeletConfiguration field names. */
export function kubeletConfigz(c: AgentConfig, extra: { port: number; rotateCertificates: boolean; serverTLSBootstrap: boolean; authenticationWebhook: boolean }): object {
  const [address] = c.kubeletApiAddress.split(/:(?=\d+$)/);
  return {
    kubeletconfig: {
      enableServer: Boolean(c.kubeletApiAddress),
      staticPodPath: c.podManifestPath,
      syncFrequency: seconds(c.podResyncMs),
      fileCheckFrequency: seconds(c.manifestPollMs),
      address,
      port: extra.port,
      tlsCertFile: c.tlsCertFile,
      tlsPrivateKeyFile: c.tlsPrivateKeyFile,
      rotateCertificates: extra.rotateCertificates,
      serverTLSBootstrap: extra.serverTLSBootstrap,
      authentication: {
        x509: c.clientCaFile ? { clientCAFile: c.clientCaFile } : {},
        webhook: { enabled: extra.authenticationWebhook, cacheTTL: '10s' },
        anonymous: { enabled: false },
      },
      authorization: { mode: extra.authenticationWebhook ? 'Webhook' : 'AlwaysAllow', webhook: { cacheAuthorizedTTL: '10s', cacheUnauthorizedTTL: '10s' } },
      clusterDomain: c.clusterDomain,
      clusterDNS: c.clusterDns,
      nodeStatusUpdateFrequency: seconds(c.nodeStatusReportSeconds * 1000),
      nodeStatusReportFrequency: seconds(c.nodeStatusReportSeconds * 1000),
      nodeLeaseDurationSeconds: 40,
      cgroupRoot: c.cgroupRoot,
      cgroupsPerQOS: c.cgroupsPerQOS,
      cgroupDriver: 'cgroupfs',
      maxPods: c.maxPods,
      podLogsDir: c.podLogsDir,
      containerRuntimeEndpoint: c.criEndpoint,
      containerLogMaxSize: `${Math.floor(c.containerLogMaxSizeBytes / 1024)}Ki`,
      containerLogMaxFiles: c.containerLogMaxFiles,
      containerLogMonitorInterval: seconds(c.containerLogMonitorIntervalMs),
      enableDebuggingHandlers: true,
      logging: { format: 'json' },
    },
  };
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&#34;').replace(/'/g, '&#39;');
}

/** A directory listing the way Go's http.FileServer writes it (what `kubectl get --raw .../logs/` shows). */
export function directoryListingHtml(entries: { name: string; dir: boolean }[]): string {
  const rows = [...entries]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((e) => {
      const name = e.dir ? `${e.name}/` : e.name;
      return `<a href="${encodeURIComponent(e.name).replace(/%2F/g, '/')}${e.dir ? '/' : ''}">${escapeHtml(name)}</a>\n`;
    });
  return `<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n${rows.join('')}</pre>\n`;
}

export type NodeLogAnswer =
  | { kind: 'redirect'; location: string }
  | { kind: 'listing'; html: string }
  | { kind: 'file'; file: string; size: number }
  | { kind: 'missing' };

/** Resolves /logs/<rel> under `root`: a path leading (by '..' or a symlink) outside it is missing. */
export async function resolveNodeLog(root: string, rel: string, urlPath: string): Promise<NodeLogAnswer> {
  const segments = rel.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.some((s) => s === '..' || s.includes('\0'))) return { kind: 'missing' };
  const realRoot = await fsp.realpath(root).catch(() => undefined);
  if (!realRoot) return { kind: 'missing' };
  const target = await fsp.realpath(path.join(realRoot, ...segments)).catch(() => undefined);
  if (!target || (target !== realRoot && !target.startsWith(`${realRoot}${path.sep}`))) return { kind: 'missing' };
  const st = await fsp.stat(target);
  if (st.isDirectory()) {
    if (!urlPath.endsWith('/')) return { kind: 'redirect', location: `${path.posix.basename(urlPath)}/` };
    const dirents = await fsp.readdir(target, { withFileTypes: true });
    const entries = await Promise.all(
      dirents.map(async (d) => ({ name: d.name, dir: d.isDirectory() || (d.isSymbolicLink() && (await fsp.stat(path.join(target, d.name)).then((s) => s.isDirectory(), () => false))) })),
    );
    return { kind: 'listing', html: directoryListingHtml(entries) };
  }
  if (!st.isFile()) return { kind: 'missing' };
  if (urlPath.endsWith('/')) return { kind: 'redirect', location: `../${path.posix.basename(target)}` };
  return { kind: 'file', file: target, size: st.size };
}

/** Writes a /logs/ answer. */
export async function serveNodeLog(res: ServerResponse, root: string, rel: string, urlPath: string, head: boolean): Promise<void> {
  const answer = await resolveNodeLog(root, rel, urlPath);
  switch (answer.kind) {
    case 'missing':
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
      return;
    case 'redirect':
      res.writeHead(301, { Location: answer.location }).end();
      return;
    case 'listing':
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(head ? undefined : answer.html);
      return;
    case 'file': {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': answer.size });
      if (head) return void res.end();
      // The size at open time bounds the read: a log growing meanwhile is not followed.
      const stream = createReadStream(answer.file, { start: 0, end: Math.max(0, answer.size - 1) });
      if (answer.size === 0) return void res.end();
      await new Promise<void>((resolve) => {
        stream.on('error', () => {
          res.destroy();
          resolve();
        });
        res.on('close', () => {
          stream.destroy();
          resolve();
        });
        stream.pipe(res);
      });
    }
  }
}
