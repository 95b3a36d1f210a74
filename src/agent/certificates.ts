// The node's certificates from the cluster, as the kubelet's certificate manager keeps them: a key and a
// CertificateSigningRequest per certificate, the issued pair stored as <dir>/<kind>-<time>.pem (certificate
// then key) behind the symlink <dir>/<kind>-current.pem, swapped in one rename; renewed with a new CSR at a
// jittered 70–90 % of the certificate's lifetime (the client one auto-approved for node self-renewal, the
// serving one — signer kubernetes.io/kubelet-serving — approved by an operator).
import { X509Certificate, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertificatesV1Api, type KubeConfig } from '@kubernetes/client-node';
import { run } from '../common/exec.js';
import { errorMessage } from '../common/errors.js';
import { ensureDir, pathExists } from '../common/fsutil.js';
import type { Logger } from '../common/log.js';
import { makeApiClient } from './kube-client.js';

export const KUBELET_CLIENT_SIGNER = 'kubernetes.io/kube-apiserver-client-kubelet';
export const KUBELET_SERVING_SIGNER = 'kubernetes.io/kubelet-serving';

export type CertificateKind = 'kubelet-client' | 'kubelet-server';

export interface CertificateRequest {
  signerName: string;
  nodeName: string;
  /** Server certificates: the DNS names and IPs they cover. */
  hosts?: string[];
}

/** The CSR's subject, usages and SANs the kubelet asks for (EC keys: no key encipherment). */
export function csrTemplate(req: CertificateRequest): { subject: string; usages: string[]; sans: string[] } {
  const subject = `/O=system:nodes/CN=system:node:${req.nodeName}`;
  if (req.signerName === KUBELET_SERVING_SIGNER) {
    const sans = [...new Set(req.hosts ?? [])].filter(Boolean).map((h) => (net.isIP(h) ? `IP:${h}` : `DNS:${h}`));
    return { subject, usages: ['digital signature', 'server auth'], sans };
  }
  return { subject, usages: ['digital signature', 'client auth'], sans: [] };
}

/** When to renew: notBefore + a uniformly jittered 70–90 % of the lifetime (the kubelet's nextRotationDeadline). */
export function rotationDeadline(notBefore: number, notAfter: number, random = Math.random()): number {
  const total = notAfter - notBefore;
  return notBefore + total * (0.7 + 0.2 * random);
}

export interface IssueOptions {
  /** Who asks: the bootstrap credentials, or the node's own for a renewal. */
  kube: KubeConfig;
  request: CertificateRequest;
  /** The new key goes here (0600) before the CSR; the caller moves it once issued. */
  keyFile: string;
  log: Logger;
  timeoutMs?: number;
  pollMs?: number;
  /** Stops waiting (the agent stopping). */
  signal?: AbortSignal;
}

/** Makes a key and a CSR, creates the CertificateSigningRequest and waits (bounded) until it is issued; returns the PEM. */
export async function requestCertificate(opts: IssueOptions): Promise<{ certPem: Buffer; csrName: string }> {
  const t = csrTemplate(opts.request);
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', opts.keyFile]);
  await fsp.chmod(opts.keyFile, 0o600);
  const { stdout: csrPem } = await run('openssl', [
    'req', '-new', '-key', opts.keyFile, '-subj', t.subject, ...(t.sans.length ? ['-addext', `subjectAltName=${t.sans.join(',')}`] : []),
  ]);
  const certificates = makeApiClient(opts.kube, CertificatesV1Api);
  const csr = await certificates.createCertificateSigningRequest({
    body: {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { generateName: 'csr-' },
      spec: { request: Buffer.from(csrPem).toString('base64'), signerName: opts.request.signerName, usages: t.usages },
    },
  });
  const csrName = csr.metadata!.name!;
  opts.log.info({ csr: csrName, signer: opts.request.signerName }, 'certificate signing request created; waiting for it to be issued');
  const deadline = Date.now() + (opts.timeoutMs ?? 15 * 60_000);
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`waiting for certificate signing request ${csrName}: stopped`);
    const current = await certificates.readCertificateSigningRequest({ name: csrName });
    const refused = current.status?.conditions?.find((c) => c.type === 'Denied' || c.type === 'Failed');
    if (refused) throw new Error(`certificate signing request ${csrName} ${refused.type.toLowerCase()}: ${refused.reason ?? ''} ${refused.message ?? ''}`.trim());
    if (current.status?.certificate) return { certPem: Buffer.from(current.status.certificate, 'base64'), csrName };
    if (Date.now() > deadline) {
      throw new Error(`certificate signing request ${csrName} not issued in time (approved: ${Boolean(current.status?.conditions?.some((c) => c.type === 'Approved'))})`);
    }
    await sleep(opts.pollMs ?? 1000, undefined, { signal: opts.signal }).catch(() => undefined);
  }
}

