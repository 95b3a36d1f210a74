// Runtime handlers in the typed config: NAME=PATH (an OCI runtime under conmon) and
// NAME=containerd:RUNTIME_TYPE, the containerd address and namespace, from flags and the config file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseRuntimeHandler } from '../../src/config/config.js';

test('--runtime-handler: NAME=PATH and NAME=containerd:RUNTIME_TYPE side by side', () => {
  const { config } = loadConfig([
    '--runtime-handler', 'kata=/usr/bin/kata-runtime',
    '--runtime-handler', 'shim=containerd:io.containerd.runc.v2',
    '--runtime-handler', 'gvisor=containerd:io.containerd.runsc.v1',
  ]);
  assert.deepEqual(config.runtime.handlers.kata, { path: '/usr/bin/kata-runtime' });
  assert.deepEqual(config.runtime.handlers.shim, { type: 'containerd', path: '', runtimeType: 'io.containerd.runc.v2' });
  assert.equal(config.runtime.handlers.gvisor?.runtimeType, 'io.containerd.runsc.v1');
  assert.deepEqual(Object.keys(config.runtime.handlers).sort(), ['crun', 'gvisor', 'kata', 'runc', 'shim'], 'the built-in handlers stay');
  assert.deepEqual(config.runtime.containerd, { address: '', namespace: 'nodelet' }, 'defaults: nodelet-cri runs its own containerd');
});

test('--runtime-handler: what is refused, naming the flag and the form wanted', () => {
  const table: Array<[string, RegExp]> = [
    ['noequals', /want NAME=PATH or NAME=containerd:RUNTIME_TYPE/],
    ['=runc', /want NAME=PATH/],
    ['x=', /want NAME=PATH/],
    ['bad_name=/bin/runc', /letters, digits and dashes/],
    ['shim=containerd:', /RUNTIME_TYPE with a runtime type such as io\.containerd\.runc\.v2/],
    ['shim=containerd:has space', /runtime type such as/],
  ];
  for (const [spec, message] of table) {
    assert.throws(() => parseRuntimeHandler(spec), (err: Error & { kind?: string }) => err.kind === 'InvalidArgument' && message.test(err.message) && err.message.includes(spec), spec);
    assert.throws(() => loadConfig(['--runtime-handler', spec]), { kind: 'InvalidArgument' }, spec);
  }
});

test('--containerd-address and --containerd-namespace; a containerd handler can be the default', () => {
  const { config } = loadConfig([
    '--runtime-handler', 'shim=containerd:io.containerd.runc.v2', '--default-runtime', 'shim',
    '--containerd-address', 'unix:///run/k3s/containerd.sock', '--containerd-namespace', 'k8s.io',
  ]);
  assert.equal(config.runtime.defaultHandler, 'shim');
  assert.deepEqual(config.runtime.containerd, { address: 'unix:///run/k3s/containerd.sock', namespace: 'k8s.io' });
  assert.throws(() => loadConfig(['--containerd-namespace', 'bad/ns']), /runtime\.containerd\.namespace/);
  assert.throws(() => loadConfig(['--containerd-address', 'unix://']), /runtime\.containerd\.address/);
  assert.equal(loadConfig(['--containerd-address', '']).config.runtime.containerd.address, '', 'empty: the containerd backend decides (a containerd of its own)');
});

test('config file: containerd handlers, address and namespace; flags win; bad handlers named by key', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nodelet-config-'));
  try {
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, [
      'runtime:',
      '  handlers:',
      '    shim:',
      '      type: containerd',
      '      runtimeType: io.containerd.runc.v2',
      '    youki:',
      '      path: /usr/local/bin/youki',
      '  containerd:',
      '    address: /run/other/containerd.sock',
      '    namespace: from-file',
    ].join('\n'));
    const { config } = loadConfig(['--config', file, '--containerd-namespace', 'from-flag']);
    assert.deepEqual(config.runtime.handlers.shim, { type: 'containerd', path: '', runtimeType: 'io.containerd.runc.v2' });
    assert.deepEqual(config.runtime.handlers.youki, { path: '/usr/local/bin/youki' });
    assert.equal(config.runtime.containerd.address, '/run/other/containerd.sock');
    assert.equal(config.runtime.containerd.namespace, 'from-flag');

    const refused: Array<[string[], RegExp]> = [
      [['runtime:', '  handlers:', '    shim:', '      type: containerd'], /runtime\.handlers\.shim\.runtimeType: want a containerd runtime type/],
      [['runtime:', '  handlers:', '    odd:', '      type: lxc', '      path: /bin/lxc'], /runtime\.handlers\.odd\.type: want runc or containerd, not "lxc"/],
      [['runtime:', '  handlers:', '    nopath: {}'], /runtime\.handlers\.nopath\.path: want the OCI runtime binary/],
      [['runtime:', '  handlers:', '    mixed:', '      path: /bin/runc', '      runtimeType: io.containerd.runc.v2'], /runtime\.handlers\.mixed\.runtimeType: only for handlers of type containerd/],
      [['runtime:', '  containerd:', '    socket: /x'], /unknown key runtime\.containerd\.socket/],
    ];
    for (const [lines, message] of refused) {
      writeFileSync(file, lines.join('\n'));
      assert.throws(() => loadConfig(['--config', file]), message, lines.join(' / '));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
