// OCI distribution (registry v2) client: mirrors, scheme fallback, bearer/basic auth, verified manifests and blobs.
import { createHash } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { doneReading, releaseBuffer, shareBuffer } from '../common/release-buffer.js';
import { NodeletError, errorMessage, notFound, unauthenticated, unavailable } from '../common/errors.js';
import { logger } from '../common/log.js';
import type { MirrorConfig } from '../config/config.js';
import {
  MANIFEST_ACCEPT,
  isIndex,
  isManifest,
  isSchema1,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
} from './media-types.js';
import { hostPlatform, selectManifest, type Platform } from './platform.js';
import { formatReference, isDigest, type ImageReference } from './reference.js';
import { BODY_TIMEOUT, CONNECT_TIMEOUT, HEADERS_TIMEOUT, HttpPool, type HttpResponse } from './registry-http.js';

export interface RegistryClientOptions {
  /** Registries (host[:port]) allowed over plain HTTP and with unverified TLS. */
  insecure: string[];
  /** Mirrors per registry domain ("*" applies to every registry without its own entry). */
  mirrors: Record<string, MirrorConfig>;
  /** Time allowed to connect and receive response headers, per attempt. */
  requestTimeoutMs: number;
  /** Extra attempts after a network error, 5xx or 429. */
  retries: number;
  /** Longest silence allowed while reading a response body (default: requestTimeoutMs). */
  bodyIdleTimeoutMs?: number;
  /**
   * A manifest or blob download that receives less than STALL_MIN_BYTES in this long has stalled: it fails
   * (and is retried). Unlike an idle timeout, a registry dripping a byte now and then does not reset it. Default 60 s.
   */
  stallTimeoutMs?: number;
  /** Platform chosen from image indexes (default: this host). */
  platform?: Platform;
  userAgent?: string;
}

export interface RegistryCredentials {
  username?: string;
  password?: string;
  /** base64 of user:pass */
  auth?: string;
  /** OAuth2 refresh token, exchanged at the bearer realm. */
  identityToken?: string;
  /** Bearer token sent as is. */
  registryToken?: string;
}

export interface ResolvedImage {
  ref: ImageReference;
  /** Digest of what the tag pointed at (index or manifest): the repo digest. */
  topDigest: string;
  /** Digest of the platform manifest. */
  manifestDigest: string;
  manifestMediaType: string;
  manifest: ImageManifest;
  configDescriptor: Descriptor;
  /** The image config blob, digest and size verified. */
  config: Buffer;
  layers: Descriptor[];
  /** Base URL of the endpoint that served the image (mirror or upstream). */
  endpoint: string;
}

interface Endpoint {
  /** Registry host[:port] as written in URLs. */
  host: string;
  /** Scheme + host + optional prefix, no trailing slash; the scheme may change after an HTTPS failure. */
  scheme: 'https' | 'http';
  prefix: string;
  /** Query appended to manifest/blob URLs (containerd's ns= for mirrors). */
  query: string;
  mirror: boolean;
  /** Whether an HTTPS failure may fall back to plain HTTP. */
  httpFallback: boolean;
  skipVerify: boolean;
}

interface PullContext {
  image: string;
  repository: string;
  creds?: RegistryCredentials;
  signal?: AbortSignal;
}

interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

type Response = HttpResponse;

const DOCKER_HUB_DOMAIN = 'docker.io';
const DOCKER_HUB_HOST = 'registry-1.docker.io';
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const MAX_INDEX_DEPTH = 2;
const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 10_000;
const DEFAULT_STALL_TIMEOUT_MS = 60_000;
/** How long an unused registry connection stays open for the next request. */
const KEEP_ALIVE_MS = 30_000;
/** Bytes of a blob download handed on at once (to its file, digest check and a streamed unpack). */
const BLOB_BATCH_BYTES = 1 << 20;
/** Written blob bytes after which they are flushed to disk while the download goes on. */
const BLOB_EARLY_FLUSH_BYTES = 8 << 20;
/** Progress that counts against the stall timeout: 1 KiB, so a byte-at-a-time drip counts as a stall. */
export const STALL_MIN_BYTES = 1024;
// A body cut short ends in ECONNRESET ("aborted") or a premature close; the size and digest checks catch the rest.
const RETRYABLE_CODES = new Set([
  CONNECT_TIMEOUT,
  HEADERS_TIMEOUT,
  BODY_TIMEOUT,
  'ERR_STREAM_PREMATURE_CLOSE',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'EPROTO',
]);
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

/** The registry refused with a 404: the next endpoint may still have it. */
class RegistryNotFound extends NodeletError {
  constructor(message: string) {
    super('NotFound', message);
  }
}

/** A failure worth another attempt: network error, 5xx, 429. */
class RetryableError extends NodeletError {
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryAfterMs?: number, cause?: unknown) {
    super('Unavailable', message, { cause });
    this.retryAfterMs = retryAfterMs;
  }
}

