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
