// Plugin-chain behaviour of CniNetwork with small script plugins (real processes, no namespaces).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CniNetwork } from '../../src/network/cni.js';
import { isKind } from '../../src/common/errors.js';

// Each plugin appends "<command> <type> <ifname> <netns>" to calls.log and keeps its last stdin.
const recordingPlugin = (type: string, addOutput: string, addExit = 0) => `#!/bin/sh
dir=$(dirname "$0")
echo "$CNI_COMMAND ${type} $CNI_IFNAME $CNI_NETNS" >> "$dir/calls.log"
cat > "$dir/${type}-$CNI_COMMAND.stdin"
env > "$dir/${type}-$CNI_COMMAND.env"
if [ "$CNI_COMMAND" = ADD ]; then
  echo '${addOutput}'
  exit ${addExit}
fi
exit 0
`;

async function setup(plugins: string[]) {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cni-chain-'));
  const confDir = path.join(root, 'net.d');
  const binDir = path.join(root, 'bin');
  await fsp.mkdir(confDir);
  await fsp.mkdir(binDir);
  const result = (ip: string) =>
    JSON.stringify({ cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/x' }], ips: [{ address: ip, interface: 0 }] });
  await fsp.writeFile(path.join(binDir, 'loopback'), recordingPlugin('loopback', JSON.stringify({ cniVersion: '1.0.0' })), { mode: 0o755 });
  await fsp.writeFile(path.join(binDir, 'first'), recordingPlugin('first', result('10.9.0.7/24')), { mode: 0o755 });
  await fsp.writeFile(path.join(binDir, 'second'), recordingPlugin('second', result('10.9.0.7/24')), { mode: 0o755 });
  await fsp.writeFile(
    path.join(binDir, 'broken'),
    recordingPlugin('broken', JSON.stringify({ cniVersion: '1.0.0', code: 11, msg: 'no address left', details: 'range full' }), 1),
    { mode: 0o755 },
  );
  await fsp.writeFile(
    path.join(confDir, '10-test.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'testnet',
      plugins: plugins.map((type) => ({ type, ...(type === 'second' ? { capabilities: { portMappings: true } } : {}) })),
    }),
  );
  const cacheDir = path.join(root, 'cache');
  const cni = new CniNetwork({ confDir, binDirs: [path.join(root, 'missing'), binDir], cacheDir });
  const calls = async () => (await fsp.readFile(path.join(binDir, 'calls.log'), 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);
  return { root, confDir, binDir, cacheDir, cni, calls, cleanup: () => fsp.rm(root, { recursive: true, force: true }) };
}

const pod = { podName: 'web', podNamespace: 'default', podUid: 'uid-1' };

test('setUp runs loopback then the chain with prevResult, runtimeConfig, CNI_ARGS; tearDown reverses', async () => {
  const t = await setup(['first', 'second']);
  try {
    const netns = path.join(t.root, 'fake-netns');
    await fsp.writeFile(netns, '');
    const res = await t.cni.setUp('sb1', netns, {
      ...pod,
      portMappings: [
        { hostPort: 8081, containerPort: 80, protocol: 'tcp', hostIp: '127.0.0.1' },
        { hostPort: 0, containerPort: 81, protocol: 'tcp' },
      ],
    });
    assert.deepEqual(res.ips, ['10.9.0.7']);
    assert.deepEqual(await t.calls(), [`ADD loopback lo ${netns}`, `ADD first eth0 ${netns}`, `ADD second eth0 ${netns}`]);

    const secondIn = JSON.parse(await fsp.readFile(path.join(t.binDir, 'second-ADD.stdin'), 'utf8'));
    assert.equal(secondIn.name, 'testnet');
    assert.equal(secondIn.cniVersion, '1.0.0');
    assert.deepEqual(secondIn.prevResult.ips, [{ address: '10.9.0.7/24', interface: 0 }]);
    assert.deepEqual(secondIn.runtimeConfig, {
      portMappings: [{ hostPort: 8081, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }],
    });
    const firstIn = JSON.parse(await fsp.readFile(path.join(t.binDir, 'first-ADD.stdin'), 'utf8'));
    assert.equal(firstIn.prevResult, undefined);
    assert.equal(firstIn.runtimeConfig, undefined, 'no capability declared');

    const env = await fsp.readFile(path.join(t.binDir, 'first-ADD.env'), 'utf8');
    assert.match(env, /^CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1$/m);
    assert.match(env, /^CNI_CONTAINERID=sb1$/m);
    assert.match(env, new RegExp(`^CNI_PATH=${t.root}/missing:${t.binDir}$`, 'm'));
    assert.doesNotMatch(env, /^HOME=/m, 'environment not inherited');

    const cached = await t.cni.cachedResult('sb1');
    assert.deepEqual(cached?.ips, ['10.9.0.7']);

    // The config changes; a fresh instance (a restart) still tears down with what was used.
    await fsp.writeFile(
      path.join(t.confDir, '10-test.conflist'),
      JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'broken' }] }),
    );
    const restarted = new CniNetwork({ confDir: t.confDir, binDirs: [t.binDir], cacheDir: t.cacheDir });
    await restarted.tearDown('sb1', netns);
    const calls = await t.calls();
    assert.deepEqual(calls.slice(3), [`DEL second eth0 ${netns}`, `DEL first eth0 ${netns}`, `DEL loopback lo ${netns}`]);
    const secondDel = JSON.parse(await fsp.readFile(path.join(t.binDir, 'second-DEL.stdin'), 'utf8'));
    assert.equal(secondDel.name, 'testnet');
    assert.deepEqual(secondDel.prevResult.ips, [{ address: '10.9.0.7/24', interface: 0 }]);
    assert.equal(await t.cni.cachedResult('sb1'), undefined);

    // Repeated teardown: nothing recorded, nothing run.
    await restarted.tearDown('sb1', netns);
    assert.equal((await t.calls()).length, 6);
  } finally {
    await t.cleanup();
  }
});