function hostnameOf(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  return colon >= 0 ? host.slice(0, colon) : host;
}

function isLoopback(host: string): boolean {
  return LOOPBACK_HOSTS.has(hostnameOf(host));
}

/** Parses WWW-Authenticate values; returns the bearer challenge if any, else basic. */
export function parseChallenge(values: string[]): Challenge | undefined {
  let basic: Challenge | undefined;
  for (const value of values) {
    const match = /^\s*(\w+)\s*(.*)$/s.exec(value);
    if (!match) continue;
    const scheme = match[1]!.toLowerCase();
    const params: Record<string, string> = {};
    const paramRe = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
    for (let m = paramRe.exec(match[2]!); m; m = paramRe.exec(match[2]!)) {
      params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
    }
    if (scheme === 'bearer') return { scheme, params };
    if (scheme === 'basic') basic = { scheme, params };
  }
  return basic;
}

function basicCredentials(creds?: RegistryCredentials): { username: string; password: string } | undefined {
  if (!creds) return undefined;
  if (creds.username !== undefined && creds.username !== '') {
    return { username: creds.username, password: creds.password ?? '' };
  }
  if (creds.auth) {
    const decoded = Buffer.from(creds.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  return undefined;
}

function basicHeader(user: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${user.username}:${user.password}`).toString('base64')}`;
}

function credentialsKey(creds?: RegistryCredentials): string {
  if (!creds) return '';
  const basic = basicCredentials(creds);
  const material = JSON.stringify([basic?.username, basic?.password, creds.identityToken]);
  return createHash('sha256').update(material).digest('hex').slice(0, 16);
}

/** sha256 / sha384 / sha512 of data, in the algorithm of `like`. */
function digestOf(data: Buffer, like: string): string {
  const algorithm = like.slice(0, like.indexOf(':'));
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** The reason a registry gives in its JSON error body, if any. */
async function registryReason(res: Response): Promise<string> {
  let text = '';
  try {
    text = (await res.text()).slice(0, 2000);
  } catch {
    return `HTTP ${res.statusCode}`;
  }
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: string; message?: string }[]; details?: string };
    if (Array.isArray(parsed.errors) && parsed.errors.length > 0) {
      return `HTTP ${res.statusCode}: ` + parsed.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    }
    if (parsed.details) return `HTTP ${res.statusCode}: ${parsed.details}`;
  } catch {
    // not JSON
  }
  return text.trim() ? `HTTP ${res.statusCode}: ${text.trim().slice(0, 200)}` : `HTTP ${res.statusCode}`;
}

function isNetworkError(err: unknown): boolean {
  if (err instanceof RetryableError) return true;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string') return false;
  return RETRYABLE_CODES.has(code) || code.startsWith('ERR_SSL');
}

