// The stats refresh settings: defaults, the --stats-period flag, the config file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeConfigFile, loadConfig, defaultConfig } from '../../src/config/config.js';

test('stats periods: defaults, flag, config file; a non-positive period is refused', () => {
  assert.deepEqual(defaultConfig().stats, { periodSeconds: 3, writableLayerPeriodSeconds: 15 });
  assert.equal(loadConfig(['--stats-period', '0.5']).config.stats.periodSeconds, 0.5);
  assert.throws(() => loadConfig(['--stats-period', '0']), /--stats-period/);
  assert.throws(() => loadConfig(['--stats-period', 'soon']), /--stats-period/);
  const merged = mergeConfigFile(defaultConfig(), { stats: { writableLayerPeriodSeconds: 60 } });
  assert.deepEqual(merged.stats, { periodSeconds: 3, writableLayerPeriodSeconds: 60 });
});
