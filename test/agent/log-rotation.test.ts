// Container log rotation: the cleanup plan and the config (tables), then a real run — a static pod writing fast on
// nodelet-cri, its 0.log rotated at the size limit, the runtime reopening it, older rotations compressed or removed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { configureLogger } from '../../src/common/log.js';
import { parseAgentFlags, parseDuration } from '../../src/agent/config.js';
import { planLogCleanup, rotationStamp } from '../../src/agent/log-rotation.js';
import { waitFor } from '../helpers/pods.js';
import { startAgentHarness, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

test('cleanup before a rotation: oldest beyond maxFiles-2 removed, the rest compressed, temp files removed', () => {
  const files = ['0.log', '0.log.20260101-000001.gz', '0.log.20260101-000002', '0.log.20260101-000003', '0.log.20260101-000004.gz.tmp', '1.log.20260101-000000', 'other'];
  assert.deepEqual(planLogCleanup('0.log', files, 5), { remove: ['0.log.20260101-000004.gz.tmp'], compress: ['0.log.20260101-000002', '0.log.20260101-000003'] });
  assert.deepEqual(planLogCleanup('0.log', files, 3), { remove: ['0.log.20260101-000004.gz.tmp', '0.log.20260101-000001.gz', '0.log.20260101-000002'], compress: ['0.log.20260101-000003'] });
  assert.deepEqual(planLogCleanup('0.log', files, 2).remove.filter((f) => !f.endsWith('.tmp')).length, 3);
  assert.deepEqual(planLogCleanup('0.log', ['0.log'], 2), { remove: [], compress: [] });
  assert.equal(rotationStamp(new Date('2026-11-28T07:05:09Z')), '20261128-070509');
});

test('rotation settings from flags and the KubeletConfiguration file', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-agent-config-'));
  try {
    const file = path.join(dir, 'config.yaml');
    await fsp.writeFile(file, 'containerLogMaxSize: 1Mi\ncontainerLogMaxFiles: 2\ncontainerLogMonitorInterval: 3s\n');
    const cfg = parseAgentFlags(['--config', file, '--pod-manifest-path', '/m']);
    assert.deepEqual([cfg.containerLogMaxSizeBytes, cfg.containerLogMaxFiles, cfg.containerLogMonitorIntervalMs], [1024 * 1024, 2, 3000]);
    const flags = parseAgentFlags(['--config', file, '--pod-manifest-path', '/m', '--container-log-max-size', '5M', '--container-log-max-files', '4']);
    assert.deepEqual([flags.containerLogMaxSizeBytes, flags.containerLogMaxFiles], [5_000_000, 4]);
    const defaults = parseAgentFlags(['--pod-manifest-path', '/m']);
    assert.deepEqual([defaults.containerLogMaxSizeBytes, defaults.containerLogMaxFiles, defaults.containerLogMonitorIntervalMs], [10 * 1024 * 1024, 5, 10_000]);
    assert.throws(() => parseAgentFlags(['--pod-manifest-path', '/m', '--container-log-max-files', '1']), /at least 2/);
    assert.throws(() => parseAgentFlags(['--pod-manifest-path', '/m', '--container-log-max-size', 'lots']), /quantity/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
  assert.equal(parseDuration('1m30s', 'x'), 90_000);
  assert.equal(parseDuration('500ms', 'x'), 500);
  assert.throws(() => parseDuration('10', 'x'), /duration/);
});

const nodeName = `logrot-${randomBytes(3).toString('hex')}`;
let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({
    name: 'nodelet-agent-logrot-',
    nodeName,
    api: false,
    staticPods: true,
    configure: () => ({ containerLogMaxSizeBytes: 64 * 1024, containerLogMaxFiles: 3, containerLogMonitorIntervalMs: 300 }),
  });
});

after(() => h?.close());

test('a full log is rotated, the runtime reopens it, and at most maxFiles-1 rotated files stay, older ones gzipped', async () => {
  await fsp.writeFile(path.join(h.manifests!, 'chatty.yaml'), `apiVersion: v1
kind: Pod
metadata:
  name: chatty
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: ${h.busybox}
    command: ["sh", "-c", "f=$(printf '%01000d' 0); i=0; while true; do i=$((i+1)); echo tick-$i-$f; sleep 0.01; done"]
`);
  const logDir = await waitFor('the pod log dir', async () => {
    const entry = (await fsp.readdir(h.config.podLogsDir).catch(() => [] as string[])).find((d) => d.startsWith('default_chatty-'));
    return entry ? path.join(h.config.podLogsDir, entry, 'main') : undefined;
  }, 30_000);
  const list = async () => (await fsp.readdir(logDir).catch(() => [] as string[])).sort();
  const rotatedFiles = (files: string[]) => files.filter((f) => /^0\.log\.\d{8}-\d{6}(\.gz)?$/.test(f));
  // Several rotations: one compressed file appears only once a second rotation happened after it.
  const files = await waitFor('a compressed rotation', async () => {
    const f = await list();
    return f.some((x) => x.endsWith('.gz')) ? f : undefined;
  }, 60_000).catch(async (err) => {
    throw new Error(`${err.message}; files: ${(await list()).join(', ')}`);
  });
  assert.ok(rotatedFiles(files).length <= 2, files.join(', '));
  const gz = files.find((f) => f.endsWith('.gz'))!;
  const older = await fsp.readFile(path.join(logDir, gz)).then((b) => gunzipSync(b).toString()).catch(() => undefined);
  if (older !== undefined) assert.match(older, /^\S+ stdout F tick-\d+-0+$/m); // unless already removed by a later rotation
  // The runtime writes to the new 0.log: it grows past a tick that was never in any older file.
  const lastTick = async () => Number(/tick-(\d+)-[0-9a-f]+\n$/.exec(await fsp.readFile(path.join(logDir, '0.log'), 'utf8'))?.[1] ?? NaN);
  const first = await waitFor('a tick in the current log', async () => {
    const n = await lastTick();
    return Number.isFinite(n) ? n : undefined;
  }, 10_000);
  await waitFor('the current log advancing', async () => (await lastTick()) > first, 10_000);
  // Bounded over time, not just once.
  await waitFor('another rotation', async () => {
    const now = rotatedFiles(await list());
    return now.some((f) => !files.includes(f));
  }, 30_000);
  assert.ok(rotatedFiles(await list()).length <= 2);
  await fsp.rm(path.join(h.manifests!, 'chatty.yaml'));
});