/** <dir>/<kind>-current.pem and the dated files behind it. */
export class CertificateStore {
  constructor(
    readonly dir: string,
    readonly kind: CertificateKind,
  ) {}

  get currentPath(): string {
    return path.join(this.dir, `${this.kind}-current.pem`);
  }

  async current(): Promise<{ pem: Buffer; cert: X509Certificate } | undefined> {
    if (!(await pathExists(this.currentPath))) return undefined;
    const pem = await fsp.readFile(this.currentPath);
    try {
      return { pem, cert: new X509Certificate(pem) };
    } catch {
      return undefined;
    }
  }

  /** Stores an issued certificate with its key and points -current.pem at it in one rename; keeps the one before. */
  async update(certPem: Buffer, keyFile: string): Promise<string> {
    await ensureDir(this.dir, 0o700);
    const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '');
    const file = path.join(this.dir, `${this.kind}-${stamp}-${randomBytes(2).toString('hex')}.pem`);
    const key = await fsp.readFile(keyFile);
    await fsp.writeFile(file, Buffer.concat([certPem, certPem.at(-1) === 0x0a ? Buffer.alloc(0) : Buffer.from('\n'), key]), { mode: 0o600 });
    const previous = await fsp.readlink(this.currentPath).catch(() => undefined);
    const tmpLink = `${this.currentPath}.${randomBytes(3).toString('hex')}.tmp`;
    await fsp.symlink(path.basename(file), tmpLink);
    await fsp.rename(tmpLink, this.currentPath);
    await fsp.rm(keyFile, { force: true });
    // Only the current file and the one before it stay (the kubelet keeps more; two is enough to roll back by hand).
    const keep = new Set([path.basename(file), previous && path.basename(previous)]);
    for (const name of await fsp.readdir(this.dir)) {
      if (name.startsWith(`${this.kind}-`) && name.endsWith('.pem') && name !== path.basename(this.currentPath) && !keep.has(name)) {
        await fsp.rm(path.join(this.dir, name), { force: true });
      }
    }
    return file;
  }
}

export interface RotationOptions {
  store: CertificateStore;
  /** The credentials a renewal is asked with (read at each renewal: they may have been rotated themselves). */
  kube: () => KubeConfig;
  request: () => CertificateRequest;
  log: Logger;
  /** A new certificate is in the store. */
  onIssued(cert: X509Certificate): void | Promise<void>;
  pollMs?: number;
  /** Bound on waiting for one CSR (default 15 min: a serving CSR waits for a person). */
  timeoutMs?: number;
  /** The certificate expired this long ago (default 5 min) and no renewal came: the kubelet exits, so a restart
   * bootstraps again; this is told instead (once). */
  onExpired?(cert: X509Certificate): void;
  expiredGraceMs?: number;
}

/** Whether a certificate has been expired for longer than the grace period. */
export function expiredTooLong(validTo: string, graceMs: number, now = Date.now()): boolean {
  return now > Date.parse(validTo) + graceMs;
}

