// A small kube-apiserver of our own for the agent tests: HTTPS with a bearer token, one in-memory store with a global
// resourceVersion, list/watch with fieldSelector, resourceVersion, bookmarks and 410 Gone, the status subresource,
// merge and strategic-merge patches, 409 conflicts, graceful pod deletion, leases, events, configmaps, secrets, services;
// like the real one, MicroTime fields (Lease, Event) refused unless they carry exactly six fractional digits; like
// the node authorizer, a GET of a pod not bound to a node, or of a secret or config map no bound pod names, refused
// (403), and secrets and config maps never listed or watched.
import { computeQosClass } from '../../src/agent/qos.js';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { run } from '../../src/common/exec.js';

interface ResourceType {
  kind: string;
  apiVersion: string;
  namespaced: boolean;
  hasStatus: boolean;
}

const RESOURCES: Record<string, ResourceType> = {
  nodes: { kind: 'Node', apiVersion: 'v1', namespaced: false, hasStatus: true },
  pods: { kind: 'Pod', apiVersion: 'v1', namespaced: true, hasStatus: true },
  configmaps: { kind: 'ConfigMap', apiVersion: 'v1', namespaced: true, hasStatus: false },
  secrets: { kind: 'Secret', apiVersion: 'v1', namespaced: true, hasStatus: false },
  serviceaccounts: { kind: 'ServiceAccount', apiVersion: 'v1', namespaced: true, hasStatus: false },
  services: { kind: 'Service', apiVersion: 'v1', namespaced: true, hasStatus: true },
  events: { kind: 'Event', apiVersion: 'v1', namespaced: true, hasStatus: false },
  leases: { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', namespaced: true, hasStatus: false },
};

interface WatchEvent {
  rv: number;
  resource: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: any;
}

interface Watcher {
  resource: string;
  namespace?: string;
  matches(obj: any): boolean;
  res: ServerResponse;
  bookmarks: boolean;
  timers: NodeJS.Timeout[];
}

export interface RequestRecord {
  method: string;
  path: string;
  watch: boolean;
  contentType?: string;
}

export interface IssuedToken {
  namespace: string;
  name: string;
  claims: any;
}

export interface TestApiServer {
  url: string;
  token: string;
  kubeconfigPath: string;
  requests: RequestRecord[];
  /** Service account tokens handed out through TokenRequest. */
  tokens: IssuedToken[];
  /** Replaces an object's fields (as `kubectl apply` of a whole object would), bumping its resourceVersion. */
  update(resource: string, obj: any): any;
  get(resource: string, namespace: string | undefined, name: string): any;
  list(resource: string): any[];
  /** Creates an object as a client would (defaults applied), returning the stored copy. */
  create(resource: string, obj: any): any;
  /** Deletes like `kubectl delete` (graceful for scheduled pods). */
  remove(resource: string, namespace: string | undefined, name: string, gracePeriodSeconds?: number): void;
  /** Bearer tokens TokenReview knows, token → user. */
  users: Map<string, { username: string; groups: string[] }>;
  /** SubjectAccessReview's answer (default: allow); every review asked is kept in accessReviews. */
  authorize: (spec: any) => boolean;
  accessReviews: any[];
  /** Ends every open watch (the agent must resume). */
  dropWatches(): void;
  /** Forgets the event history, so resuming a watch from an old resourceVersion gets 410 Gone. */
  compact(): void;
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string, details?: object) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) };
}

class HttpError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string) {
    super(message);
  }
}

const MERGE_KEYS: Record<string, string> = {
  conditions: 'type',
  addresses: 'type',
  containerStatuses: 'name',
  initContainerStatuses: 'name',
  ephemeralContainerStatuses: 'name',
  podIPs: 'ip',
  hostIPs: 'ip',
  containers: 'name',
  initContainers: 'name',
  env: 'name',
  volumes: 'name',
  ownerReferences: 'uid',
};

