import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CniNetwork,
  MANAGED_MARKER,
  NETWORK_NOT_READY_REASON,
  buildDefaultNetworkConfig,
  buildPluginInput,
  masqueradeChainName,
  podIpsOfResult,
  toNetworkConfigList,
  type NetworkConfigList,
} from '../../src/network/cni.js';
import { isKind } from '../../src/common/errors.js';

async function tempDirs(): Promise<{ root: string; confDir: string; binDir: string; cacheDir: string; cleanup: () => Promise<void> }> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cni-unit-'));
  const confDir = path.join(root, 'net.d');
  const binDir = path.join(root, 'bin');
  const cacheDir = path.join(root, 'cache');
  await fsp.mkdir(confDir);
  await fsp.mkdir(binDir);
  return { root, confDir, binDir, cacheDir, cleanup: () => fsp.rm(root, { recursive: true, force: true }) };
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await fsp.writeFile(file, JSON.stringify(value));
}

const list = (name: string, types: string[] = ['bridge']): NetworkConfigList => ({
  cniVersion: '1.0.0',
  name,
  plugins: types.map((type) => ({ type })),
});

test('toNetworkConfigList accepts lists and wraps single plugin configs', () => {
  assert.deepEqual(toNetworkConfigList(list('a')), list('a'));
  assert.deepEqual(toNetworkConfigList({ cniVersion: '0.4.0', name: 'b', type: 'bridge', bridge: 'x' }), {
    cniVersion: '0.4.0',
    name: 'b',
    plugins: [{ cniVersion: '0.4.0', name: 'b', type: 'bridge', bridge: 'x' }],
  });
  assert.equal(toNetworkConfigList({ cniVersion: '1.0.0', name: 'c', plugins: [] }), undefined);
  assert.equal(toNetworkConfigList({ cniVersion: '1.0.0', plugins: [{ type: 'x' }] }), undefined);
  assert.equal(toNetworkConfigList({ name: 'd', plugins: [{ notype: 1 }] }), undefined);
  assert.equal(toNetworkConfigList([1, 2]), undefined);
});

test('load picks the first valid config by file name and skips broken ones', async () => {
  const d = await tempDirs();
  try {
    const cni = new CniNetwork({ confDir: d.confDir, binDirs: [d.binDir], cacheDir: d.cacheDir });
    assert.equal(await cni.load(), undefined);
    await writeJson(path.join(d.confDir, '20-second.conflist'), list('second'));
    await writeJson(path.join(d.confDir, '30-single.conf'), { cniVersion: '1.0.0', name: 'single', type: 'ptp' });
    await fsp.writeFile(path.join(d.confDir, '05-broken.conflist'), '{ not json');
    await writeJson(path.join(d.confDir, '01-ignored.txt'), list('txt'));
    await writeJson(path.join(d.confDir, '06-noplugins.json'), { cniVersion: '1.0.0', name: 'empty', plugins: [] });
    const loaded = await cni.load();
    assert.equal(loaded?.list.name, 'second');
    assert.equal(loaded?.file, path.join(d.confDir, '20-second.conflist'));
    assert.equal(loaded?.managed, false);

    // A new file sorting first takes over; removing it falls back.
    await writeJson(path.join(d.confDir, '10-first.json'), list('first'));
    assert.equal((await cni.load())?.list.name, 'first');
    await fsp.rm(path.join(d.confDir, '10-first.json'));
    assert.equal((await cni.load())?.list.name, 'second');

    // Rewriting the chosen file is noticed too.
    await writeJson(path.join(d.confDir, '20-second.conflist'), list('second-v2', ['bridge', 'portmap']));
    const reloaded = await cni.load();
    assert.equal(reloaded?.list.name, 'second-v2');
    assert.deepEqual(reloaded?.list.plugins.map((p) => p.type), ['bridge', 'portmap']);

    // Only a single-plugin config left: wrapped into a list.
    await fsp.rm(path.join(d.confDir, '20-second.conflist'));
    const single = await cni.load();
    assert.equal(single?.list.name, 'single');
    assert.deepEqual(single?.list.plugins.map((p) => p.type), ['ptp']);
  } finally {
    await d.cleanup();
  }
});

