// Who is calling the kubelet API and may they: x509 client certificates (verified against the client CA)
// or bearer tokens (TokenReview), then SubjectAccessReview on the node's subresource as the kubelet maps it.
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { AuthenticationV1Api, AuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { makeApiClient } from '../kube-client.js';

export interface UserInfo {
  name: string;
  groups: string[];
  uid?: string;
  extra?: Record<string, string[]>;
}

export interface AccessAttributes {
  verb: string;
  /** Subresources of nodes/<name> to try in order (the fine-grained one, then proxy). */
  subresources: string[];
}

const VERBS: Record<string, string> = { GET: 'get', HEAD: 'get', POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };

/** The kubelet's mapping of a request path to the nodes subresource a caller needs. */
export function kubeletAccessAttributes(method: string, pathname: string): AccessAttributes {
  const verb = VERBS[method.toUpperCase()] ?? method.toLowerCase();
  const under = (prefix: string) => pathname === prefix || pathname.startsWith(`${prefix}/`);
  let subresources = ['proxy'];
  if (under('/stats')) subresources = ['stats'];
  else if (under('/metrics')) subresources = ['metrics'];
  else if (under('/logs')) subresources = ['log'];
  else if (under('/checkpoint')) subresources = ['checkpoint'];
  else if (under('/pods') || under('/runningpods')) subresources = ['pods', 'proxy'];
  else if (under('/healthz')) subresources = ['healthz', 'proxy'];
  else if (under('/configz')) subresources = ['configz', 'proxy'];
  return { verb, subresources };
}

/** CN and O of a verified client certificate. */
export function userFromCertificate(req: IncomingMessage): UserInfo | undefined {
  const socket = req.socket as TLSSocket;
  if (!socket.authorized || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate();
  const cn = cert?.subject?.CN;
  if (!cn) return undefined;
  const name = Array.isArray(cn) ? cn[0]! : cn;
  const o = cert.subject.O as string | string[] | undefined;
  const groups = o === undefined ? [] : Array.isArray(o) ? o : [o];
  return { name, groups: [...groups, 'system:authenticated'] };
}

export function bearerToken(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(String(req.headers.authorization ?? ''));
  return m?.[1];
}

class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; until: number }>();
  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until < Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }
  set(key: string, value: V, ttlMs: number): void {
    if (this.entries.size > 1000) this.entries.clear();
    this.entries.set(key, { value, until: Date.now() + ttlMs });
  }
}

export interface KubeletAuthOptions {
  nodeName: string;
  /** TokenReview and SubjectAccessReview go here; without it tokens are refused and authenticated users allowed. */
  kube?: KubeConfig;
  cacheTtlMs?: number;
}

export type AuthOutcome = { ok: true; user?: UserInfo } | { ok: false; code: 401 | 403; message: string };

export class KubeletAuth {
  private readonly authn?: AuthenticationV1Api;
  private readonly authz?: AuthorizationV1Api;
  private readonly tokens = new TtlCache<UserInfo | null>();
  private readonly decisions = new TtlCache<boolean>();
  private readonly ttlMs: number;

  constructor(private readonly opts: KubeletAuthOptions) {
    if (opts.kube) {
      this.authn = makeApiClient(opts.kube, AuthenticationV1Api);
      this.authz = makeApiClient(opts.kube, AuthorizationV1Api);
    }
    this.ttlMs = opts.cacheTtlMs ?? 10_000;
  }

  async authenticate(req: IncomingMessage): Promise<UserInfo | undefined> {
    const fromCert = userFromCertificate(req);
    if (fromCert) return fromCert;
    const token = bearerToken(req);
    if (!token || !this.authn) return undefined;
    const cached = this.tokens.get(token);
    if (cached !== undefined) return cached ?? undefined;
    const review = await this.authn.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } } });
    const u = review.status?.user;
    const user = review.status?.authenticated && u?.username ? { name: u.username, groups: u.groups ?? [], uid: u.uid, extra: u.extra } : undefined;
    this.tokens.set(token, user ?? null, this.ttlMs);
    return user;
  }

  async authorize(user: UserInfo, attrs: AccessAttributes): Promise<boolean> {
    if (!this.authz) return true;
    for (const subresource of attrs.subresources) {
      const key = JSON.stringify([user.name, user.groups, attrs.verb, subresource]);
      let allowed = this.decisions.get(key);
      if (allowed === undefined) {
        const review = await this.authz.createSubjectAccessReview({
          body: {
            apiVersion: 'authorization.k8s.io/v1',
            kind: 'SubjectAccessReview',
            spec: {
              user: user.name,
              groups: user.groups,
              uid: user.uid,
              extra: user.extra,
              resourceAttributes: { verb: attrs.verb, group: '', version: 'v1', resource: 'nodes', subresource, name: this.opts.nodeName },
            },
          },
        });
        allowed = Boolean(review.status?.allowed);
        this.decisions.set(key, allowed, this.ttlMs);
      }
      if (allowed) return true;
    }
    return false;
  }

  /** Authenticates and authorises a request; /healthz needs neither. */
  async check(req: IncomingMessage, pathname: string): Promise<AuthOutcome> {
    if (pathname === '/healthz' || pathname.startsWith('/healthz/')) return { ok: true };
    const user = await this.authenticate(req);
    if (!user) return { ok: false, code: 401, message: 'Unauthorized' };
    const attrs = kubeletAccessAttributes(req.method ?? 'GET', pathname);
    if (await this.authorize(user, attrs)) return { ok: true, user };
    return {
      ok: false,
      code: 403,
      message: `Forbidden (user=${user.name}, verb=${attrs.verb}, resource=nodes, subresource(s)=[${attrs.subresources.join(' ')}])`,
    };
  }
}
