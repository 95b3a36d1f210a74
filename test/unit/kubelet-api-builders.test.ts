// The kubelet API's pure builders: CRI operation names, the cAdvisor text from CRI metrics and from container
// stats, /runningpods and Go-style directory listings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { criOperationType } from '../../src/agent/kubelet-api/metrics.js';
import { cadvisorTextFromCri, cadvisorTextFromStats } from '../../src/agent/kubelet-api/cadvisor.js';
import { directoryListingHtml, runningPodList } from '../../src/agent/kubelet-api/node-info.js';

test('CRI methods get the kubelet\'s operation_type names', () => {
  const table: [string, string][] = [
    ['RunPodSandbox', 'run_podsandbox'],
    ['ListPodSandbox', 'list_podsandbox'],
    ['PodSandboxStatus', 'podsandbox_status'],
    ['ContainerStatus', 'container_status'],
    ['ExecSync', 'exec_sync'],
    ['ListContainerStats', 'list_container_stats'],
    ['PullImage', 'pull_image'],
    ['ImageFsInfo', 'image_fs_info'],
    ['Version', 'version'],
  ];
  for (const [method, want] of table) assert.equal(criOperationType(method), want, method);
});

test('cAdvisor text from CRI metrics: one family per descriptor, labels in descriptor order, ms timestamps', () => {
  const text = cadvisorTextFromCri(
    [
      { name: 'container_cpu_usage_seconds_total', help: 'Cumulative cpu time consumed in seconds.', label_keys: ['container', 'id', 'image', 'name', 'namespace', 'pod', 'cpu'] },
      { name: 'container_memory_rss', help: 'Size of RSS in bytes.', label_keys: ['container', 'id', 'image', 'name', 'namespace', 'pod'] },
    ],
    [{
      pod_sandbox_id: 's1',
      metrics: [],
      container_metrics: [{ container_id: 'c1', metrics: [
        { name: 'container_cpu_usage_seconds_total', timestamp: '1700000000123456789', metric_type: 'COUNTER', label_values: ['app', 'c1', 'busybox', 'c1', 'ns', 'p"1', 'total'], value: { value: '12' } },
        { name: 'container_memory_rss', timestamp: '0', metric_type: 'GAUGE', label_values: ['app', 'c1', 'busybox', 'c1', 'ns', 'p"1'], value: { value: 4096 } },
      ] }],
    }],
  );
  assert.equal(text, [
    '# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.',
    '# TYPE container_cpu_usage_seconds_total counter',
    'container_cpu_usage_seconds_total{container="app",id="c1",image="busybox",name="c1",namespace="ns",pod="p\\"1",cpu="total"} 12 1700000000123',
    '# HELP container_memory_rss Size of RSS in bytes.',
    '# TYPE container_memory_rss gauge',
    'container_memory_rss{container="app",id="c1",image="busybox",name="c1",namespace="ns",pod="p\\"1"} 4096',
    '',
  ].join('\n'));
});

test('cAdvisor text from container stats (runtimes without CRI metrics)', () => {
  const text = cadvisorTextFromStats([{
    attributes: { id: 'c1', metadata: { name: 'app' }, labels: { 'io.kubernetes.container.name': 'app', 'io.kubernetes.pod.name': 'web', 'io.kubernetes.pod.namespace': 'ns' } },
    cpu: { timestamp: '2000000000', usage_core_nano_seconds: { value: '1500000000' } },
    memory: { timestamp: '2000000000', working_set_bytes: { value: '1024' } },
  }], new Map([['c1', 'docker.io/library/busybox:1.36']]));
  assert.match(text, /^container_cpu_usage_seconds_total\{container="app",id="c1",image="docker\.io\/library\/busybox:1\.36",name="c1",namespace="ns",pod="web",cpu="total"\} 1\.5 2000$/m);
  assert.match(text, /^container_memory_working_set_bytes\{container="app",id="c1",image="docker\.io\/library\/busybox:1\.36",name="c1",namespace="ns",pod="web"\} 1024 2000$/m);
  assert.doesNotMatch(text, /^container_memory_rss\{/m, 'no figure, no sample');
});

test('/runningpods: ready sandboxes and running containers grouped by pod; exited ones left out', () => {
  const labels = (pod: string, container?: string) => ({
    'io.kubernetes.pod.uid': `uid-${pod}`, 'io.kubernetes.pod.name': pod, 'io.kubernetes.pod.namespace': 'ns',
    ...(container ? { 'io.kubernetes.container.name': container } : {}),
  });
  const list = runningPodList(
    [{ id: 's1', state: 'SANDBOX_READY', labels: labels('a') }, { id: 's2', state: 'SANDBOX_NOTREADY', labels: labels('b') }],
    [
      { id: 'c1', state: 'CONTAINER_RUNNING', labels: labels('a', 'main'), image: { image: 'busybox' } },
      { id: 'c2', state: 'CONTAINER_EXITED', labels: labels('a', 'init'), image: { image: 'busybox' } },
    ],
  );
  assert.deepEqual(list, {
    kind: 'PodList', apiVersion: 'v1', metadata: {},
    items: [{ metadata: { name: 'a', namespace: 'ns', uid: 'uid-a', creationTimestamp: null }, spec: { containers: [{ name: 'main', image: 'busybox', resources: {} }] }, status: {} }],
  });
});

test('directory listings are sorted, directories end in a slash, names are escaped', () => {
  assert.equal(
    directoryListingHtml([{ name: 'z.log', dir: false }, { name: 'a b<', dir: true }]),
    '<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n<a href="a%20b%3C/">a b&lt;/</a>\n<a href="z.log">z.log</a>\n</pre>\n',
  );
});

test('claim volume figures from statfs: capacity, available to users, used, inodes', async () => {
  const { volumeStatsFromStatfs } = await import('../../src/agent/kubelet-api/volume-stats.js');
  const stats = volumeStatsFromStatfs(
    { podUid: 'u', namespace: 'ns', pod: 'p', volume: 'data', claim: 'c1', path: '/x' },
    { bsize: 4096, blocks: 1000, bfree: 400, bavail: 350, files: 100, ffree: 60 },
    Date.parse('2026-01-01T00:00:00.5Z'),
  );
  assert.deepEqual(stats, {
    time: '2026-01-01T00:00:00Z', name: 'data', pvcRef: { name: 'c1', namespace: 'ns' },
    capacityBytes: 4096000, availableBytes: 1433600, usedBytes: 2457600, inodes: 100, inodesFree: 60, inodesUsed: 40,
  });
});
