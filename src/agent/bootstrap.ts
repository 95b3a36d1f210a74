// TLS bootstrap (the kubelet's --bootstrap-kubeconfig): with a bootstrap token, ask the cluster for a node client
// certificate through a CertificateSigningRequest (signer kubernetes.io/kube-apiserver-client-kubelet,
// CN=system:node:<name>, O=system:nodes), wait until it is issued, and write the node's own kubeconfig.
// A kubeconfig whose client certificate is still valid is used as it is.
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertificatesV1Api, KubeConfig } from '@kubernetes/client-node';
import YAML from 'yaml';
import { run } from '../common/exec.js';
import { ensureDir, pathExists, writeFileAtomic } from '../common/fsutil.js';
import type { Logger } from '../common/log.js';
import { makeApiClient } from './kube-client.js';

export const KUBELET_CLIENT_SIGNER = 'kubernetes.io/kube-apiserver-client-kubelet';

export interface BootstrapOptions {
  bootstrapKubeconfig: string;
  /** Where the node's kubeconfig is written (and looked for). */
  kubeconfig: string;
  /** Where the key and the issued certificate are kept. */
  certDir: string;
  nodeName: string;
  log: Logger;
  /** How long to wait for the certificate to be issued (default 15 min). */
  timeoutMs?: number;
  pollMs?: number;
}

/** The client certificate of a kubeconfig's current user, if it has one and it is valid now. */
async function validClientCertificate(kubeconfig: string): Promise<X509Certificate | undefined> {
  if (!(await pathExists(kubeconfig))) return undefined;
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig);
  const user = config.getCurrentUser();
  const pem = user?.certData ? Buffer.from(user.certData, 'base64') : user?.certFile ? await fsp.readFile(user.certFile) : undefined;
  if (!pem) return undefined;
  const cert = new X509Certificate(pem);
  const now = Date.now();
  return Date.parse(cert.validFrom) <= now && now < Date.parse(cert.validTo) ? cert : undefined;
}

/** Makes sure `kubeconfig` holds a valid node client certificate, getting one through a CSR when it does not. */
export async function bootstrapClientCertificate(opts: BootstrapOptions): Promise<void> {
  const existing = await validClientCertificate(opts.kubeconfig).catch(() => undefined);
  if (existing) {
    opts.log.info({ subject: existing.subject, validTo: existing.validTo }, 'node client certificate is valid; no bootstrap');
    return;
  }
  const bootstrap = new KubeConfig();
  bootstrap.loadFromFile(opts.bootstrapKubeconfig);
  const cluster = bootstrap.getCurrentCluster();
  if (!cluster) throw new Error(`${opts.bootstrapKubeconfig}: no current cluster`);

  await ensureDir(opts.certDir, 0o700);
  const keyFile = path.join(opts.certDir, 'nodelet-agent-client.key');
  const certFile = path.join(opts.certDir, 'nodelet-agent-client.crt');
  // A fresh key for every request (a key that never got a certificate is worth nothing), kept aside until issued.
  const newKeyFile = `${keyFile}.new`;
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', newKeyFile]);
  await fsp.chmod(newKeyFile, 0o600);
  const { stdout: csrPem } = await run('openssl', ['req', '-new', '-key', newKeyFile, '-subj', `/O=system:nodes/CN=system:node:${opts.nodeName}`]);

  const certificates = makeApiClient(bootstrap, CertificatesV1Api);
  const csr = await certificates.createCertificateSigningRequest({
    body: {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { generateName: 'node-csr-' },
      spec: { request: Buffer.from(csrPem).toString('base64'), signerName: KUBELET_CLIENT_SIGNER, usages: ['digital signature', 'client auth'] },
    },
  });
  const name = csr.metadata!.name!;
  opts.log.info({ csr: name }, 'certificate signing request created; waiting for it to be issued');
  const deadline = Date.now() + (opts.timeoutMs ?? 15 * 60_000);
  let issued: string | undefined;
  while (!issued) {
    const current = await certificates.readCertificateSigningRequest({ name });
    const refused = current.status?.conditions?.find((c) => c.type === 'Denied' || c.type === 'Failed');
    if (refused) throw new Error(`certificate signing request ${name} ${refused.type.toLowerCase()}: ${refused.reason ?? ''} ${refused.message ?? ''}`.trim());
    issued = current.status?.certificate || undefined;
    if (issued) break;
    if (Date.now() > deadline) throw new Error(`certificate signing request ${name} not issued in time (approved: ${Boolean(current.status?.conditions?.some((c) => c.type === 'Approved'))})`);
    await sleep(opts.pollMs ?? 1000);
  }
  const certPem = Buffer.from(issued, 'base64');
  const cert = new X509Certificate(certPem);
  await fsp.rename(newKeyFile, keyFile);
  await writeFileAtomic(certFile, certPem, 0o644);
  const caData = cluster.caData ?? (cluster.caFile ? (await fsp.readFile(cluster.caFile)).toString('base64') : undefined);
  const user = `system:node:${opts.nodeName}`;
  await ensureDir(path.dirname(opts.kubeconfig));
  await writeFileAtomic(
    opts.kubeconfig,
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'default-cluster', cluster: { server: cluster.server, ...(caData ? { 'certificate-authority-data': caData } : {}), ...(cluster.skipTLSVerify ? { 'insecure-skip-tls-verify': true } : {}) } }],
      users: [{ name: user, user: { 'client-certificate': certFile, 'client-key': keyFile } }],
      contexts: [{ name: 'default-context', context: { cluster: 'default-cluster', user } }],
      'current-context': 'default-context',
    }),
    0o600,
  );
  opts.log.info({ csr: name, subject: cert.subject, validTo: cert.validTo, kubeconfig: opts.kubeconfig }, 'node client certificate issued');
}
