import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, defaultConfig } from '../../src/config/config.js';

test('built-in defaults need no config file', () => {
  const { config } = loadConfig([]);
  assert.equal(config.socket, '/run/nodelet/cri.sock');
  assert.equal(config.root, '/var/lib/nodelet');
  assert.equal(config.runRoot, '/run/nodelet');
  assert.equal(config.cni.confDir, '/etc/cni/net.d');
  assert.deepEqual(config.cni.binDirs, ['/usr/lib/cni', '/opt/cni/bin']);
  assert.equal(config.runtime.defaultHandler, 'runc');
  assert.deepEqual(Object.keys(config.runtime.handlers).sort(), ['crun', 'runc']);
});

test('flags: paths, repeatable insecure registries and mirrors', () => {
  const { config } = loadConfig([
    '--socket', '/tmp/x.sock', '--root', '/tmp/r', '--run-root', '/tmp/rr', '--log-level', 'debug',
    '--insecure-registry', 'a:5000', '--insecure-registry', 'b',
    '--registry-mirror', 'registry.k8s.io=http://127.0.0.1:5000', '--registry-mirror', 'registry.k8s.io=http://127.0.0.1:5001',
    '--cni-bin-dir', '/x', '--runtime-handler', 'kata=/usr/bin/kata', '--default-runtime', 'crun',
  ]);
  assert.equal(config.socket, '/tmp/x.sock');
  assert.equal(config.root, '/tmp/r');
  assert.equal(config.runRoot, '/tmp/rr');
  assert.equal(config.logLevel, 'debug');
  assert.deepEqual(config.registry.insecure, ['a:5000', 'b']);
  assert.deepEqual(config.registry.mirrors['registry.k8s.io'], { endpoints: ['http://127.0.0.1:5000', 'http://127.0.0.1:5001'], fallbackToUpstream: true });
  assert.deepEqual(config.cni.binDirs, ['/x']);
  assert.equal(config.runtime.handlers.kata?.path, '/usr/bin/kata');
  assert.equal(config.runtime.defaultHandler, 'crun');
});

test('config file: merged under flags; mirrors with fallback; unknown keys refused', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nodelet-config-'));
  try {
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, [
      'root: /from/file',
      'socket: /from/file.sock',
      'registry:',
      '  mirrors:',
      '    docker.io:',
      '      endpoints: ["http://m1", "http://m2"]',
      '      fallbackToUpstream: false',
    ].join('\n'));
    const { config } = loadConfig(['--config', file, '--socket', '/from/flag.sock']);
    assert.equal(config.root, '/from/file');
    assert.equal(config.socket, '/from/flag.sock');
    assert.deepEqual(config.registry.mirrors['docker.io'], { endpoints: ['http://m1', 'http://m2'], fallbackToUpstream: false });
    assert.equal(config.registry.retries, defaultConfig().registry.retries, 'untouched defaults stay');
    writeFileSync(file, 'registry:\n  insecur: [x]\n');
    assert.throws(() => loadConfig(['--config', file]), /unknown key registry\.insecur/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad flags are refused with the flag named', () => {
  assert.throws(() => loadConfig(['--registry-mirror', 'nourl']), /--registry-mirror nourl/);
  assert.throws(() => loadConfig(['--bogus']), /bogus/);
  assert.throws(() => loadConfig(['--default-runtime', 'nope']), /nope/);
});

test('layer caps: --max-layer-size takes sizes with units, --max-layer-ratio a number', () => {
  const { config } = loadConfig(['--max-layer-size', '64Mi', '--max-layer-ratio', '50']);
  assert.equal(config.images.maxLayerBytes, 64 * 1024 * 1024);
  assert.equal(config.images.maxLayerCompressionRatio, 50);
  assert.equal(loadConfig(['--max-layer-size', '2G']).config.images.maxLayerBytes, 2_000_000_000);
  assert.equal(defaultConfig().images.maxLayerBytes, 32 * 1024 ** 3);
  assert.throws(() => loadConfig(['--max-layer-size', 'lots']), /--max-layer-size lots/);
  assert.throws(() => loadConfig(['--max-layer-ratio', '0']), /--max-layer-ratio 0/);
});

test('--grpc-server: builtin by default, grpc-js when asked, anything else refused naming the flag', () => {
  assert.equal(loadConfig([]).config.grpcServer, 'builtin');
  assert.equal(loadConfig(['--grpc-server', 'grpc-js']).config.grpcServer, 'grpc-js');
  assert.throws(() => loadConfig(['--grpc-server', 'nghttp2']), /--grpc-server.*grpc-js or builtin/);
});
