// --eviction-hard parsing, crossed thresholds and the pressure conditions, the eviction order, the allocatable
// and image GC's choice of images and node.status.images: tables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import { DEFAULT_EVICTION_HARD, conditionOf, crossedThresholds, evictionMessage, evictionOrder, isCriticalPod, parseEvictionHard } from '../../src/agent/eviction.js';
import { bytesToFree, imagesToRemove, nodeStatusImages } from '../../src/agent/image-gc.js';
import { allocatableOf } from '../../src/agent/node-status.js';
import { parseAgentFlags, parseReserved } from '../../src/agent/config.js';

const Mi = 1024 * 1024;
const Gi = 1024 * Mi;

test('--eviction-hard: the kubelet default, quantities and percentages; bad entries name themselves', () => {
  assert.deepEqual(parseEvictionHard(DEFAULT_EVICTION_HARD), [
    { signal: 'memory.available', quantity: 100 * Mi },
    { signal: 'nodefs.available', percentage: 10 },
    { signal: 'imagefs.available', percentage: 15 },
    { signal: 'nodefs.inodesFree', percentage: 5 },
  ]);
  assert.deepEqual(parseEvictionHard('pid.available<1000'), [{ signal: 'pid.available', quantity: 1000 }]);
  assert.deepEqual(parseEvictionHard(''), []);
  assert.throws(() => parseEvictionHard('memory.free<1Gi'), /memory\.free<1Gi/);
  assert.throws(() => parseEvictionHard('memory.available<lots'), /not a quantity/);
  assert.throws(() => parseEvictionHard('nodefs.available<120%'), /0-100%/);
  assert.throws(() => parseAgentFlags(['--kubeconfig', 'k', '--eviction-hard', 'memory.available>1Gi']), /eviction-hard/);
  assert.throws(() => parseAgentFlags(['--kubeconfig', 'k', '--image-gc-high-threshold', '70', '--image-gc-low-threshold', '80']), /low-threshold/);
  const cfg = parseAgentFlags(['--kubeconfig', 'k', '--kube-reserved', 'cpu=500m,memory=1Gi', '--system-reserved', 'memory=512Mi', '--image-gc-high-threshold', '90']);
  assert.deepEqual(cfg.kubeReserved, { cpu: 0.5, memory: Gi });
  assert.equal(cfg.imageGcHighThresholdPercent, 90);
  assert.throws(() => parseReserved('gpu=1', '--kube-reserved'), /--kube-reserved: "gpu=1"/);
});

test('crossed thresholds become pressure conditions', () => {
  const t = parseEvictionHard(DEFAULT_EVICTION_HARD);
  const fine = { 'memory.available': { available: 4 * Gi, capacity: 8 * Gi }, 'nodefs.available': { available: 50 * Gi, capacity: 100 * Gi }, 'imagefs.available': { available: 50 * Gi, capacity: 100 * Gi }, 'nodefs.inodesFree': { available: 900, capacity: 1000 } };
  assert.deepEqual(crossedThresholds(t, fine), []);
  const lowMem = { ...fine, 'memory.available': { available: 50 * Mi, capacity: 8 * Gi } };
  assert.deepEqual(crossedThresholds(t, lowMem).map((x) => conditionOf(x.signal)), ['MemoryPressure']);
  const lowDisk = { ...fine, 'imagefs.available': { available: 10 * Gi, capacity: 100 * Gi }, 'nodefs.inodesFree': { available: 10, capacity: 1000 } };
  assert.deepEqual(crossedThresholds(t, lowDisk).map((x) => conditionOf(x.signal)), ['DiskPressure', 'DiskPressure']);
  assert.equal(conditionOf('pid.available'), 'PIDPressure');
  assert.match(evictionMessage(t[0]!, { available: 50 * Mi, capacity: 8 * Gi }), /^The node was low on resource: memory\. Threshold quantity: 102400Ki, available: 51200Ki\. $/);
});

