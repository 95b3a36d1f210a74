// Real pod networking: a netns, the bridge/host-local/portmap plugins of /usr/lib/cni, iptables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { CniNetwork } from '../../src/network/cni.js';
import { createNetns, netnsExists, netnsNameForSandbox, netnsStats, removeNetns } from '../../src/network/netns.js';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../helpers/spawn.js';

const PLUGIN_DIR = '/usr/lib/cni';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Connects, reads until the peer closes, returns the text; rejects on error or timeout. */
function readFrom(host: string, port: number, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timeout reading from ${host}:${port}`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => (data += chunk));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

async function eventually<T>(fn: () => Promise<T>, attempts = 40): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw last;
}

async function iptablesMentioning(text: string): Promise<string[]> {
  const res = await run('iptables-save', [], { reject: false });
  return res.stdout.split('\n').filter((line) => line.includes(text));
}

test('pod network with real CNI plugins: IP, ping, port mapping, teardown (also after restart)', async () => {
  // Required, not optional: scripts/setup installs the plugins and the tests run as root. Missing means a failed run.
  assert.equal(process.getuid?.(), 0, 'the network tests must run as root');
  for (const plugin of ['bridge', 'host-local', 'portmap', 'loopback']) {
    assert.ok(existsSync(path.join(PLUGIN_DIR, plugin)), `CNI plugin ${plugin} missing from ${PLUGIN_DIR}: run scripts/setup`);
  }
  const tag = randomBytes(3).toString('hex');
  const bridgeName = `nlt${tag}`;
  const subnetOctet = randomInt(0, 256);
  const subnetPrefix = `10.200.${subnetOctet}.`;
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-net-it-'));
  const confDir = path.join(root, 'net.d');
  const cacheDir = path.join(root, 'cni-cache');
  const ipamDir = path.join(root, 'ipam');
  const options = {
    confDir,
    binDirs: [PLUGIN_DIR],
    cacheDir,
    defaultConfig: { name: `nlt-${tag}`, bridgeName, subnet: `${subnetPrefix}0/24`, ipamDataDir: ipamDir },
  };
  const sandboxA = randomBytes(32).toString('hex');
  const sandboxB = randomBytes(32).toString('hex');
  const netnsPaths: string[] = [];
  let server: ReturnType<typeof spawnChild> | undefined;
  try {
    const cni = new CniNetwork(options);
    assert.equal((await cni.status()).ready, false);
    assert.equal(await cni.ensureDefaultConfig(), true);
    assert.deepEqual(await cni.status(), { ready: true });

    const nsName = netnsNameForSandbox(sandboxA);
    assert.ok(nsName.length <= 64);
    const nsA = await createNetns(nsName);
    netnsPaths.push(nsA);
    assert.equal(await netnsExists(nsA), true);

    const hostPort = await freePort();
    const network = await cni.setUp(sandboxA, nsA, {
      podName: 'web',
      podNamespace: 'default',
      podUid: 'uid-a',
      portMappings: [{ hostPort, containerPort: 8080, protocol: 'tcp' }],
    });
    assert.equal(network.ips.length, 1);
    const podIp = network.ips[0]!;
    assert.ok(podIp.startsWith(subnetPrefix), `${podIp} in ${subnetPrefix}0/24`);
    assert.ok(network.interfaces.some((i) => i.name === 'eth0' && i.sandbox === nsA));

    // Not calling check(): portmap 1.1.1's CHECK fails for IPv4-only pods (looks for an ip6tables chain).

    // lo is up inside the namespace (the loopback plugin), eth0 carries the address.
    const lo = await run('ip', ['-n', nsName, '-j', 'addr', 'show', 'lo']);
    assert.match(lo.stdout, /"operstate":"UNKNOWN"|LOWER_UP/);
    const eth0 = await run('ip', ['-n', nsName, '-j', 'addr', 'show', 'eth0']);
    assert.ok(eth0.stdout.includes(`"${podIp}"`));

    // iputils is not installed here; busybox-static is.
    await run('/bin/busybox', ['ping', '-c1', '-W1', podIp]);

    server = spawnChild('ip', ['netns', 'exec', nsName, 'socat', 'TCP-LISTEN:8080,fork,reuseaddr', 'EXEC:/bin/echo hi'], {
      stdio: 'ignore',
    });
    assert.equal(await eventually(() => readFrom(podIp, 8080)), 'hi\n');
    assert.equal(await eventually(() => readFrom('127.0.0.1', hostPort)), 'hi\n', 'host port via 127.0.0.1');

    const stats = await netnsStats(nsA);
    assert.ok(stats && stats.rxPackets > 0 && stats.txBytes > 0, 'eth0 counters move');

    assert.ok((await iptablesMentioning(sandboxA)).length > 0, 'plugins installed rules for the sandbox');

    server.kill('SIGKILL');
    await server;
    server = undefined;

    // "Restart": a fresh instance, and the conflist changed meanwhile; teardown uses the cached config.
    await cni.setPodCidr(`10.200.${(subnetOctet + 1) % 256}.0/24`);
    const restarted = new CniNetwork(options);
    assert.deepEqual((await restarted.cachedResult(sandboxA))?.ips, [podIp]);
    await restarted.tearDown(sandboxA, nsA);
    await restarted.tearDown(sandboxA, nsA);
    await cni.tearDown(sandboxA, nsA);
    assert.deepEqual(await iptablesMentioning(sandboxA), []);
    assert.equal(existsSync(path.join(ipamDir, `nlt-${tag}`, podIp)), false, 'IP released');
    const ethAfter = await run('ip', ['-n', nsName, 'link', 'show', 'eth0'], { reject: false });
    assert.notEqual(ethAfter.exitCode, 0, 'eth0 gone');
    await removeNetns(nsA);
    await removeNetns(nsA);
    assert.equal(await netnsExists(nsA), false);

    // The bridge keeps the old gateway address; with no pods left it can go, and the new CIDR applies.
    await run('ip', ['link', 'del', bridgeName]);

    // A sandbox whose namespace vanished before teardown still releases its IP and rules.
    const nsB = await createNetns(netnsNameForSandbox(sandboxB));
    netnsPaths.push(nsB);
    const networkB = await restarted.setUp(sandboxB, nsB, { podName: 'b', podNamespace: 'default', podUid: 'uid-b' });
    const podIpB = networkB.ips[0]!;
    assert.ok(podIpB.startsWith(`10.200.${(subnetOctet + 1) % 256}.`), 'new pod CIDR in use');
    await removeNetns(nsB);
    await restarted.tearDown(sandboxB, nsB);
    await restarted.tearDown(sandboxB, undefined);
    assert.deepEqual(await iptablesMentioning(sandboxB), []);
    assert.equal(existsSync(path.join(ipamDir, `nlt-${tag}`, podIpB)), false, 'IP of B released');
  } finally {
    if (server) {
      server.kill('SIGKILL');
      await server;
    }
    const cleanup = new CniNetwork(options);
    for (const id of [sandboxA, sandboxB]) await cleanup.tearDown(id, undefined).catch(() => undefined);
    for (const p of netnsPaths) await removeNetns(p).catch(() => undefined);
    await run('ip', ['link', 'del', bridgeName], { reject: false });
    await fsp.rm(root, { recursive: true, force: true });
  }
});
