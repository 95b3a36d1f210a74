import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSummary, resourceMetricsText, type StatsInput } from '../../src/agent/kubelet-api/stats.js';

const T = Date.parse('2026-11-28T20:00:00Z');
const ns = (ms: number) => ms * 1e6;
const labels = (pod: string, container?: string) => ({
  'io.kubernetes.pod.name': pod,
  'io.kubernetes.pod.namespace': 'shop',
  'io.kubernetes.pod.uid': `uid-${pod}`,
  ...(container ? { 'io.kubernetes.container.name': container } : {}),
});

const input: StatsInput = {
  nodeName: 'n1',
  node: { at: T, cpuCoreNanoSeconds: 5e12, memoryTotal: 8e9, memoryAvailable: 6e9, memoryUsage: 3e9, memoryWorkingSet: 2e9 },
  nodeNanoCores: 250_000_000,
  bootTime: T - 3600_000,
  containers: [
    { attributes: { id: 'c1', labels: labels('web', 'httpd') }, cpu: { timestamp: ns(T), usage_core_nano_seconds: { value: 1.5e9 }, usage_nano_cores: { value: 1e7 } }, memory: { timestamp: ns(T), working_set_bytes: { value: 4096 }, usage_bytes: { value: 8192 } } },
    { attributes: { id: 'c2', labels: labels('web', 'sidecar') }, cpu: { timestamp: ns(T), usage_core_nano_seconds: { value: 0.5e9 } }, memory: { timestamp: ns(T), working_set_bytes: { value: 1024 } } },
    { attributes: { id: 'c3', labels: labels('db', 'pg') }, cpu: { timestamp: ns(T), usage_core_nano_seconds: { value: 3e9 } }, memory: { timestamp: ns(T), working_set_bytes: { value: 10 } } },
    { attributes: { id: 'x', labels: {} } },
  ],
  sandboxes: [
    { attributes: { id: 's1', labels: labels('db'), metadata: { name: 'db', namespace: 'shop', uid: 'uid-db' } }, linux: { cpu: { timestamp: ns(T), usage_core_nano_seconds: { value: 9e9 } }, memory: { timestamp: ns(T), working_set_bytes: { value: 99 } } } },
  ],
};

test('the Summary: containers grouped by pod, sandbox figures for the pod or else the sum of its containers', () => {
  const s = buildSummary(input);
  assert.equal(s.node.nodeName, 'n1');
  assert.deepEqual(s.node.cpu, { time: '2026-11-28T20:00:00Z', usageNanoCores: 250_000_000, usageCoreNanoSeconds: 5e12 });
  assert.equal(s.node.memory.workingSetBytes, 2e9);
  assert.equal(s.node.startTime, '2026-11-28T19:00:00Z');
  const web = s.pods.find((p: any) => p.podRef.name === 'web');
  assert.deepEqual(web.podRef, { name: 'web', namespace: 'shop', uid: 'uid-web' });
  assert.deepEqual(web.containers.map((c: any) => [c.name, c.cpu.usageCoreNanoSeconds, c.memory.workingSetBytes]), [['httpd', 1.5e9, 4096], ['sidecar', 0.5e9, 1024]]);
  assert.equal(web.containers[0].cpu.usageNanoCores, 1e7);
  assert.equal(web.cpu.usageCoreNanoSeconds, 2e9);
  assert.equal(web.memory.workingSetBytes, 5120);
  const db = s.pods.find((p: any) => p.podRef.name === 'db');
  assert.equal(db.cpu.usageCoreNanoSeconds, 9e9);
  assert.equal(db.memory.workingSetBytes, 99);
  assert.equal(s.pods.length, 2, 'a container without a pod uid is left out');
});

test('/metrics/resource: the kubelet\'s series, seconds of CPU, a timestamp per sample', () => {
  const text = resourceMetricsText(buildSummary(input));
  const lines = text.trim().split('\n');
  assert.ok(lines.includes(`container_cpu_usage_seconds_total{container="httpd",namespace="shop",pod="web"} 1.5 ${T}`));
  assert.ok(lines.includes(`container_memory_working_set_bytes{container="pg",namespace="shop",pod="db"} 10 ${T}`));
  assert.ok(lines.includes(`pod_memory_working_set_bytes{namespace="shop",pod="web"} 5120 ${T}`));
  assert.ok(lines.includes(`node_cpu_usage_seconds_total 5000 ${T}`));
  assert.ok(lines.includes('# TYPE container_cpu_usage_seconds_total counter'));
  assert.ok(lines.includes('scrape_error 0'));
});