/** Keeps one certificate fresh: gets one when the store has none (or an expired one), renews at the deadline. */
export class CertificateRotation {
  private timer?: NodeJS.Timeout;
  private readonly abort = new AbortController();
  private failures = 0;
  private current?: X509Certificate;
  private renewing?: Promise<void>;
  private expiredTold = false;

  constructor(private readonly opts: RotationOptions) {}

  get certificate(): X509Certificate | undefined {
    return this.current;
  }

  /** Starts the cycle; a valid stored certificate is used at once (onIssued), else `initial` (the one the agent
   * already uses, e.g. embedded in its kubeconfig) is renewed in its time, else one is requested now. */
  async start(initial?: X509Certificate): Promise<void> {
    const stored = await this.opts.store.current();
    const valid = (c: X509Certificate | undefined) => c !== undefined && Date.now() < Date.parse(c.validTo);
    if (stored && valid(stored.cert)) {
      this.current = stored.cert;
      await this.opts.onIssued(stored.cert);
      this.schedule();
    } else if (valid(initial)) {
      this.current = initial;
      this.schedule();
    } else {
      // An expired one is kept only to say since when it has been expired.
      this.current = stored?.cert ?? initial;
      this.schedule(0);
    }
  }

  stop(): void {
    clearTimeout(this.timer);
    this.abort.abort();
  }

  private schedule(inMs?: number): void {
    if (this.abort.signal.aborted) return;
    let ms = inMs;
    if (ms === undefined && this.current) {
      ms = rotationDeadline(Date.parse(this.current.validFrom), Date.parse(this.current.validTo)) - Date.now();
      this.opts.log.info({ kind: this.opts.store.kind, expires: this.current.validTo, renewInSeconds: Math.round(Math.max(0, ms) / 1000) }, 'certificate renewal scheduled');
    }
    // setTimeout's limit is 2^31-1 ms; a later deadline is re-checked then.
    this.timer = setTimeout(() => {
      this.renewing = this.renew();
    }, Math.min(Math.max(0, ms ?? 0), 2 ** 31 - 1));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.current && Date.now() < rotationDeadline(Date.parse(this.current.validFrom), Date.parse(this.current.validTo), 0) - 1000) {
      return this.schedule();
    }
    const keyFile = path.join(this.opts.store.dir, `${this.opts.store.kind}.key.new`);
    try {
      await ensureDir(this.opts.store.dir, 0o700);
      const { certPem, csrName } = await requestCertificate({
        kube: this.opts.kube(),
        request: this.opts.request(),
        keyFile,
        log: this.opts.log,
        pollMs: this.opts.pollMs,
        timeoutMs: this.opts.timeoutMs,
        signal: this.abort.signal,
      });
      if (this.abort.signal.aborted) return;
      await this.opts.store.update(certPem, keyFile);
      this.current = new X509Certificate(certPem);
      this.failures = 0;
      this.opts.log.info({ kind: this.opts.store.kind, csr: csrName, serial: this.current.serialNumber, validTo: this.current.validTo }, 'certificate rotated');
      await this.opts.onIssued(this.current);
      this.schedule();
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.failures++;
      const current = this.current;
      if (current && this.opts.onExpired && !this.expiredTold && expiredTooLong(current.validTo, this.opts.expiredGraceMs ?? 5 * 60_000)) {
        this.expiredTold = true;
        this.opts.log.error({ kind: this.opts.store.kind, expired: current.validTo }, 'the certificate has expired and could not be renewed');
        this.opts.onExpired(current);
      }
      // The kubelet backs off exponentially, capped at 5 minutes (and never past the certificate's expiry).
      const backoff = Math.min(2000 * 2 ** (this.failures - 1), 5 * 60_000);
      this.opts.log.warn({ kind: this.opts.store.kind, err: errorMessage(err), failures: this.failures, retryInSeconds: backoff / 1000 }, 'certificate renewal failed');
      this.schedule(backoff);
    }
  }

  /** For tests: the renewal in progress, if any. */
  async settled(): Promise<void> {
    await this.renewing;
  }
}
