// The benchmark's tables: side-by-side columns named after what is compared, and the agent-against-kubelet
// table saying why it is empty when the Kubernetes tools are not there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentKubeletTable, latencyTable, percentile, renderMarkdown, sideBySideTable } from '../../scripts/bench/report.js';
import { runAgentKubeletBench } from '../../scripts/bench/agent-kubelet.js';

const samples = (entries: [string, number[]][]) => ({ samples: new Map(entries) });

test('percentile is nearest-rank', () => {
  assert.equal(percentile([5, 1, 3, 2, 4], 50), 3);
  assert.equal(percentile([5, 1, 3, 2, 4], 95), 5);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('sideBySideTable names the columns and the ratio after the two sides; a side without samples shows dashes', () => {
  const t = sideBySideTable(samples([['op', [100, 200, 300]]]), samples([['op', [200, 400, 600]], ['other', [1.5]]]), ['nodelet-agent', 'kubelet'], 'what');
  assert.deepEqual(t.header, ['what', 'nodelet-agent p50 ms', 'nodelet-agent p95 ms', 'kubelet p50 ms', 'kubelet p95 ms', 'ratio p50 (nodelet-agent/kubelet)']);
  assert.deepEqual(t.rows, [
    ['op (n=3)', '200', '300', '400', '600', '0.50×'],
    ['other (n=1)', '—', '—', '1.50', '1.50', '—'],
  ]);
  assert.deepEqual(latencyTable(undefined, undefined).header.slice(1, 2), ['nodelet p50 ms']);
});

test('agentKubeletTable: one "missing" row with the reason (first line, no pipes) when nothing was measured', () => {
  const t = agentKubeletTable(undefined, undefined, 'conformance: /x lacks kubelet | etcd\nmore');
  assert.deepEqual(t.rows, [['missing: conformance: /x lacks kubelet / etcd', '—', '—', '—', '—', '—']]);
  const md = renderMarkdown(t).split('\n');
  assert.equal(md.length, 3);
  assert.match(md[0]!, /^\| node agent on nodelet-cri \(runc\), real apiserver \| nodelet-agent p50 ms \|/);
  assert.equal(md[1], '| --- | ---: | ---: | ---: | ---: | ---: |');
  // Measured rows win over a stale reason.
  assert.equal(agentKubeletTable(samples([['op', [1]]]), samples([['op', [2]]]), 'ignored').rows[0]![0], 'op (n=1)');
});

test('runAgentKubeletBench reports the row missing, and starts nothing, when the Kubernetes tools are not there', async () => {
  const saved = process.env.NODELET_K8S_TOOLS;
  process.env.NODELET_K8S_TOOLS = '/nonexistent/nodelet-k8s-tools';
  try {
    const res = await runAgentKubeletBench({ pods: 1, replicas: 0, busybox: 'x', registryHost: '127.0.0.1:1', runtimeLogLevel: 'info' });
    assert.match(res.missing ?? '', /\/nonexistent\/nodelet-k8s-tools lacks .*kubelet/);
    assert.equal(res.samples, undefined);
  } finally {
    if (saved === undefined) delete process.env.NODELET_K8S_TOOLS;
    else process.env.NODELET_K8S_TOOLS = saved;
  }
});
