// The conformance control plane itself: starts, knows who a node is, stops without leftovers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
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

test('control plane: apiserver, scheduler, controller-manager on 127.0.0.1; node and bootstrap credentials; stop cleans up',
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
      assert.ok(await portOpen(cp.server));
    } finally {
      await cp.stop();
    }
    assert.equal(existsSync(cp.dir), false);
    assert.equal(await portOpen(cp.server), false);
  });