/** An HTTPS failure that says "this port speaks plain HTTP" or "nothing listens for TLS here". */
function isHttpsFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = errorMessage(err);
  if (typeof code === 'string' && (code.startsWith('ERR_SSL') || code === 'EPROTO' || code === 'ECONNREFUSED' || code === 'ECONNRESET')) {
    return true;
  }
  return /ssl|tls|wrong version number/i.test(message);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class RegistryClient {
  private readonly opts: Required<Omit<RegistryClientOptions, 'platform'>> & { platform: Platform };
  private readonly log = logger({ component: 'registry' });
  private readonly verifyingPool: HttpPool;
  private readonly insecurePool: HttpPool;
  /** Scheme that worked for a host that may fall back to HTTP. */
  private readonly schemeByHost = new Map<string, 'https' | 'http'>();
  private readonly challengeByHost = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly tokensInFlight = new Map<string, Promise<string>>();

  constructor(options: RegistryClientOptions) {
    this.opts = {
      insecure: options.insecure ?? [],
      mirrors: options.mirrors ?? {},
      requestTimeoutMs: options.requestTimeoutMs,
      retries: Math.max(0, options.retries),
      bodyIdleTimeoutMs: options.bodyIdleTimeoutMs ?? options.requestTimeoutMs,
      stallTimeoutMs: options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS,
      platform: options.platform ?? hostPlatform(),
      userAgent: options.userAgent ?? 'nodelet/0.1',
    };
    const common = {
      headersTimeoutMs: this.opts.requestTimeoutMs,
      bodyIdleTimeoutMs: this.opts.bodyIdleTimeoutMs,
      keepAliveMs: KEEP_ALIVE_MS,
    };
    this.verifyingPool = new HttpPool({ ...common, rejectUnauthorized: true });
    this.insecurePool = new HttpPool({ ...common, rejectUnauthorized: false });
  }

  /** Closes every connection, pooled or in use. */
  async close(): Promise<void> {
    this.verifyingPool.close();
    this.insecurePool.close();
  }

  /** The endpoints tried for a registry domain, in order: mirrors, then upstream (unless disabled). */
  endpointsFor(domain: string): Endpoint[] {
    const mirrorConfig = this.opts.mirrors[domain] ?? this.opts.mirrors['*'];
    const endpoints: Endpoint[] = [];
    for (const raw of mirrorConfig?.endpoints ?? []) {
      const url = new URL(raw.includes('://') ? raw : `https://${raw}`);
      const prefix = url.pathname.replace(/\/+$/, '').replace(/\/v2$/, '');
      const explicitScheme = raw.includes('://');
      const insecure = this.isInsecureHost(url.host);
      endpoints.push({
        host: url.host,
        scheme: url.protocol === 'http:' ? 'http' : 'https',
        prefix,
        query: `ns=${encodeURIComponent(domain)}`,
        mirror: true,
        httpFallback: !explicitScheme && insecure,
        skipVerify: insecure,
      });
    }
    if (!mirrorConfig || mirrorConfig.fallbackToUpstream !== false || endpoints.length === 0) {
      const host = domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_HOST : domain;
      const insecure = this.isInsecureHost(domain) || this.isInsecureHost(host);
      endpoints.push({ host, scheme: 'https', prefix: '', query: '', mirror: false, httpFallback: insecure, skipVerify: insecure });
    }
    return endpoints;
  }

  private isInsecureHost(host: string): boolean {
    return this.opts.insecure.includes(host) || isLoopback(host);
  }

  /** Resolves a reference to its platform manifest and config, verifying every digest. */
  async resolve(ref: ImageReference, creds?: RegistryCredentials, signal?: AbortSignal): Promise<ResolvedImage> {
    const ctx = this.context(ref, creds, signal);
    return this.onEachEndpoint(ctx, ref, async (ep) => {
      const top = await this.fetchManifest(ep, ctx, ref.digest ?? ref.tag ?? 'latest');
      let current = top;
      for (let depth = 0; isIndex(current.mediaType); depth++) {
        if (depth >= MAX_INDEX_DEPTH) throw this.error('Internal', ctx, ep, 'image indexes nested too deeply');
        let chosen: Descriptor;
        try {
          chosen = selectManifest(current.parsed as ImageIndex, this.opts.platform);
        } catch (err) {
          throw new NodeletError('NotFound', `image "${ctx.image}" from ${ep.host}: ${errorMessage(err)}`);
        }
        current = await this.fetchManifest(ep, ctx, chosen.digest, chosen);
      }
      if (!isManifest(current.mediaType)) {
        throw this.error('Internal', ctx, ep, `unsupported manifest media type "${current.mediaType}"`);
      }
      const manifest = current.parsed as ImageManifest;
      if (!manifest.config || !Array.isArray(manifest.layers)) {
        throw this.error('Internal', ctx, ep, `manifest ${current.digest} lacks config or layers`);
      }
      for (const desc of [manifest.config, ...manifest.layers]) {
        if (typeof desc.digest !== 'string' || !isDigest(desc.digest) || typeof desc.size !== 'number' || desc.size < 0) {
          throw this.error('Internal', ctx, ep, `manifest ${current.digest} has an invalid descriptor ${JSON.stringify(desc)}`);
        }
      }
      if (manifest.config.size > MAX_CONFIG_BYTES) {
        throw this.error('Internal', ctx, ep, `config ${manifest.config.digest} is larger than ${MAX_CONFIG_BYTES} bytes`);
      }
      const config = await this.fetchBlobToBuffer(ep, ctx, manifest.config);
      return {
        ref,
        topDigest: top.digest,
        manifestDigest: current.digest,
        manifestMediaType: current.mediaType,
        manifest,
        configDescriptor: manifest.config,
        config,
        layers: manifest.layers,
        endpoint: this.baseUrl(ep),
      };
    });
  }

  /**
   * Streams a blob into destFile (created or truncated), verifying size and digest.
   * onProgress receives the bytes written so far in the current attempt.
   */
  async downloadBlob(
    ref: ImageReference,
    desc: { digest: string; size: number; mediaType?: string },
    destFile: string,
    creds?: RegistryCredentials,
    signal?: AbortSignal,
    onProgress?: (bytes: number) => void,
    openSink?: () => Writable,
  ): Promise<void> {
    const ctx = this.context(ref, creds, signal);
    if (!isDigest(desc.digest)) throw this.error('InvalidArgument', ctx, undefined, `invalid blob digest "${desc.digest}"`);
    try {
      await this.onEachEndpoint(ctx, ref, (ep) =>
        this.withRetries(ctx, ep, async () => {
          const res = await this.send(ep, ctx, 'GET', this.blobPath(ep, ctx, desc.digest), {});
          await this.writeVerifiedBlob(res, ep, ctx, desc, destFile, onProgress, openSink);
        }),
      );
    } catch (err) {
      await unlink(destFile).catch(() => undefined);
      throw err;
    }
  }

  private context(ref: ImageReference, creds?: RegistryCredentials, signal?: AbortSignal): PullContext {
    return { image: formatReference(ref), repository: ref.path, creds, signal };
  }

  private error(kind: NodeletError['kind'], ctx: PullContext, ep: Endpoint | undefined, why: string): NodeletError {
    return new NodeletError(kind, `image "${ctx.image}"${ep ? ` from ${ep.host}` : ''}: ${why}`);
  }

  private cancelled(ctx: PullContext, ep?: Endpoint): NodeletError {
    return new NodeletError('DeadlineExceeded', `pull cancelled: image "${ctx.image}"${ep ? ` from ${ep.host}` : ''}`, {
      cause: ctx.signal?.reason,
    });
  }

  private baseUrl(ep: Endpoint): string {
    const scheme = ep.httpFallback ? this.schemeByHost.get(ep.host) ?? ep.scheme : ep.scheme;
    return `${scheme}://${ep.host}${ep.prefix}`;
  }

  private manifestPath(ep: Endpoint, ctx: PullContext, reference: string): string {
    return `/v2/${ctx.repository}/manifests/${reference}${ep.query ? `?${ep.query}` : ''}`;
  }

  private blobPath(ep: Endpoint, ctx: PullContext, digest: string): string {
    return `/v2/${ctx.repository}/blobs/${digest}${ep.query ? `?${ep.query}` : ''}`;
  }

  /** Runs fn against each endpoint until one succeeds; 404, auth and network failures move on to the next. */
  private async onEachEndpoint<T>(ctx: PullContext, ref: ImageReference, fn: (ep: Endpoint) => Promise<T>): Promise<T> {
    const endpoints = this.endpointsFor(ref.domain);
    let lastFailure: unknown;
    const tried: string[] = [];
    for (const ep of endpoints) {
      if (ctx.signal?.aborted) throw this.cancelled(ctx, ep);
      tried.push(ep.host);
      try {
        return await fn(ep);
      } catch (err) {
        if (ctx.signal?.aborted) throw this.cancelled(ctx, ep);
        if (!(err instanceof NodeletError)) throw this.error('Internal', ctx, ep, errorMessage(err));
        const moveOn = err instanceof RegistryNotFound || (err instanceof NodeletError && (err.kind === 'Unauthenticated' || err.kind === 'Unavailable'));
        if (!moveOn) throw err;
        if (!(err instanceof RegistryNotFound)) lastFailure = err;
        this.log.debug({ image: ctx.image, host: ep.host, err: errorMessage(err) }, 'registry endpoint failed');
      }
    }
    if (lastFailure) throw lastFailure;
    throw notFound(`image "${ctx.image}" not found (tried ${tried.join(', ')})`);
  }

  private async withRetries<T>(ctx: PullContext, ep: Endpoint, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (ctx.signal?.aborted) throw this.cancelled(ctx, ep);
        if (!isNetworkError(err)) throw err;
        const message = `image "${ctx.image}" from ${ep.host}: ${errorMessage(err)}`;
        if (attempt >= this.opts.retries) {
          throw unavailable(err instanceof RetryableError ? err.message : message, err);
        }
        const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt) * (0.75 + Math.random() * 0.5);
        const delay = err instanceof RetryableError && err.retryAfterMs !== undefined ? Math.min(err.retryAfterMs, 30_000) : backoff;
        this.log.debug({ image: ctx.image, host: ep.host, attempt, delay, err: errorMessage(err) }, 'registry request retry');
        try {
          await sleep(delay, ctx.signal);
        } catch {
          throw this.cancelled(ctx, ep);
        }
      }
    }
  }

  private async fetchManifest(
    ep: Endpoint,
    ctx: PullContext,
    reference: string,
    expected?: Descriptor,
  ): Promise<{ digest: string; mediaType: string; parsed: unknown; bytes: Buffer }> {
    return this.withRetries(ctx, ep, async () => {
      const res = await this.send(ep, ctx, 'GET', this.manifestPath(ep, ctx, reference), { accept: MANIFEST_ACCEPT });
      if (res.statusCode === 404) {
        await res.dump();
        throw new RegistryNotFound(`image "${ctx.image}" from ${ep.host}: manifest ${reference} not found`);
      }
      if (res.statusCode !== 200) throw await this.unexpectedStatus(res, ep, ctx, `manifest ${reference}`);
      const bytes = await this.readLimited(res, MAX_MANIFEST_BYTES, ep, ctx, `manifest ${reference}`, 'Internal');

      const headerDigest = res.header('docker-content-digest');
      const wantDigest = isDigest(reference) ? reference : headerDigest && isDigest(headerDigest) ? headerDigest : undefined;
      const digest = digestOf(bytes, wantDigest ?? 'sha256:');
      if (wantDigest && digest !== wantDigest) {
        throw this.error('DataLoss', ctx, ep, `manifest ${reference}: digest mismatch (got ${digest}, want ${wantDigest})`);
      }
      if (expected && expected.size !== bytes.length) {
        throw this.error('DataLoss', ctx, ep, `manifest ${reference}: size mismatch (got ${bytes.length}, want ${expected.size})`);
      }

      let parsed: { schemaVersion?: number; mediaType?: string; manifests?: unknown; config?: unknown; layers?: unknown };
      try {
        parsed = JSON.parse(bytes.toString('utf8'));
      } catch (err) {
        throw this.error('Internal', ctx, ep, `manifest ${reference} is not valid JSON: ${errorMessage(err)}`);
      }
      const contentType = (res.header('content-type') ?? '').split(';')[0]!.trim();
      if (isSchema1(contentType) || parsed.schemaVersion === 1) {
        throw this.error(
          'FailedPrecondition',
          ctx,
          ep,
          'Docker schema 1 manifests are not supported (deprecated format); push the image again with a current client',
        );
      }
      let mediaType = parsed.mediaType ?? '';
      if (!isIndex(mediaType) && !isManifest(mediaType)) mediaType = contentType;
      if (!isIndex(mediaType) && !isManifest(mediaType)) mediaType = expected?.mediaType ?? '';
      if (!isIndex(mediaType) && !isManifest(mediaType)) {
        if (Array.isArray(parsed.manifests)) mediaType = 'application/vnd.oci.image.index.v1+json';
        else if (parsed.config && Array.isArray(parsed.layers)) mediaType = 'application/vnd.oci.image.manifest.v1+json';
        else throw this.error('Internal', ctx, ep, `manifest ${reference} has unknown media type "${contentType}"`);
      }
      this.log.debug({ image: ctx.image, host: ep.host, reference, digest, mediaType }, 'manifest fetched');
      return { digest, mediaType, parsed, bytes };
    });
  }

  private async fetchBlobToBuffer(ep: Endpoint, ctx: PullContext, desc: Descriptor): Promise<Buffer> {
    return this.withRetries(ctx, ep, async () => {
      const res = await this.send(ep, ctx, 'GET', this.blobPath(ep, ctx, desc.digest), {});
      if (res.statusCode === 404) {
        await res.dump();
        throw new RegistryNotFound(`image "${ctx.image}" from ${ep.host}: blob ${desc.digest} not found`);
      }
      if (res.statusCode !== 200) throw await this.unexpectedStatus(res, ep, ctx, `blob ${desc.digest}`);
      const bytes = await this.readLimited(res, desc.size, ep, ctx, `blob ${desc.digest}`, 'DataLoss');
      const digest = digestOf(bytes, desc.digest);
      if (bytes.length !== desc.size || digest !== desc.digest) {
        throw new NodeletError(
          'DataLoss',
          `blob ${desc.digest} from ${ep.host}: digest mismatch (got ${digest}, ${bytes.length} bytes) pulling "${ctx.image}"`,
        );
      }
      return bytes;
    });
  }

  private async writeVerifiedBlob(
    res: Response,
    ep: Endpoint,
    ctx: PullContext,
    desc: { digest: string; size: number },
    destFile: string,
    onProgress?: (bytes: number) => void,
    openSink?: () => Writable,
  ): Promise<void> {
    if (res.statusCode === 404) {
      await res.dump();
      throw new RegistryNotFound(`image "${ctx.image}" from ${ep.host}: blob ${desc.digest} not found`);
    }
    if (res.statusCode !== 200) throw await this.unexpectedStatus(res, ep, ctx, `blob ${desc.digest}`);
    const algorithm = desc.digest.slice(0, desc.digest.indexOf(':'));
    const hash = createHash(algorithm);
    let written = 0;
    let oversize = false;
    const stall = this.watchStall(res, ep, ctx, `blob ${desc.digest}`);
    // Opened before the pipeline, and waited on until closed after it: a stream that opened the file lazily
    // could still create it after a failed pipeline returned and the caller's unlink had run.
    const file = await open(destFile, 'w');
    const out = file.createWriteStream({ highWaterMark: BLOB_BATCH_BYTES });
    // The blob store fsyncs the whole file once it is complete; flushing it as it arrives takes most of that
    // fsync's wait off the end of the pull (the disk writes while the rest downloads and unpacks).
    let flushedUpTo = 0;
    let flushing: Promise<void> | undefined;
    const flushEarly = (): void => {
      if (flushing || out.bytesWritten - flushedUpTo < BLOB_EARLY_FLUSH_BYTES) return;
      flushedUpTo = out.bytesWritten;
      flushing = file.datasync().then(
        () => (flushing = undefined),
        () => (flushing = undefined), // the store's own fsync at the end reports a failing disk
      );
    };
    // Each attempt's bytes also go to a fresh sink (an unpack running while the blob downloads); the sink ends
    // with the body, or is destroyed when the attempt fails. Its consumer waits for this call's verdict on the digest.
    const sink = openSink?.();
    const feedSink = (chunk: Buffer, done: () => void): void => {
      if (!sink || sink.destroyed || sink.writableEnded || sink.write(chunk)) return done();
      const go = () => {
        sink.off('drain', go);
        sink.off('close', go);
        done();
      };
      sink.on('drain', go);
      sink.on('close', go);
    };
    // The socket's ~64 KiB chunks go on in batches of BLOB_BATCH_BYTES: one file write, one gunzip round trip
    // in the thread pool and one extractor write per batch instead of per chunk (a copy costs less than those).
    let batch: Buffer[] = [];
    let batched = 0;
    // Batches of ours, freed once both the file and the sink's reader (see unpack) are done with them.
    let batchedTotal = 0;
    const inFile: Array<{ chunk: Buffer; end: number }> = [];
    const releaseWritten = (): void => {
      while (inFile.length > 0 && inFile[0]!.end <= out.bytesWritten) doneReading(inFile.shift()!.chunk);
    };
    const forward = (push: (chunk: Buffer) => void, done: (err?: Error | null) => void): void => {
      if (batched === 0) return done();
      releaseWritten();
      const chunk = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
      batchedTotal += batched;
      if (batch.length > 1) {
        // The parts (node's copies of the body out of each socket read) are freed now: left to the garbage collector
        // they pile up by tens of MiB between collections and leave the malloc heap fragmented after a pull.
        for (const part of batch) releaseBuffer(part);
        shareBuffer(chunk, sink && !sink.destroyed && !sink.writableEnded ? 2 : 1);
        inFile.push({ chunk, end: batchedTotal });
      }
      batch = [];
      batched = 0;
      feedSink(chunk, () => {
        push(chunk);
        flushEarly();
        done();
      });
    };
    const meter = new Transform({
      writableHighWaterMark: BLOB_BATCH_BYTES,
      readableHighWaterMark: BLOB_BATCH_BYTES,
      transform(chunk: Buffer, _encoding, callback) {
        written += chunk.length;
        stall.progress(chunk.length);
        if (written > desc.size) {
          oversize = true;
          callback(new Error('blob larger than its descriptor'));
          return;
        }
        hash.update(chunk);
        onProgress?.(written);
        batch.push(chunk);
        batched += chunk.length;
        if (batched < BLOB_BATCH_BYTES) return callback();
        forward((c) => this.push(c), callback);
      },
      flush(callback) {
        forward((c) => this.push(c), callback);
      },
    });
    try {
      await pipeline(res.body, meter, out);
      releaseWritten();
      if (!oversize) sink?.end();
    } catch (err) {
      sink?.destroy(err as Error);
      if (!oversize) throw stall.explain(err);
    } finally {
      stall.stop();
      if (flushing) await flushing;
      if (!out.closed) await new Promise<void>((closed) => out.once('close', () => closed()));
    }
    const got = `${algorithm}:${hash.digest('hex')}`;
    if (oversize || written !== desc.size) {
      throw new NodeletError(
        'DataLoss',
        `blob ${desc.digest} from ${ep.host}: size mismatch (got ${oversize ? 'more than' : ''} ${written} bytes, want ${desc.size}) pulling "${ctx.image}"`,
      );
    }
    if (got !== desc.digest) {
      throw new NodeletError('DataLoss', `blob ${desc.digest} from ${ep.host}: digest mismatch (got ${got}) pulling "${ctx.image}"`);
    }
  }

  /** Reads a whole body of at most limit bytes; more is an error of overKind (DataLoss when the limit is a descriptor's size). */
  private async readLimited(
    res: Response,
    limit: number,
    ep: Endpoint,
    ctx: PullContext,
    what: string,
    overKind: NodeletError['kind'],
  ): Promise<Buffer> {
    const declared = Number(res.header('content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      res.body.destroy();
      throw this.error(overKind, ctx, ep, `${what} is ${declared} bytes, more than the ${limit} allowed`);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    const stall = this.watchStall(res, ep, ctx, what);
    try {
      for await (const chunk of res.body) {
        total += (chunk as Buffer).length;
        stall.progress((chunk as Buffer).length);
        if (total > limit) {
          res.body.destroy();
          throw this.error(overKind, ctx, ep, `${what} is more than the ${limit} bytes allowed`);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      throw stall.explain(err);
    } finally {
      stall.stop();
    }
    return Buffer.concat(chunks);
  }

  /**
   * Watches a body being read: when less than STALL_MIN_BYTES arrive within stallTimeoutMs, the body is destroyed
   * with a retryable error naming the registry and what was being fetched. explain() turns the read's failure
   * (the stall, or the body's idle timeout) into that error.
   */
  private watchStall(res: Response, ep: Endpoint, ctx: PullContext, what: string) {
    const timeoutMs = this.opts.stallTimeoutMs;
    const idleMs = this.opts.bodyIdleTimeoutMs;
    const stalled = (why: string) => new RetryableError(`image "${ctx.image}" from ${ep.host}: ${what} stalled: ${why}`);
    let fired: RetryableError | undefined;
    let pending = 0;
    const timer = setTimeout(() => {
      fired = stalled(`less than ${STALL_MIN_BYTES} bytes received in ${timeoutMs / 1000} s`);
      res.body.destroy(fired);
    }, timeoutMs);
    return {
      progress(bytes: number): void {
        pending += bytes;
        if (pending >= STALL_MIN_BYTES) {
          pending = 0;
          timer.refresh();
        }
      },
      stop(): void {
        clearTimeout(timer);
      },
      explain(err: unknown): unknown {
        if (fired) return fired;
        if ((err as { code?: unknown } | undefined)?.code === BODY_TIMEOUT) {
          return stalled(`no byte received in ${idleMs / 1000} s`);
        }
        return err;
      },
    };
  }

  private async unexpectedStatus(res: Response, ep: Endpoint, ctx: PullContext, what: string): Promise<NodeletError> {
    const reason = await registryReason(res);
    const message = `image "${ctx.image}" from ${ep.host}: ${what}: ${reason}`;
    if (res.statusCode === 429 || res.statusCode >= 500) {
      const retryAfter = Number(res.header('retry-after'));
      return new RetryableError(message, Number.isFinite(retryAfter) ? retryAfter * 1000 : undefined);
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      return unauthenticated(
        `pull access denied for image "${ctx.image}" from ${ep.host}: ${reason} (the repository may not exist or may require authorization)`,
      );
    }
    return new NodeletError('Internal', message);
  }

  /**
   * One request to an endpoint with authentication: the known challenge is answered up front, a 401 with a
   * new challenge is answered once. Handles the HTTPS→HTTP fallback and redirects.
   */
  private async send(
    ep: Endpoint,
    ctx: PullContext,
    method: 'GET' | 'HEAD',
    path: string,
    headers: Record<string, string>,
  ): Promise<Response> {
    let authorization = await this.authorizationFor(ep, ctx);
    for (let answered = false; ; answered = true) {
      const reqHeaders: Record<string, string> = { ...headers };
      if (authorization) reqHeaders.authorization = authorization;
      const res = await this.sendWithFallback(ep, ctx, method, path, reqHeaders);
      if (res.statusCode !== 401 || answered || ctx.creds?.registryToken) return res;
      const challenge = parseChallenge(res.headerList('www-authenticate'));
      if (!challenge) return res;
      await res.dump();
      this.challengeByHost.set(ep.host, challenge);
      // Even with nothing new to offer (basic challenge, no credentials) we ask once more, to surface the 401.
      authorization = await this.authorizationFor(ep, ctx, challenge.params.scope);
    }
  }

  private async sendWithFallback(
    ep: Endpoint,
    ctx: PullContext,
    method: 'GET' | 'HEAD',
    path: string,
    headers: Record<string, string>,
  ): Promise<Response> {
    const chosen = this.schemeByHost.get(ep.host);
    const scheme = ep.httpFallback ? chosen ?? ep.scheme : ep.scheme;
    const url = new URL(`${scheme}://${ep.host}${ep.prefix}${path}`);
    try {
      const res = await this.followRedirects(url, method, headers, ctx, ep);
      if (ep.httpFallback && !chosen) this.schemeByHost.set(ep.host, scheme);
      return res;
    } catch (err) {
      if (ctx.signal?.aborted || !ep.httpFallback || scheme !== 'https' || chosen === 'https' || !isHttpsFailure(err)) {
        throw err;
      }
      this.log.debug({ host: ep.host, err: errorMessage(err) }, 'HTTPS failed, falling back to plain HTTP');
      const httpUrl = new URL(`http://${ep.host}${ep.prefix}${path}`);
      const res = await this.followRedirects(httpUrl, method, headers, ctx, ep);
      this.schemeByHost.set(ep.host, 'http');
      return res;
    }
  }

  private async followRedirects(
    start: URL,
    method: 'GET' | 'HEAD',
    headers: Record<string, string>,
    ctx: PullContext,
    ep: Endpoint,
  ): Promise<Response> {
    let url = start;
    const reqHeaders: Record<string, string> = { 'user-agent': this.opts.userAgent, ...headers };
    for (let hop = 0; ; hop++) {
      const res = await this.poolFor(url.host, ep).request(url, { method, headers: reqHeaders, signal: ctx.signal });
      const location = res.header('location');
      if (![301, 302, 303, 307, 308].includes(res.statusCode) || !location) return res;
      await res.dump();
      if (hop >= MAX_REDIRECTS) throw this.error('Internal', ctx, ep, `too many redirects fetching ${start.pathname}`);
      const next = new URL(location, url);
      // Credentials for the registry must not travel to the storage backend it redirects to.
      if (next.origin !== url.origin) delete reqHeaders.authorization;
      url = next;
    }
  }

  private poolFor(host: string, ep: Endpoint): HttpPool {
    return (host === ep.host && ep.skipVerify) || this.isInsecureHost(host) ? this.insecurePool : this.verifyingPool;
  }

  /** The Authorization header for a request to ep, from the credentials and the host's last challenge. */
  private async authorizationFor(ep: Endpoint, ctx: PullContext, challengeScope?: string): Promise<string | undefined> {
    if (ctx.creds?.registryToken) return `Bearer ${ctx.creds.registryToken}`;
    const challenge = this.challengeByHost.get(ep.host);
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      const basic = basicCredentials(ctx.creds);
      return basic ? basicHeader(basic) : undefined;
    }
    const scope = `repository:${ctx.repository}:pull`;
    const scopes = challengeScope && challengeScope !== scope ? [scope, ...challengeScope.split(' ').filter((s) => s !== scope)] : [scope];
    const token = await this.bearerToken(ep, ctx, challenge, scopes);
    return `Bearer ${token}`;
  }

  private async bearerToken(ep: Endpoint, ctx: PullContext, challenge: Challenge, scopes: string[]): Promise<string> {
    const key = `${ep.host}|${scopes.join(' ')}|${credentialsKey(ctx.creds)}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.token;
    let inFlight = this.tokensInFlight.get(key);
    if (!inFlight) {
      inFlight = this.fetchToken(ep, ctx, challenge, scopes).then(
        (t) => {
          this.tokens.set(key, t);
          this.tokensInFlight.delete(key);
          return t.token;
        },
        (err: unknown) => {
          this.tokensInFlight.delete(key);
          throw err;
        },
      );
      this.tokensInFlight.set(key, inFlight);
    }
    return inFlight;
  }

  private async fetchToken(ep: Endpoint, ctx: PullContext, challenge: Challenge, scopes: string[]): Promise<CachedToken> {
    const realm = challenge.params.realm;
    if (!realm) throw this.error('Unauthenticated', ctx, ep, 'bearer challenge without a realm');
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw this.error('Unauthenticated', ctx, ep, `bearer challenge with an invalid realm "${realm}"`);
    }
    const service = challenge.params.service;
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent };
    let method: 'GET' | 'POST' = 'GET';
    let body: string | undefined;
    if (ctx.creds?.identityToken) {
      method = 'POST';
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: ctx.creds.identityToken, client_id: 'nodelet' });
      if (service) form.set('service', service);
      form.set('scope', scopes.join(' '));
      body = form.toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else {
      if (service) realmUrl.searchParams.set('service', service);
      for (const scope of scopes) realmUrl.searchParams.append('scope', scope);
      const basic = basicCredentials(ctx.creds);
      if (basic) headers.authorization = basicHeader(basic);
    }
    let res: Response;
    try {
      const pool = this.isInsecureHost(realmUrl.host) ? this.insecurePool : this.verifyingPool;
      res = await pool.request(realmUrl, { method, headers, body, signal: ctx.signal });
    } catch (err) {
      if (ctx.signal?.aborted) throw this.cancelled(ctx, ep);
      throw new RetryableError(`image "${ctx.image}" from ${ep.host}: token request to ${realmUrl.host}: ${errorMessage(err)}`, undefined, err);
    }
    if (res.statusCode !== 200) {
      const reason = await registryReason(res);
      const message = `image "${ctx.image}" from ${ep.host}: token request to ${realmUrl.host}: ${reason}`;
      if (res.statusCode === 429 || res.statusCode >= 500) throw new RetryableError(message);
      throw unauthenticated(message);
    }
    let parsed: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      parsed = (await res.json()) as typeof parsed;
    } catch (err) {
      throw this.error('Unauthenticated', ctx, ep, `token response from ${realmUrl.host} is not JSON: ${errorMessage(err)}`);
    }
    const token = parsed.token || parsed.access_token;
    if (!token) throw this.error('Unauthenticated', ctx, ep, `token response from ${realmUrl.host} has no token`);
    const lifetimeSec = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    const issuedAt = parsed.issued_at ? Date.parse(parsed.issued_at) : NaN;
    const start = Number.isFinite(issuedAt) && issuedAt <= Date.now() ? issuedAt : Date.now();
    const margin = Math.min(30, lifetimeSec / 10) * 1000;
    return { token, expiresAt: start + lifetimeSec * 1000 - margin };
  }
}

/** Options for RegistryClient from NodeletConfig.registry (which counts its timeout in seconds). */
export function registryClientOptions(config: {
  insecure: string[];
  mirrors: Record<string, MirrorConfig>;
  requestTimeoutSeconds: number;
  retries: number;
  stallTimeoutSeconds: number;
}): RegistryClientOptions {
  return {
    insecure: config.insecure,
    mirrors: config.mirrors,
    requestTimeoutMs: config.requestTimeoutSeconds * 1000,
    retries: config.retries,
    stallTimeoutMs: config.stallTimeoutSeconds * 1000,
  };
}