test('eviction order: BestEffort, Burstable, Guaranteed; lower priority first; critical pods never', () => {
  const pod = (name: string, resources: object | undefined, priority = 0): V1Pod => ({
    metadata: { name, uid: name },
    spec: { priority, containers: [{ name: 'c', image: 'i', ...(resources ? { resources } : {}) }] },
  });
  const guaranteed = pod('guaranteed', { requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '1', memory: '1Gi' } });
  const burstable = pod('burstable', { requests: { memory: '1Gi' } });
  const bestEffortHigh = pod('besteffort-high', undefined, 1000);
  const bestEffort = pod('besteffort', undefined);
  assert.deepEqual(evictionOrder([guaranteed, burstable, bestEffortHigh, bestEffort]).map((p) => p.metadata!.name), ['besteffort', 'besteffort-high', 'burstable', 'guaranteed']);
  assert.equal(isCriticalPod(pod('x', undefined, 2_000_000_000), false), true);
  assert.equal(isCriticalPod(pod('x', undefined), true), true, 'static');
  assert.equal(isCriticalPod({ ...pod('x', undefined), metadata: { annotations: { 'kubernetes.io/config.mirror': 'h' } } }, false), true, 'mirror');
  assert.equal(isCriticalPod(pod('x', undefined, 1000), false), false);
});

test('allocatable: capacity less --kube-reserved, --system-reserved and the hard eviction thresholds', () => {
  const machine = { cpu: 4, memory: 8 * Gi, storage: 100 * Gi };
  assert.deepEqual(allocatableOf(machine, { maxPods: 110 }), { cpu: '4', memory: `${8 * 1024 * 1024}Ki`, pods: '110', 'ephemeral-storage': String(100 * Gi) });
  const a = allocatableOf(machine, { maxPods: 110, reserved: { cpu: 0.5, memory: Gi, 'ephemeral-storage': Gi }, evictionHard: parseEvictionHard(DEFAULT_EVICTION_HARD) });
  assert.equal(a.cpu, '3500m');
  assert.equal(a.memory, `${(7 * Gi - 100 * Mi) / 1024}Ki`);
  assert.equal(a['ephemeral-storage'], String(Math.floor(100 * Gi - Gi - 10 * Gi)));
});

test('image GC: frees down to the low threshold, unused and unpinned images only, least recently used first, none younger than the minimum age', () => {
  const policy = { highThresholdPercent: 85, lowThresholdPercent: 80, minAgeMs: 120_000 };
  assert.equal(bytesToFree(100, 20, policy), 0, '80% used: under the high threshold');
  assert.equal(bytesToFree(100, 10, policy), 10, '90% used: down to 80%');
  const now = 1_000_000;
  const img = (id: string, size: number, lastUsedMs: number, extra: object = {}) => ({ id, size, inUse: false, pinned: false, firstSeenMs: 0, lastUsedMs, ...extra });
  const images = [img('old', 5, 10), img('older', 5, 5), img('used', 50, 0, { inUse: true }), img('pinned', 50, 0, { pinned: true }), img('young', 50, 0, { firstSeenMs: now - 1000 }), img('recent', 5, 500)];
  assert.deepEqual(imagesToRemove(images, 8, now, policy.minAgeMs), ['older', 'old']);
  assert.deepEqual(imagesToRemove(images, 1000, now, policy.minAgeMs), ['older', 'old', 'recent']);
  assert.deepEqual(imagesToRemove(images, 0, now, policy.minAgeMs), []);
});

test('node.status.images: the 50 largest, digests then tags, at most 5 names', () => {
  const many = Array.from({ length: 60 }, (_, i) => ({ id: `sha256:${i}`, size: String(i * 10), repo_tags: [`r/i${i}:latest`], repo_digests: [`r/i${i}@sha256:${i}`] }));
  const out = nodeStatusImages(many);
  assert.equal(out.length, 50);
  assert.deepEqual(out[0], { names: ['r/i59@sha256:59', 'r/i59:latest'], sizeBytes: 590 });
  assert.equal(nodeStatusImages([{ id: 'x', size: '1', repo_tags: Array.from({ length: 8 }, (_, i) => `t${i}`) }])[0]!.names.length, 5);
  assert.deepEqual(nodeStatusImages([{ id: 'dangling', size: '1' }]), []);
});
