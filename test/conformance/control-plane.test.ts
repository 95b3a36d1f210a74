// The conformance control plane itself: starts, knows who a node is, stops without leftovers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '../../src/common/exec.js';
import { findTools } from './tools.js';
import { startControlPlane } from './control-plane.js';

function toolsOrSkip(): ReturnType<typeof findTools> | string {
  try {
    return findTools();
  } catch (err) {
    return (err as Error).message;
  }
}

function portOpen(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect({ host: hostname, port: Number(port) });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

const tools = toolsOrSkip();

test('control plane: apiserver, scheduler, controller-manager on 127.0.0.1; node and bootstrap credentials; watch; stop cleans up',
  { skip: typeof tools === 'string' ? tools : false, timeout: 180_000 }, async () => {
    const cp = await startControlPlane({ tools: tools as ReturnType<typeof findTools> });
    try {
      assert.match(cp.server, /^https:\/\/127\.0\.0\.1:\d+$/);
      const nodeKc = await cp.nodeCredentials('cp-test-node');
      const who = JSON.parse(await cp.kubectl(['auth', 'whoami', '-o', 'json'], { kubeconfig: nodeKc }));
      assert.equal(who.status.userInfo.username, 'system:node:cp-test-node');
      assert.ok(who.status.userInfo.groups.includes('system:nodes'));
      // The Node authorizer is on: a node may not list every secret as an admin may.
      // (`can-i` answers no with exit 1.)
      await assert.rejects(cp.kubectl(['auth', 'can-i', 'list', 'secrets', '--all-namespaces'], { kubeconfig: nodeKc }), /exit 1/);
      assert.equal((await cp.kubectl(['auth', 'can-i', 'create', 'nodes'], { kubeconfig: nodeKc })).trim(), 'yes');
      const token = await cp.bootstrapToken();
      assert.match(token, /^[a-z0-9]{6}\.[a-z0-9]{16}$/);
      const boot = JSON.parse(await cp.kubectl([`--token=${token}`, `--server=${cp.server}`,
        `--certificate-authority=${cp.caPath}`, 'auth', 'whoami', '-o', 'json'], { kubeconfig: '/dev/null' }));
      assert.equal(boot.status.userInfo.username, `system:bootstrap:${token.split('.')[0]}`);
      // TLS bootstrap: the token's CSR for a node client cert is auto-approved and signed.
      const csrKey = path.join(cp.dir, 'bootstrap-test.key');
      const csrPem = (await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', csrKey, '-subj', '/O=system:nodes/CN=system:node:cp-boot-node'])).stdout;
      const csrName = `cp-boot-${Date.now()}`;
      const asBootstrap = { kubeconfig: '/dev/null' };
      const bootFlags = [`--token=${token}`, `--server=${cp.server}`, `--certificate-authority=${cp.caPath}`];
      await cp.kubectl([...bootFlags, 'create', '-f', '-'], {
        ...asBootstrap,
        input: JSON.stringify({
          apiVersion: 'certificates.k8s.io/v1', kind: 'CertificateSigningRequest', metadata: { name: csrName },
          spec: { request: Buffer.from(csrPem).toString('base64'), signerName: 'kubernetes.io/kube-apiserver-client-kubelet', usages: ['digital signature', 'client auth'] },
        }),
      });
      let issued = '';
      for (let i = 0; i < 60 && !issued; i++) {
        const res = await cp.request('GET', `/apis/certificates.k8s.io/v1/certificatesigningrequests/${csrName}`);
        issued = res.body?.status?.certificate ?? '';
        if (!issued) await sleep(500);
      }
      assert.ok(issued, 'CSR approved and signed within 30 s');
      const subject = (await run('openssl', ['x509', '-noout', '-subject'], { input: Buffer.from(issued, 'base64') })).stdout;
      assert.match(subject, /CN\s*=\s*system:node:cp-boot-node/);
      // A watch sees an object created after it opened, as it happens.
      const seen: string[] = [];
      const watch = await cp.watch('/api/v1/configmaps?labelSelector=cp-test', (type, obj) => seen.push(`${type} ${obj?.metadata?.name}`));
      try {
        const res = await cp.request('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'cp-watched', labels: { 'cp-test': 'yes' } } });
        assert.equal(res.status, 201);
        for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(50);
        assert.deepEqual(seen, ['ADDED cp-watched']);
      } finally {
        watch.stop();
      }
      assert.ok(await portOpen(cp.server));
    } finally {
      await cp.stop();
    }
    assert.equal(existsSync(cp.dir), false);
    assert.equal(await portOpen(cp.server), false);
  });
