// --registry-stall-timeout and registry.stallTimeoutSeconds of the config file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/config.js';
import { registryClientOptions } from '../../src/image/registry.js';

test('registry stall timeout: 60 s by default, set by flag (a duration) over the config file; bad values refused', () => {
  assert.equal(loadConfig([]).config.registry.stallTimeoutSeconds, 60);
  assert.equal(loadConfig(['--registry-stall-timeout', '2m']).config.registry.stallTimeoutSeconds, 120);
  assert.equal(registryClientOptions(loadConfig(['--registry-stall-timeout', '90s']).config.registry).stallTimeoutMs, 90_000);
  assert.throws(() => loadConfig(['--registry-stall-timeout', 'soon']), /--registry-stall-timeout soon/);
  assert.throws(() => loadConfig(['--registry-stall-timeout', '0']), /registry.stallTimeoutSeconds/);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nodelet-config-'));
  try {
    const file = path.join(dir, 'c.yaml');
    writeFileSync(file, 'registry:\n  stallTimeoutSeconds: 15\n');
    assert.equal(loadConfig(['--config', file]).config.registry.stallTimeoutSeconds, 15);
    assert.equal(loadConfig(['--config', file, '--registry-stall-timeout', '30s']).config.registry.stallTimeoutSeconds, 30);
    writeFileSync(file, 'registry:\n  stallTimeoutSeconds: "1m"\n');
    assert.throws(() => loadConfig(['--config', file]), /registry.stallTimeoutSeconds/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