test('status reports NetworkPluginNotReady without config or with a missing plugin binary', async () => {
  const d = await tempDirs();
  try {
    const cni = new CniNetwork({ confDir: d.confDir, binDirs: [path.join(d.root, 'nope'), d.binDir], cacheDir: d.cacheDir });
    let status = await cni.status();
    assert.equal(status.ready, false);
    assert.equal(status.reason, NETWORK_NOT_READY_REASON);
    assert.match(status.message ?? '', /no network config found/);

    await writeJson(path.join(d.confDir, '10-net.conflist'), list('net', ['bridge', 'portmap']));
    for (const name of ['bridge', 'loopback']) await fsp.writeFile(path.join(d.binDir, name), '#!/bin/sh\n', { mode: 0o755 });
    status = await cni.status();
    assert.equal(status.ready, false);
    assert.equal(status.reason, NETWORK_NOT_READY_REASON);
    assert.match(status.message ?? '', /portmap/);

    // Present but not executable still counts as missing.
    await fsp.writeFile(path.join(d.binDir, 'portmap'), '#!/bin/sh\n', { mode: 0o644 });
    assert.equal((await cni.status()).ready, false);
    await fsp.chmod(path.join(d.binDir, 'portmap'), 0o755);
    assert.deepEqual(await cni.status(), { ready: true });
  } finally {
    await d.cleanup();
  }
});

test('ensureDefaultConfig writes our conflist only into an empty conf dir', async () => {
  const d = await tempDirs();
  try {
    const confDir = path.join(d.root, 'fresh', 'net.d');
    const cni = new CniNetwork({
      confDir,
      binDirs: [d.binDir],
      cacheDir: d.cacheDir,
      defaultConfig: { bridgeName: 'nlttest0', subnet: '10.201.3.0/24', ipamDataDir: path.join(d.root, 'ipam') },
    });
    assert.equal(await cni.ensureDefaultConfig(), true);
    assert.equal(await cni.ensureDefaultConfig(), false);
    const written = JSON.parse(await fsp.readFile(path.join(confDir, '10-nodelet.conflist'), 'utf8'));
    assert.equal(written.cniVersion, '1.0.0');
    assert.equal(written.name, 'nodelet');
    assert.equal(written[MANAGED_MARKER], true);
    assert.deepEqual(written.plugins.map((p: { type: string }) => p.type), ['bridge', 'portmap']);
    const bridge = written.plugins[0];
    assert.equal(bridge.bridge, 'nlttest0');
    assert.equal(bridge.isGateway, true);
    assert.equal(bridge.ipMasq, true);
    assert.equal(bridge.hairpinMode, true);
    assert.deepEqual(bridge.ipam, {
      type: 'host-local',
      ranges: [[{ subnet: '10.201.3.0/24' }]],
      routes: [{ dst: '0.0.0.0/0' }],
      dataDir: path.join(d.root, 'ipam'),
    });
    assert.deepEqual(written.plugins[1].capabilities, { portMappings: true });
    const loaded = await cni.load();
    assert.equal(loaded?.managed, true);

    // Someone else's config present: nothing written.
    const other = new CniNetwork({ confDir: d.confDir, binDirs: [d.binDir], cacheDir: d.cacheDir });
    await writeJson(path.join(d.confDir, '99-theirs.conflist'), list('theirs'));
    assert.equal(await other.ensureDefaultConfig(), false);
    assert.deepEqual(await fsp.readdir(d.confDir), ['99-theirs.conflist']);
  } finally {
    await d.cleanup();
  }
});

test('buildDefaultNetworkConfig defaults and rejects long bridge names', () => {
  const config = buildDefaultNetworkConfig();
  assert.equal(config.plugins[0]?.bridge, 'nodelet0');
  assert.deepEqual((config.plugins[0]?.ipam as { ranges: unknown }).ranges, [[{ subnet: '10.88.0.0/16' }]]);
  assert.throws(() => buildDefaultNetworkConfig({ bridgeName: 'a-very-long-bridge' }), (e) => isKind(e, 'InvalidArgument'));
  const dual = buildDefaultNetworkConfig({ subnet: '10.1.0.0/16,fd00:1::/64' });
  assert.deepEqual(dual.plugins[0]?.ipam, {
    type: 'host-local',
    ranges: [[{ subnet: '10.1.0.0/16' }], [{ subnet: 'fd00:1::/64' }]],
    routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
  });
});

