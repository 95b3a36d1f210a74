// TLS bootstrap (the kubelet's --bootstrap-kubeconfig): with a bootstrap token, ask the cluster for a node client
// certificate through a CertificateSigningRequest (signer kubernetes.io/kube-apiserver-client-kubelet,
// CN=system:node:<name>, O=system:nodes), wait until it is issued, store it as <certDir>/kubelet-client-current.pem
// and write the node's own kubeconfig pointing at that file (so a rotation needs no kubeconfig change).
// A kubeconfig whose client certificate is still valid is used as it is.
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KubeConfig, type User } from '@kubernetes/client-node';
import YAML from 'yaml';
import { ensureDir, pathExists, writeFileAtomic } from '../common/fsutil.js';
import type { Logger } from '../common/log.js';
import { CertificateStore, KUBELET_CLIENT_SIGNER, requestCertificate } from './certificates.js';

export { KUBELET_CLIENT_SIGNER };

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

/** The client certificate of a kubeconfig's current user, if it has one. */
export async function kubeconfigClientCertificate(config: KubeConfig): Promise<X509Certificate | undefined> {
  const user = config.getCurrentUser();
  const pem = user?.certData ? Buffer.from(user.certData, 'base64') : user?.certFile ? await fsp.readFile(user.certFile) : undefined;
  return pem ? new X509Certificate(pem) : undefined;
}

/** The client certificate of a kubeconfig file's current user, if it has one and it is valid now. */
async function validClientCertificate(kubeconfig: string): Promise<X509Certificate | undefined> {
  if (!(await pathExists(kubeconfig))) return undefined;
  const config = new KubeConfig();
  config.loadFromFile(kubeconfig);
  const cert = await kubeconfigClientCertificate(config);
  const now = Date.now();
  return cert && Date.parse(cert.validFrom) <= now && now < Date.parse(cert.validTo) ? cert : undefined;
}

/** Points a loaded kubeconfig's current user at a certificate+key file (in place: clients made from it follow). */
export function useClientCertificateFile(config: KubeConfig, pemFile: string): void {
  const current = config.getCurrentUser();
  if (!current) throw new Error('kubeconfig has no current user');
  const users: User[] = config.getUsers().map((u) =>
    u.name === current.name ? { ...u, certData: undefined, keyData: undefined, certFile: pemFile, keyFile: pemFile } : u,
  );
  config.loadFromOptions({ clusters: config.getClusters(), users, contexts: config.getContexts(), currentContext: config.getCurrentContext() });
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

  const store = new CertificateStore(opts.certDir, 'kubelet-client');
  await ensureDir(opts.certDir, 0o700);
  // A fresh key for every request (a key that never got a certificate is worth nothing), kept aside until issued.
  const newKeyFile = path.join(opts.certDir, 'kubelet-client.key.new');
  const { certPem, csrName } = await requestCertificate({
    kube: bootstrap,
    request: { signerName: KUBELET_CLIENT_SIGNER, nodeName: opts.nodeName },
    keyFile: newKeyFile,
    log: opts.log,
    timeoutMs: opts.timeoutMs,
    pollMs: opts.pollMs,
  });
  const cert = new X509Certificate(certPem);
  await store.update(certPem, newKeyFile);
  const caData = cluster.caData ?? (cluster.caFile ? (await fsp.readFile(cluster.caFile)).toString('base64') : undefined);
  const user = `system:node:${opts.nodeName}`;
  await ensureDir(path.dirname(opts.kubeconfig));
  await writeFileAtomic(
    opts.kubeconfig,
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'default-cluster', cluster: { server: cluster.server, ...(caData ? { 'certificate-authority-data': caData } : {}), ...(cluster.skipTLSVerify ? { 'insecure-skip-tls-verify': true } : {}) } }],
      users: [{ name: user, user: { 'client-certificate': store.currentPath, 'client-key': store.currentPath } }],
      contexts: [{ name: 'default-context', context: { cluster: 'default-cluster', user } }],
      'current-context': 'default-context',
    }),
    0o600,
  );
  opts.log.info({ csr: csrName, subject: cert.subject, validTo: cert.validTo, kubeconfig: opts.kubeconfig }, 'node client certificate issued');
}
