// The certificate manager's pure parts: when a renewal falls, what a CSR asks for, and the flags that turn it on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, csrTemplate, rotationDeadline } from '../../src/agent/certificates.js';
import { parseAgentFlags } from '../../src/agent/config.js';

test('renewal falls at 70–90 % of the lifetime, measured from notBefore', () => {
  const from = Date.parse('2026-01-01T00:00:00Z');
  const to = from + 1000_000;
  assert.equal(rotationDeadline(from, to, 0), from + 700_000);
  assert.equal(rotationDeadline(from, to, 0.5), from + 800_000);
  assert.equal(rotationDeadline(from, to, 1), from + 900_000);
});

test('CSRs ask for what the approvers and signers accept', () => {
  assert.deepEqual(csrTemplate({ signerName: KUBELET_CLIENT_SIGNER, nodeName: 'n1' }), {
    subject: '/O=system:nodes/CN=system:node:n1', usages: ['digital signature', 'client auth'], sans: [],
  });
  assert.deepEqual(csrTemplate({ signerName: KUBELET_SERVING_SIGNER, nodeName: 'n1', hosts: ['n1', '10.0.0.5', 'n1', '', 'fd00::1'] }), {
    subject: '/O=system:nodes/CN=system:node:n1', usages: ['digital signature', 'server auth'], sans: ['DNS:n1', 'IP:10.0.0.5', 'IP:fd00::1'],
  });
});

test('--rotate-certificates, --rotate-server-certificates and --cert-dir', () => {
  const off = parseAgentFlags(['--kubeconfig', '/k']);
  assert.equal(off.rotateCertificates, false);
  assert.equal(off.rotateServerCertificates, false);
  const on = parseAgentFlags(['--kubeconfig', '/k', '--rotate-certificates', '--rotate-server-certificates', '--cert-dir', '/var/lib/kubelet/pki']);
  assert.equal(on.rotateCertificates, true);
  assert.equal(on.rotateServerCertificates, true);
  assert.equal(on.certDir, '/var/lib/kubelet/pki');
});

test('a certificate expired past the grace period and not renewable is reported once (the agent then exits)', async () => {
  const { CertificateRotation, CertificateStore, expiredTooLong } = await import('../../src/agent/certificates.js');
  const { KubeConfig } = await import('@kubernetes/client-node');
  const { logger } = await import('../../src/common/log.js');
  const os = await import('node:os');
  const { promises: fsp } = await import('node:fs');
  const path = await import('node:path');
  assert.equal(expiredTooLong('Sat, 28 Nov 2026 10:00:00 GMT', 60_000, Date.parse('2026-11-28T10:00:59Z')), false);
  assert.equal(expiredTooLong('Sat, 28 Nov 2026 10:00:00 GMT', 60_000, Date.parse('2026-11-28T10:01:01Z')), true);

  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cert-expired-'));
  // An apiserver that is not there: every renewal fails.
  const kube = new KubeConfig();
  kube.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
    users: [{ name: 'u', token: 'x' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const expired: string[] = [];
  const rotation = new CertificateRotation({
    store: new CertificateStore(dir, 'kubelet-client'),
    kube: () => kube,
    request: () => ({ signerName: 'kubernetes.io/kube-apiserver-client-kubelet', nodeName: 'n1' }),
    log: logger({ component: 'test' }),
    onIssued: () => undefined,
    onExpired: (cert) => void expired.push(cert.validTo),
    expiredGraceMs: 1000,
  });
  const validTo = new Date(Date.now() - 10 * 60_000).toUTCString();
  try {
    await rotation.start({ validFrom: new Date(Date.now() - 3600_000).toUTCString(), validTo, serialNumber: '01' } as any);
    const deadline = Date.now() + 10_000;
    while (expired.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(expired, [validTo]);
  } finally {
    rotation.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