test('setPodCidr rewrites our default config only', async () => {
  const d = await tempDirs();
  try {
    const cni = new CniNetwork({ confDir: d.confDir, binDirs: [d.binDir], cacheDir: d.cacheDir });
    assert.equal(await cni.setPodCidr('10.244.1.0/24'), false, 'no config yet');
    await cni.ensureDefaultConfig();
    assert.equal(await cni.setPodCidr(''), false);
    await assert.rejects(cni.setPodCidr('10.244.1.0'), (e) => isKind(e, 'InvalidArgument'));
    await assert.rejects(cni.setPodCidr('nonsense/24'), (e) => isKind(e, 'InvalidArgument'));
    assert.equal(await cni.setPodCidr('10.244.1.0/24'), true);
    assert.equal(await cni.setPodCidr('10.244.1.0/24'), false, 'unchanged');
    const loaded = await cni.load();
    assert.deepEqual((loaded?.list.plugins[0]?.ipam as { ranges: unknown }).ranges, [[{ subnet: '10.244.1.0/24' }]]);
    assert.equal(loaded?.managed, true);

    // A config with our file name but without the marker is the admin's: left alone.
    const file = path.join(d.confDir, '10-nodelet.conflist');
    const theirs = JSON.parse(await fsp.readFile(file, 'utf8'));
    delete theirs[MANAGED_MARKER];
    await writeJson(file, theirs);
    assert.equal(await cni.setPodCidr('10.244.2.0/24'), false);
    assert.deepEqual(JSON.parse(await fsp.readFile(file, 'utf8')), theirs);
  } finally {
    await d.cleanup();
  }
});

test('buildPluginInput adds name, version, prevResult and only declared capabilities', () => {
  const net: NetworkConfigList = {
    cniVersion: '1.0.0',
    name: 'n',
    plugins: [{ type: 'portmap', capabilities: { portMappings: true, bandwidth: false } }, { type: 'bridge' }],
  };
  const runtimeConfig = { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: 'tcp' }], bandwidth: { ingressRate: 1 } };
  const prev = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] };
  assert.deepEqual(buildPluginInput(net, net.plugins[0]!, prev, runtimeConfig), {
    type: 'portmap',
    capabilities: { portMappings: true, bandwidth: false },
    name: 'n',
    cniVersion: '1.0.0',
    prevResult: prev,
    runtimeConfig: { portMappings: runtimeConfig.portMappings },
  });
  assert.deepEqual(buildPluginInput(net, net.plugins[1]!, undefined, runtimeConfig), { type: 'bridge', name: 'n', cniVersion: '1.0.0' });
});

test('podIpsOfResult keeps sandbox addresses without prefix', () => {
  assert.deepEqual(
    podIpsOfResult({
      interfaces: [{ name: 'br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/x' }],
      ips: [
        { address: '10.0.0.1/24', interface: 0 },
        { address: '10.0.0.5/24', gateway: '10.0.0.1', interface: 2 },
        { address: 'fd00::5/64', interface: 2 },
      ],
    }),
    ['10.0.0.5', 'fd00::5'],
  );
  assert.deepEqual(podIpsOfResult({ ips: [{ address: '10.1.1.1/16' }] }), ['10.1.1.1']);
  assert.deepEqual(podIpsOfResult({ ip4: { ip: '10.2.2.2/16' } }), ['10.2.2.2']);
});

test('masqueradeChainName matches the chain the bridge plugin made (seen in iptables-save)', () => {
  assert.equal(
    masqueradeChainName('nlt-e5924b', '3e8554765f70495c7d935893e11344e943e29ddb8cdcdd24775f659a1ffd011b'),
    'CNI-08b53ecc00798928c0eef79b',
  );
});