export function mergePatch(target: any, patch: any): any {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Strategic merge patch for the fields the agent patches: lists with a merge key merge by it, directives are dropped. */
export function strategicMergePatch(target: any, patch: any): any {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    if (v === null) delete out[k];
    else if (Array.isArray(v) && MERGE_KEYS[k] && Array.isArray(out[k])) {
      const key = MERGE_KEYS[k];
      const merged: any[] = [...out[k]];
      for (const item of v) {
        const i = merged.findIndex((m) => m?.[key] === item?.[key]);
        if (item?.$patch === 'delete') {
          if (i >= 0) merged.splice(i, 1);
        } else if (i >= 0) merged[i] = strategicMergePatch(merged[i], item);
        else merged.push(strategicMergePatch({}, item));
      }
      out[k] = merged;
    } else out[k] = strategicMergePatch(out[k], v);
  }
  return out;
}

function fieldValue(obj: any, field: string): string {
  let cur = obj;
  for (const part of field.split('.')) cur = cur?.[part];
  return cur === undefined || cur === null ? '' : String(cur);
}

function parseFieldSelector(selector: string | null): (obj: any) => boolean {
  if (!selector) return () => true;
  const terms = selector.split(',').map((term) => {
    const m = /^([^!=]+)(==|!=|=)(.*)$/.exec(term.trim());
    if (!m) throw new HttpError(400, 'BadRequest', `invalid field selector ${term}`);
    const [, field, op, value] = m;
    return (obj: any) => (op === '!=' ? fieldValue(obj, field) !== value : fieldValue(obj, field) === value);
  });
  return (obj) => terms.every((t) => t(obj));
}

const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/;
const MICRO_TIME_PATHS: Record<string, string[][]> = {
  leases: [['spec', 'renewTime'], ['spec', 'acquireTime']],
  events: [['eventTime'], ['series', 'lastObservedTime']],
};

/** As the real apiserver decodes them: a metav1.MicroTime must have exactly six fractional digits. */
function checkMicroTimes(resource: string, obj: any): void {
  for (const p of MICRO_TIME_PATHS[resource] ?? []) {
    const value = p.reduce((cur, k) => cur?.[k], obj);
    if (value === undefined || value === null) continue;
    if (typeof value !== 'string' || !MICRO_TIME.test(value)) {
      const kind = RESOURCES[resource].kind;
      throw new HttpError(400, 'BadRequest', `${kind} in version "v1" cannot be handled as a ${kind}: parsing time ${JSON.stringify(value)} as "2006-01-02T15:04:05.000000Z07:00": cannot parse`);
    }
  }
}

function defaultPodImagePolicy(c: any) {
  if (c.imagePullPolicy) return;
  const last = String(c.image ?? '').split('/').pop() ?? '';
  const tag = last.includes(':') ? last.split(':').pop() : undefined;
  c.imagePullPolicy = !tag || tag === 'latest' ? 'Always' : 'IfNotPresent';
}

