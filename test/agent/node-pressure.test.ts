// Node pressure against a real nodelet-cri: a hard eviction threshold the machine crosses (memory.available<1000Ti,
// switched on once the pods run) sets MemoryPressure and evicts the pods one by one, BestEffort before Guaranteed,
// each reported Failed/Evicted with its containers stopped; allocatable follows the thresholds and reservations;
// node.status.images lists the runtime's images; image GC removes an unused image and keeps the one in use.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { configureLogger, logger } from '../../src/common/log.js';
import { DEFAULT_EVICTION_HARD, parseEvictionHard } from '../../src/agent/eviction.js';
import { ImageGc } from '../../src/agent/image-gc.js';
import { POD_UID_LABEL } from '../../src/agent/pod-spec.js';
import { waitFor } from '../helpers/pods.js';
import { LOOP_SCRIPT, startAgentHarness, waitPod, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

const NS = 'pressure';
const nodeName = `pressure-${randomBytes(3).toString('hex')}`;
let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({
    name: 'nodelet-agent-pressure-',
    nodeName,
    configure: () => ({ evictionHard: parseEvictionHard(DEFAULT_EVICTION_HARD), imageGcHighThresholdPercent: 85, imageGcLowThresholdPercent: 80, evictionIntervalMs: 300, kubeReserved: { cpu: 0.25, memory: 64 * 1024 * 1024 }, systemReserved: { memory: 64 * 1024 * 1024 } }),
  });
});

after(() => h?.close());

function pod(name: string, resources?: object): any {
  return {
    metadata: { name, namespace: NS },
    spec: {
      nodeName,
      terminationGracePeriodSeconds: 5,
      containers: [{ name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', LOOP_SCRIPT], ...(resources ? { resources } : {}) }],
    },
  };
}

test('allocatable is capacity less the reservations and the hard memory threshold; node.status.images lists the runtime\'s images', async () => {
  const node = await waitFor('node images reported', () => {
    const n = h.api!.get('nodes', undefined, nodeName);
    return n?.status?.images?.length ? n : undefined;
  }, 30_000);
  const ki = (q: string) => Number(q.replace(/Ki$/, ''));
  assert.equal(ki(node.status.capacity.memory) - ki(node.status.allocatable.memory), 128 * 1024 + 100 * 1024, 'kube + system reserved + memory.available<100Mi');
  assert.equal(node.status.allocatable.cpu, `${Number(node.status.capacity.cpu) * 1000 - 250}m`);
  const busybox = node.status.images.find((i: any) => i.names.some((n: string) => n.includes('nodelet-test/busybox')));
  assert.ok(busybox && busybox.sizeBytes > 0, JSON.stringify(node.status.images));
  for (const c of node.status.conditions.filter((c: any) => c.type.endsWith('Pressure'))) assert.equal(c.status, 'False', c.type);
});

test('a crossed memory.available threshold: MemoryPressure, then the BestEffort pod is evicted before the Guaranteed one', async () => {
  h.api!.create('pods', pod('besteffort'));
  h.api!.create('pods', pod('guaranteed', { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '100m', memory: '64Mi' } }));
  await waitPod(h.api!, NS, 'besteffort', 'Running', (p) => p.status.phase === 'Running');
  await waitPod(h.api!, NS, 'guaranteed', 'Running', (p) => p.status.phase === 'Running');
  // Deterministic: no machine has 1000Ti available.
  h.agent.config.evictionHard = parseEvictionHard('memory.available<1000Ti');
  try {
    const evicted = (p: any) => p.status.phase === 'Failed' && p.status.reason === 'Evicted';
    const first = await waitPod(h.api!, NS, 'besteffort', 'Evicted', evicted, 20_000);
    const second = await waitPod(h.api!, NS, 'guaranteed', 'Evicted', evicted, 20_000);
    // One pod per round, in the order the Evicted events were recorded: BestEffort first.
    assert.deepEqual(events('Evicted').map((e) => e.involvedObject.name).slice(0, 2), ['besteffort', 'guaranteed']);
    for (const p of [first, second]) {
      assert.match(p.status.message, /^The node was low on resource: memory\. Threshold quantity: /);
      const target = p.status.conditions.find((c: any) => c.type === 'DisruptionTarget');
      assert.equal(target.status, 'True');
      assert.equal(target.reason, 'TerminationByKubelet');
      assert.ok(p.status.containerStatuses[0].state.terminated, JSON.stringify(p.status.containerStatuses[0].state));
      const { containers } = await h.daemon!.client.runtime('ListContainers', { filter: { label_selector: { [POD_UID_LABEL]: p.metadata.uid }, state: { state: 'CONTAINER_RUNNING' } } });
      assert.equal(containers.length, 0, 'its containers are stopped');
    }
    const node = await waitFor('MemoryPressure True', () => {
      const n = h.api!.get('nodes', undefined, nodeName);
      return n?.status?.conditions?.find((c: any) => c.type === 'MemoryPressure')?.status === 'True' ? n : undefined;
    }, 15_000);
    assert.equal(node.status.conditions.find((c: any) => c.type === 'MemoryPressure').reason, 'KubeletHasInsufficientMemory');
    // Evicted stays evicted: the worker does not run it again.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(h.api!.get('pods', NS, 'besteffort').status.reason, 'Evicted');
    assert.equal(events('Evicted').length >= 2, true, 'Evicted events');
  } finally {
    h.agent.config.evictionHard = parseEvictionHard(DEFAULT_EVICTION_HARD);
  }
  await waitFor('MemoryPressure False again', () => h.api!.get('nodes', undefined, nodeName)?.status?.conditions?.find((c: any) => c.type === 'MemoryPressure')?.status === 'False', 15_000);
  h.api!.remove('pods', NS, 'besteffort', 0);
  h.api!.remove('pods', NS, 'guaranteed', 0);
  await waitFor('evicted pods deleted', () => !h.api!.get('pods', NS, 'besteffort') && !h.api!.get('pods', NS, 'guaranteed'), 20_000);
});

function events(reason: string): any[] {
  return h.api!.list('events').filter((e) => e.reason === reason && e.involvedObject.namespace === NS);
}

test('image GC over its high threshold removes an unused image and keeps the one a container uses', async () => {
  const unused = `${h.reg.plain}/nodelet-test/entrypoint:latest`;
  await h.daemon!.client.image('PullImage', { image: { image: unused } });
  h.api!.create('pods', pod('user'));
  await waitPod(h.api!, NS, 'user', 'Running', (p) => p.status.phase === 'Running');
  // 1% high, 0% low: any real filesystem is over it; no minimum age.
  const gc = new ImageGc(h.agent.cri, { highThresholdPercent: 1, lowThresholdPercent: 0, minAgeMs: 0 }, logger({ component: 'test' }));
  const removed = await gc.run(await gc.imageFs());
  assert.ok(removed.length >= 1, 'something was removed');
  const status = async (image: string) => (await h.daemon!.client.image('ImageStatus', { image: { image } })).image;
  assert.equal(await status(unused), null, 'the unused image is gone');
  assert.ok(await status(h.busybox), 'the image in use stays');
  h.api!.remove('pods', NS, 'user', 0);
});
