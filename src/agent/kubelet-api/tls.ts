// The kubelet API's serving certificate: the configured files, or a self-signed one made once with openssl
// and kept under the agent root (reused on restart, as the kubelet does).
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { run } from '../../common/exec.js';
import { ensureDir, pathExists } from '../../common/fsutil.js';

export interface ServingCertificate {
  cert: Buffer;
  key: Buffer;
  certFile: string;
  keyFile: string;
}

export interface ServingCertificateOptions {
  certFile?: string;
  keyFile?: string;
  /** Where a self-signed pair is kept: <root>/pki/kubelet.{crt,key}. */
  root: string;
  nodeName: string;
  /** Addresses the certificate names besides localhost. */
  addresses: string[];
}

export async function servingCertificate(opts: ServingCertificateOptions): Promise<ServingCertificate> {
  if (opts.certFile || opts.keyFile) {
    if (!opts.certFile || !opts.keyFile) throw new Error('--tls-cert-file and --tls-private-key-file go together');
    return { cert: await fsp.readFile(opts.certFile), key: await fsp.readFile(opts.keyFile), certFile: opts.certFile, keyFile: opts.keyFile };
  }
  const dir = path.join(opts.root, 'pki');
  const certFile = path.join(dir, 'kubelet.crt');
  const keyFile = path.join(dir, 'kubelet.key');
  if (!((await pathExists(certFile)) && (await pathExists(keyFile)))) {
    await ensureDir(dir, 0o700);
    const names = new Set([`DNS:${opts.nodeName}`, 'DNS:localhost', 'IP:127.0.0.1']);
    for (const a of opts.addresses) if (a) names.add(net.isIP(a) ? `IP:${a}` : `DNS:${a}`);
    const tmpKey = `${keyFile}.tmp`;
    const tmpCert = `${certFile}.tmp`;
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '365',
      '-subj', `/CN=${opts.nodeName}@${Math.floor(Date.now() / 1000)}`,
      '-addext', `subjectAltName=${[...names].join(',')}`,
      '-keyout', tmpKey, '-out', tmpCert,
    ]);
    await fsp.chmod(tmpKey, 0o600);
    await fsp.rename(tmpKey, keyFile);
    await fsp.rename(tmpCert, certFile);
  }
  return { cert: await fsp.readFile(certFile), key: await fsp.readFile(keyFile), certFile, keyFile };
}