export async function startTestApiServer(opts: { bookmarkIntervalMs?: number } = {}): Promise<TestApiServer> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-apiserver-'));
  const keyFile = path.join(dir, 'tls.key');
  const certFile = path.join(dir, 'tls.crt');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=nodelet-test-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', keyFile, '-out', certFile,
  ]);
  const token = randomBytes(16).toString('hex');
  const store = new Map<string, any>(); // resource/namespace/name → object
  let rv = 1;
  let history: WatchEvent[] = [];
  let historyStart = 1; // events with rv > historyStart are retained
  const watchers = new Set<Watcher>();
  const requests: RequestRecord[] = [];
  const tokens: IssuedToken[] = [];
  const bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 2000;

  const keyOf = (resource: string, namespace: string | undefined, name: string) => `${resource}/${namespace ?? ''}/${name}`;
  const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o));

  function emit(resource: string, type: WatchEvent['type'], object: any) {
    const ev: WatchEvent = { rv: Number(object.metadata.resourceVersion), resource, type, object: clone(object) };
    history.push(ev);
    if (history.length > 5000) {
      const dropped = history.splice(0, history.length - 5000);
      historyStart = dropped[dropped.length - 1].rv;
    }
    for (const w of watchers) send(w, ev);
  }

  function send(w: Watcher, ev: WatchEvent) {
    if (ev.resource !== w.resource) return;
    if (w.namespace && ev.object.metadata.namespace !== w.namespace) return;
    if (!w.matches(ev.object)) return;
    w.res.write(`${JSON.stringify({ type: ev.type, object: ev.object })}\n`);
  }

  function save(resource: string, obj: any, type: WatchEvent['type']) {
    obj.metadata.resourceVersion = String(++rv);
    const key = keyOf(resource, obj.metadata.namespace, obj.metadata.name);
    if (type === 'DELETED') store.delete(key);
    else store.set(key, obj);
    emit(resource, type, obj);
    return obj;
  }

  function createObject(resource: string, namespace: string | undefined, body: any) {
    const type = RESOURCES[resource];
    const obj = clone(body ?? {});
    checkMicroTimes(resource, obj);
    obj.apiVersion = type.apiVersion;
    obj.kind = type.kind;
    obj.metadata = obj.metadata ?? {};
    if (!obj.metadata.name && obj.metadata.generateName) obj.metadata.name = obj.metadata.generateName + randomBytes(3).toString('hex');
    if (!obj.metadata.name) throw new HttpError(422, 'Invalid', 'metadata.name: Required value');
    if (type.namespaced) obj.metadata.namespace = namespace ?? obj.metadata.namespace ?? 'default';
    else delete obj.metadata.namespace;
    if (store.has(keyOf(resource, obj.metadata.namespace, obj.metadata.name))) {
      throw new HttpError(409, 'AlreadyExists', `${resource} "${obj.metadata.name}" already exists`);
    }
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    obj.metadata.generation = 1;
    if (resource === 'pods') {
      const spec = (obj.spec = obj.spec ?? {});
      spec.restartPolicy ??= 'Always';
      spec.dnsPolicy ??= 'ClusterFirst';
      spec.terminationGracePeriodSeconds ??= 30;
      spec.schedulerName ??= 'default-scheduler';
      for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
        defaultPodImagePolicy(c);
        c.terminationMessagePath ??= '/dev/termination-log';
        c.terminationMessagePolicy ??= 'File';
      }
      obj.status = { phase: 'Pending', qosClass: computeQosClass(obj) };
    }
    return save(resource, obj, 'ADDED');
  }

  function deleteObject(resource: string, namespace: string | undefined, name: string, options: any) {
    const key = keyOf(resource, namespace, name);
    const existing = store.get(key);
    if (!existing) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
    if (options?.preconditions?.uid && options.preconditions.uid !== existing.metadata.uid) {
      throw new HttpError(409, 'Conflict', `Precondition failed: UID in precondition: ${options.preconditions.uid}, UID in object meta: ${existing.metadata.uid}`);
    }
    const obj = clone(existing);
    if (resource === 'pods') {
      const grace = options?.gracePeriodSeconds ?? obj.spec?.terminationGracePeriodSeconds ?? 30;
      const terminal = obj.status?.phase === 'Succeeded' || obj.status?.phase === 'Failed';
      if (grace > 0 && obj.spec?.nodeName && !terminal) {
        const current = obj.metadata.deletionGracePeriodSeconds;
        if (current !== undefined && current <= grace) return obj;
        obj.metadata.deletionGracePeriodSeconds = grace;
        obj.metadata.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
        return save(resource, obj, 'MODIFIED');
      }
    }
    return save(resource, obj, 'DELETED');
  }

  function updateObject(resource: string, namespace: string | undefined, name: string, body: any, subresource: string | undefined, checkRv: boolean) {
    const key = keyOf(resource, namespace, name);
    const existing = store.get(key);
    if (!existing) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
    const type = RESOURCES[resource];
    if (checkRv && body?.metadata?.resourceVersion && body.metadata.resourceVersion !== existing.metadata.resourceVersion) {
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    if (body?.metadata?.uid && body.metadata.uid !== existing.metadata.uid) {
      throw new HttpError(409, 'Conflict', `Precondition failed: UID mismatch`);
    }
    checkMicroTimes(resource, body);
    let obj: any;
    if (subresource === 'status') {
      obj = { ...clone(existing), status: clone(body.status ?? {}) };
    } else {
      obj = clone(body);
      obj.apiVersion = type.apiVersion;
      obj.kind = type.kind;
      obj.metadata = { ...obj.metadata, uid: existing.metadata.uid, creationTimestamp: existing.metadata.creationTimestamp, name, namespace: existing.metadata.namespace };
      if (existing.metadata.deletionTimestamp) {
        obj.metadata.deletionTimestamp = existing.metadata.deletionTimestamp;
        obj.metadata.deletionGracePeriodSeconds = existing.metadata.deletionGracePeriodSeconds;
      }
      if (type.hasStatus) obj.status = existing.status;
    }
    return save(resource, obj, 'MODIFIED');
  }

  function patchObject(resource: string, namespace: string | undefined, name: string, patch: any, contentType: string, subresource?: string) {
    const existing = store.get(keyOf(resource, namespace, name));
    if (!existing) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
    let patched: any;
    if (contentType.startsWith('application/merge-patch+json')) patched = mergePatch(clone(existing), patch);
    else if (contentType.startsWith('application/strategic-merge-patch+json')) patched = strategicMergePatch(clone(existing), patch);
    else throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json; got ${contentType}`);
    if (patch?.metadata?.resourceVersion && patch.metadata.resourceVersion !== existing.metadata.resourceVersion) {
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified`);
    }
    patched.metadata.resourceVersion = existing.metadata.resourceVersion;
    return updateObject(resource, namespace, name, patched, subresource, false);
  }

  function startWatch(req: IncomingMessage, res: ServerResponse, resource: string, namespace: string | undefined, q: URLSearchParams) {
    const matches = parseFieldSelector(q.get('fieldSelector'));
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    const w: Watcher = { resource, namespace, matches, res, bookmarks: q.get('allowWatchBookmarks') === 'true', timers: [] };
    const from = q.get('resourceVersion');
    if (!from || from === '0') {
      for (const [key, obj] of store) {
        if (key.startsWith(`${resource}/`)) send(w, { rv: Number(obj.metadata.resourceVersion), resource, type: 'ADDED', object: obj });
      }
    } else {
      const n = Number(from);
      if (!Number.isFinite(n) || n < historyStart) {
        const gone = status(410, 'Expired', `too old resource version: ${from} (${historyStart})`);
        res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`);
        return;
      }
      for (const ev of history) if (ev.rv > n) send(w, ev);
    }
    watchers.add(w);
    const end = () => {
      watchers.delete(w);
      for (const t of w.timers) clearTimeout(t), clearInterval(t);
      if (!res.writableEnded) res.end();
    };
    if (w.bookmarks) {
      w.timers.push(setInterval(() => {
        const kind = RESOURCES[resource].kind;
        res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { kind, apiVersion: RESOURCES[resource].apiVersion, metadata: { resourceVersion: String(rv) } } })}\n`);
      }, bookmarkIntervalMs));
    }
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    if (timeout > 0) w.timers.push(setTimeout(end, timeout * 1000));
    req.on('close', end);
    (w as any).end = end;
  }

  /** TokenRequest: an unsigned JWT-shaped token for an existing service account, bound to the object named in the request. */
  function issueToken(namespace: string, name: string, body: any) {
    const account = store.get(keyOf('serviceaccounts', namespace, name));
    if (!account) throw new HttpError(404, 'NotFound', `serviceaccounts "${name}" not found`);
    const spec = body?.spec ?? {};
    const expirationSeconds = spec.expirationSeconds ?? 3600;
    if (expirationSeconds < 600) throw new HttpError(422, 'Invalid', 'spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes');
    const now = Math.floor(Date.now() / 1000);
    const bound = spec.boundObjectRef;
    const claims = {
      aud: spec.audiences?.length ? spec.audiences : ['https://kubernetes.default.svc.cluster.local'],
      exp: now + expirationSeconds,
      iat: now,
      iss: 'https://kubernetes.default.svc.cluster.local',
      sub: `system:serviceaccount:${namespace}:${name}`,
      'kubernetes.io': {
        namespace,
        serviceaccount: { name, uid: account.metadata.uid },
        ...(bound?.kind === 'Pod' ? { pod: { name: bound.name, uid: bound.uid } } : {}),
      },
    };
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const token = `${b64({ alg: 'none', kid: 'test' })}.${b64(claims)}.${randomBytes(16).toString('base64url')}`;
    tokens.push({ namespace, name, claims });
    return {
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { name, namespace, creationTimestamp: null },
      spec: { ...spec, expirationSeconds },
      status: { token, expirationTimestamp: new Date((now + expirationSeconds) * 1000).toISOString().replace(/\.\d+Z$/, 'Z') },
    };
  }

  /** As the node authorizer's graph has it: a secret or config map named by a pod bound to a node (any node here). */
  function referencedByBoundPod(resource: 'secrets' | 'configmaps', namespace: string, name: string): boolean {
    const secrets = resource === 'secrets';
    for (const [key, pod] of store) {
      if (!key.startsWith('pods/') || pod.metadata.namespace !== namespace || !pod.spec?.nodeName) continue;
      const spec = pod.spec;
      const names: (string | undefined)[] = [];
      if (secrets) names.push(...(spec.imagePullSecrets ?? []).map((s: any) => s.name));
      for (const v of spec.volumes ?? []) {
        names.push(secrets ? v.secret?.secretName : v.configMap?.name);
        for (const src of v.projected?.sources ?? []) names.push(secrets ? src.secret?.name : src.configMap?.name);
      }
      for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? []), ...(spec.ephemeralContainers ?? [])]) {
        for (const e of c.envFrom ?? []) names.push(secrets ? e.secretRef?.name : e.configMapRef?.name);
        for (const e of c.env ?? []) names.push(secrets ? e.valueFrom?.secretKeyRef?.name : e.valueFrom?.configMapKeyRef?.name);
      }
      if (names.includes(name)) return true;
    }
    return false;
  }

  async function readBody(req: IncomingMessage): Promise<any> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new HttpError(400, 'BadRequest', 'body is not JSON');
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', 'https://localhost');
    requests.push({ method: req.method ?? '', path: url.pathname, watch: ['true', '1'].includes(url.searchParams.get('watch') ?? ''), contentType: req.headers['content-type'] });
    if (req.headers.authorization !== `Bearer ${token}`) throw new HttpError(401, 'Unauthorized', 'Unauthorized');
    if (req.method === 'POST' && url.pathname === '/apis/authentication.k8s.io/v1/tokenreviews') {
      const review = await readBody(req);
      const user = self.users.get(review?.spec?.token ?? '');
      const answer = { ...review, status: user ? { authenticated: true, user: { username: user.username, groups: [...user.groups, 'system:authenticated'] } } : { authenticated: false } };
      res.writeHead(201, { 'Content-Type': 'application/json' });
      return void res.end(JSON.stringify(answer));
    }
    if (req.method === 'POST' && url.pathname === '/apis/authorization.k8s.io/v1/subjectaccessreviews') {
      const review = await readBody(req);
      self.accessReviews.push(review.spec);
      const allowed = self.authorize(review.spec);
      res.writeHead(201, { 'Content-Type': 'application/json' });
      return void res.end(JSON.stringify({ ...review, status: { allowed, ...(allowed ? {} : { reason: 'denied by the test policy' }) } }));
    }
    const m =
      /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?([a-z]+)(?:\/([^/]+))?(?:\/(status|token))?$/.exec(url.pathname) ??
      /^\/apis\/coordination\.k8s\.io\/v1\/(?:namespaces\/([^/]+)\/)?(leases)(?:\/([^/]+))?()$/.exec(url.pathname);
    if (!m || !RESOURCES[m[2]]) throw new HttpError(404, 'NotFound', `the server could not find the requested resource ${url.pathname}`);
    const [, namespace, resource, name, subresource] = m;
    const type = RESOURCES[resource];
    if (type.namespaced && name && !namespace) throw new HttpError(404, 'NotFound', 'namespace required');
    const reply = (code: number, obj: any) => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const q = url.searchParams;
    switch (req.method) {
      case 'GET': {
        if (!name && (resource === 'secrets' || resource === 'configmaps')) {
          throw new HttpError(403, 'Forbidden', `${resource} is forbidden: a node may only get the ${resource} of the pods bound to it, not list or watch them`);
        }
        if (!name) {
          if (q.get('watch') === 'true' || q.get('watch') === '1') return startWatch(req, res, resource, namespace, q);
          const matches = parseFieldSelector(q.get('fieldSelector'));
          const items = [...store.entries()]
            .filter(([k, o]) => k.startsWith(`${resource}/`) && (!namespace || o.metadata.namespace === namespace) && matches(o))
            .map(([, o]) => o);
          return reply(200, { kind: `${type.kind}List`, apiVersion: type.apiVersion, metadata: { resourceVersion: String(rv) }, items });
        }
        const obj = store.get(keyOf(resource, namespace, name));
        // The node authorizer lets a node get only pods bound to a node (one node here): a missing pod is 403, not 404.
        if (resource === 'pods' && !obj?.spec?.nodeName) {
          throw new HttpError(403, 'Forbidden', `pods "${name}" is forbidden: no relationship found between this node and this object`);
        }
        if ((resource === 'secrets' || resource === 'configmaps') && !referencedByBoundPod(resource, namespace!, name)) {
          throw new HttpError(403, 'Forbidden', `${resource} "${name}" is forbidden: no relationship found between this node and this object`);
        }
        if (!obj) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
        return reply(200, obj);
      }
      case 'POST':
        if (resource === 'serviceaccounts' && name && subresource === 'token') return reply(201, issueToken(namespace!, name, await readBody(req)));
        if (name) throw new HttpError(405, 'MethodNotAllowed', 'POST to a named object');
        return reply(201, createObject(resource, namespace, await readBody(req)));
      case 'PUT':
        if (!name) throw new HttpError(405, 'MethodNotAllowed', 'PUT to a collection');
        return reply(200, updateObject(resource, namespace, name, await readBody(req), subresource || undefined, true));
      case 'PATCH':
        if (!name) throw new HttpError(405, 'MethodNotAllowed', 'PATCH to a collection');
        return reply(200, patchObject(resource, namespace, name, await readBody(req), String(req.headers['content-type'] ?? ''), subresource || undefined));
      case 'DELETE': {
        if (!name) throw new HttpError(405, 'MethodNotAllowed', 'DELETE of a collection');
        const body = (await readBody(req)) ?? {};
        if (q.get('gracePeriodSeconds') !== null && body.gracePeriodSeconds === undefined) body.gracePeriodSeconds = Number(q.get('gracePeriodSeconds'));
        return reply(200, deleteObject(resource, namespace, name, body));
      }
      default:
        throw new HttpError(405, 'MethodNotAllowed', `method ${req.method}`);
    }
  }

  const server = https.createServer({ key: await fsp.readFile(keyFile), cert: await fsp.readFile(certFile) }, (req, res) => {
    handle(req, res).catch((err) => {
      const e = err instanceof HttpError ? err : new HttpError(500, 'InternalError', String(err?.stack ?? err));
      if (!res.headersSent) res.writeHead(e.code, { 'Content-Type': 'application/json' });
      if (!res.writableEnded) res.end(JSON.stringify(status(e.code, e.reason, e.message)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const kubeconfigPath = path.join(dir, 'kubeconfig');
  const ca = (await fsp.readFile(certFile)).toString('base64');
  await fsp.writeFile(
    kubeconfigPath,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'test', cluster: { server: url, 'certificate-authority-data': ca } }],
      users: [{ name: 'node', user: { token } }],
      contexts: [{ name: 'test', context: { cluster: 'test', user: 'node' } }],
      'current-context': 'test',
    }),
  );

  const endAll = () => {
    for (const w of [...watchers]) (w as any).end();
  };
  const self: TestApiServer = {
    url,
    token,
    kubeconfigPath,
    requests,
    users: new Map(),
    authorize: () => true,
    accessReviews: [],
    tokens,
    update: (resource, obj) => clone(updateObject(resource, obj.metadata.namespace, obj.metadata.name, obj, undefined, false)),
    get: (resource, namespace, name) => {
      const o = store.get(keyOf(resource, namespace, name));
      return o ? clone(o) : undefined;
    },
    list: (resource) => [...store.entries()].filter(([k]) => k.startsWith(`${resource}/`)).map(([, o]) => clone(o)),
    create: (resource, obj) => clone(createObject(resource, obj?.metadata?.namespace, obj)),
    remove: (resource, namespace, name, gracePeriodSeconds) => void deleteObject(resource, namespace, name, { gracePeriodSeconds }),
    dropWatches: endAll,
    compact: () => {
      // Every resourceVersion handed out so far becomes too old to resume from.
      rv++;
      history = [];
      historyStart = rv;
    },
    close: async () => {
      endAll();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  return self;
}
