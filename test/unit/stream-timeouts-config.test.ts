// --stream-idle-timeout and the streaming timeouts of the config file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseDuration } from '../../src/config/config.js';

test('streaming timeouts default to the kubelet: 4 h idle, 30 s to create streams', () => {
  const { config } = loadConfig([]);
  assert.equal(config.streaming.idleTimeoutSeconds, 4 * 3600);
  assert.equal(config.streaming.streamCreationTimeoutSeconds, 30);
});

test('durations: Go style units, combined, plain seconds; anything else refused', () => {
  const cases: Array<[string, number | undefined]> = [
    ['4h', 14400], ['30m', 1800], ['90s', 90], ['1h30m', 5400], ['500ms', 0.5], ['4h0m0s', 14400], ['0', 0], ['45', 45], ['1.5h', 5400],
    ['', undefined], ['h', undefined], ['-5s', undefined], ['5 m', undefined], ['10d', undefined], ['abc', undefined],
  ];
  for (const [text, want] of cases) assert.equal(parseDuration(text), want, JSON.stringify(text));
});

test('--stream-idle-timeout sets the idle timeout, wins over the config file, and a bad one is refused', () => {
  assert.equal(loadConfig(['--stream-idle-timeout', '90m']).config.streaming.idleTimeoutSeconds, 5400);
  assert.equal(loadConfig(['--stream-idle-timeout', '0']).config.streaming.idleTimeoutSeconds, 0);
  assert.throws(() => loadConfig(['--stream-idle-timeout', 'soon']), /--stream-idle-timeout soon/);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nodelet-config-'));
  try {
    const file = path.join(dir, 'c.yaml');
    writeFileSync(file, 'streaming:\n  idleTimeoutSeconds: 600\n  streamCreationTimeoutSeconds: 5\n');
    const fromFile = loadConfig(['--config', file]).config.streaming;
    assert.equal(fromFile.idleTimeoutSeconds, 600);
    assert.equal(fromFile.streamCreationTimeoutSeconds, 5);
    assert.equal(loadConfig(['--config', file, '--stream-idle-timeout', '1m']).config.streaming.idleTimeoutSeconds, 60);
    writeFileSync(file, 'streaming:\n  idleTimeoutSeconds: "4h"\n');
    assert.throws(() => loadConfig(['--config', file]), /streaming.idleTimeoutSeconds/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
