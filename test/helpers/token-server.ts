// A small registry token server (the Docker token auth flow): checks basic credentials
// and issues ES256 JWTs whose x5c header carries its self-signed certificate, which the
// registry trusts through its rootcertbundle.
import { createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import http from 'node:http';
import { promises as fsp } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { run } from '../../src/common/exec.js';

export const TOKEN_USERNAME = 'nodelet-bearer';
export const TOKEN_PASSWORD = 'bearer-secret-7f3a';
export const TOKEN_SERVICE = 'nodelet-test-registry';
export const TOKEN_ISSUER = 'nodelet-test-token-server';
const TOKEN_LIFETIME_S = 600;

export interface TokenServer {
  /** The realm the registry sends clients to: http://127.0.0.1:<port>/token */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate the registry uses as rootcertbundle. */
  certPath: string;
  username: string;
  password: string;
  /** Number of tokens issued so far (tests can check caching). */
  issued(): number;
  stop(): Promise<void>;
}

export interface TokenServerOptions {
  /** Directory for the key and certificate (caller removes it). */
  dir: string;
  username?: string;
  password?: string;
  service?: string;
  issuer?: string;
}

interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/** "repository:nodelet-test/busybox:pull,push" → entry; the name may itself hold colons. */
export function parseScope(scope: string): AccessEntry | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last <= first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter(Boolean),
  };
}

function signJwt(claims: Record<string, unknown>, key: KeyObject, certDer: Buffer): string {
  const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  // JOSE wants the raw r||s form, not DER.
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(signature)}`;
}

function basicCredentials(header: string | undefined): { user: string; pass: string } | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), pass: decoded.slice(colon + 1) };
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const username = opts.username ?? TOKEN_USERNAME;
  const password = opts.password ?? TOKEN_PASSWORD;
  const service = opts.service ?? TOKEN_SERVICE;
  const issuer = opts.issuer ?? TOKEN_ISSUER;
  const keyPath = path.join(opts.dir, 'token-key.pem');
  const certPath = path.join(opts.dir, 'token-cert.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '3650', '-subj', `/CN=${issuer}`,
  ]);
  const key = createPrivateKey(await fsp.readFile(keyPath));
  const certDer = new X509Certificate(await fsp.readFile(certPath)).raw;
  let issuedCount = 0;

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://token');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let user: string | undefined;
    let pass: string | undefined;
    let scopes = url.searchParams.getAll('scope');
    let requestedService = url.searchParams.get('service');
    if (req.method === 'POST') {
      // OAuth2 password grant, as some clients (containerd) send it.
      const form = new URLSearchParams(await readBody(req));
      if (form.get('grant_type') !== 'password') {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unsupported_grant_type' }));
        return;
      }
      user = form.get('username') ?? undefined;
      pass = form.get('password') ?? undefined;
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
      requestedService = form.get('service');
    } else if (req.method === 'GET') {
      const creds = basicCredentials(req.headers.authorization);
      user = creds?.user;
      pass = creds?.pass;
    } else {
      res.writeHead(405).end();
      return;
    }
    if (requestedService && requestedService !== service) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unknown service' }));
      return;
    }
    const anonymous = user === undefined && pass === undefined;
    if (!anonymous && (user !== username || pass !== password)) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="nodelet-test-token"' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
      return;
    }
    // Anonymous callers get a token with no access, so the registry still refuses them.
    const access = anonymous ? [] : scopes.map(parseScope).filter((a): a is AccessEntry => a !== undefined);
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: anonymous ? '' : username,
      aud: service,
      exp: now + TOKEN_LIFETIME_S,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access,
    };
    const token = signJwt(claims, key, certDer);
    issuedCount++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({ token, access_token: token, expires_in: TOKEN_LIFETIME_S, issued_at: new Date(now * 1000).toISOString() }),
    );
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    username,
    password,
    issued: () => issuedCount,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