test('a failing plugin surfaces its error and everything added is deleted', async () => {
  const t = await setup(['first', 'broken', 'second']);
  try {
    const netns = path.join(t.root, 'fake-netns');
    await fsp.writeFile(netns, '');
    await assert.rejects(t.cni.setUp('sb2', netns, pod), (err: Error) => {
      assert.match(err.message, /CNI plugin broken of network testnet failed ADD \(code 11\): no address left: range full/);
      return true;
    });
    assert.deepEqual(await t.calls(), [
      `ADD loopback lo ${netns}`,
      `ADD first eth0 ${netns}`,
      `ADD broken eth0 ${netns}`,
      `DEL broken eth0 ${netns}`,
      `DEL first eth0 ${netns}`,
      `DEL loopback lo ${netns}`,
    ]);
    assert.deepEqual(await fsp.readdir(t.cacheDir), []);
    const brokenDel = JSON.parse(await fsp.readFile(path.join(t.binDir, 'broken-DEL.stdin'), 'utf8'));
    assert.deepEqual(brokenDel.prevResult.ips, [{ address: '10.9.0.7/24', interface: 0 }], 'partial result passed on');
  } finally {
    await t.cleanup();
  }
});

test('teardown with a vanished namespace passes an empty CNI_NETNS and skips loopback', async () => {
  const t = await setup(['first']);
  try {
    const netns = path.join(t.root, 'fake-netns');
    await fsp.writeFile(netns, '');
    await t.cni.setUp('sb3', netns, pod);
    await fsp.rm(netns);
    await t.cni.tearDown('sb3', undefined);
    assert.deepEqual((await t.calls()).slice(2), ['DEL first eth0']);
  } finally {
    await t.cleanup();
  }
});

test('missing plugin binary and bad ids are reported', async () => {
  const t = await setup(['first', 'absent']);
  try {
    await assert.rejects(t.cni.setUp('sb4', '/nonexistent', pod), /CNI plugin absent of network testnet failed ADD: binary not found/);
    assert.equal(await t.cni.cachedResult('sb4'), undefined);
    assert.deepEqual(await fsp.readdir(t.cacheDir).catch(() => []), [], 'nothing was started');
    assert.deepEqual(await t.calls(), []);
    await assert.rejects(t.cni.setUp('../etc', '/nonexistent', pod), (e) => isKind(e, 'InvalidArgument'));
    await assert.rejects(t.cni.setUp('sb5', '/x', { ...pod, podName: 'a;b' }), (e) => isKind(e, 'InvalidArgument'));
  } finally {
    await t.cleanup();
  }
});
