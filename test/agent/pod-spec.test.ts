// Pure parts of the agent: DNS, pull policy, env expansion, configs, phases, flags; and the test apiserver's patches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import { containerConfigFor, expandVars, parseQuantity, podDns, pullPolicyOf, resolveEnv, sandboxConfigFor } from '../../src/agent/pod-spec.js';
import { computePodStatus, qosClassOf } from '../../src/agent/pod-status.js';
import { parseAgentFlags } from '../../src/agent/config.js';
import { mergePatch, strategicMergePatch } from './apiserver.js';

const HOST_RESOLV = 'nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n';

function pod(spec: Record<string, any> = {}): V1Pod {
  return { metadata: { name: 'p', namespace: 'ns', uid: 'u-1', labels: { app: 'p' } }, spec: { containers: [{ name: 'c', image: 'busybox' }], ...spec } } as V1Pod;
}

test('DNS policies: ClusterFirst, Default, None with dnsConfig, host network', () => {
  const ctx = { clusterDns: ['10.96.0.10'], clusterDomain: 'cluster.local', hostResolvConf: HOST_RESOLV };
  assert.deepEqual(podDns(pod(), ctx), {
    servers: ['10.96.0.10'],
    searches: ['ns.svc.cluster.local', 'svc.cluster.local', 'cluster.local', 'corp.example'],
    options: ['ndots:5'],
  });
  assert.deepEqual(podDns(pod({ dnsPolicy: 'Default' }), ctx), { servers: ['192.0.2.53'], searches: ['corp.example'], options: ['edns0'] });
  assert.deepEqual(podDns(pod({ hostNetwork: true }), ctx).servers, ['192.0.2.53']);
  assert.deepEqual(podDns(pod({ hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' }), ctx).servers, ['10.96.0.10']);
  assert.deepEqual(podDns(pod(), { ...ctx, clusterDns: [] }).servers, ['192.0.2.53']);
  assert.deepEqual(
    podDns(pod({ dnsPolicy: 'None', dnsConfig: { nameservers: ['1.1.1.1'], searches: ['a.b'], options: [{ name: 'ndots', value: '2' }, { name: 'rotate' }] } }), ctx),
    { servers: ['1.1.1.1'], searches: ['a.b'], options: ['ndots:2', 'rotate'] },
  );
});

test('imagePullPolicy defaults like the apiserver', () => {
  assert.equal(pullPolicyOf({ name: 'c', image: 'busybox' }), 'Always');
  assert.equal(pullPolicyOf({ name: 'c', image: 'busybox:latest' }), 'Always');
  assert.equal(pullPolicyOf({ name: 'c', image: 'localhost:5000/busybox' }), 'Always');
  assert.equal(pullPolicyOf({ name: 'c', image: 'localhost:5000/busybox:1.36' }), 'IfNotPresent');
  assert.equal(pullPolicyOf({ name: 'c', image: 'busybox@sha256:abc' }), 'IfNotPresent');
  assert.equal(pullPolicyOf({ name: 'c', image: 'busybox', imagePullPolicy: 'Never' }), 'Never');
});

test('$(VAR) expansion, quantities and resourceFieldRef', async () => {
  const env = new Map([['A', 'x']]);
  assert.equal(expandVars('$(A)-$(B)-$$(A)', env), 'x-$(B)-$(A)');
  assert.equal(parseQuantity('100m'), 0.1);
  assert.equal(parseQuantity('64Mi'), 64 * 2 ** 20);
  assert.equal(parseQuantity('1G'), 1e9);
  const p = pod({ containers: [{ name: 'c', image: 'i', resources: { limits: { memory: '64Mi', cpu: '500m' } }, env: [
    { name: 'MEM', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
    { name: 'CPU', valueFrom: { resourceFieldRef: { resource: 'limits.cpu', divisor: '1m' } } },
    { name: 'LBL', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
  ] }] });
  const resolved = await resolveEnv(p, p.spec!.containers[0], { nodeName: 'n', podIP: '', podIPs: [], hostIP: '', lookup: async () => undefined });
  assert.deepEqual(Object.fromEntries(resolved), { MEM: '64', CPU: '500', LBL: 'p' });
  const config = containerConfigFor(p, p.spec!.containers[0], 'app', 2, resolved);
  assert.equal(config.linux.resources.memory_limit_in_bytes, 64 * 2 ** 20);
  assert.equal(config.linux.resources.cpu_quota, 50_000);
  assert.equal(config.log_path, 'c/2.log');
  assert.equal(config.labels['io.kubernetes.pod.uid'], 'u-1');
});

test('sandbox config: metadata, log directory, ports, namespaces', () => {
  const p = pod({ hostPID: true, containers: [{ name: 'c', image: 'i', ports: [{ containerPort: 80, hostPort: 8080 }, { containerPort: 81 }] }] });
  const config = sandboxConfigFor(p, 1, { servers: [], searches: [], options: [] }, '/var/log/pods');
  assert.deepEqual(config.metadata, { name: 'p', namespace: 'ns', uid: 'u-1', attempt: 1 });
  assert.equal(config.log_directory, '/var/log/pods/ns_p_u-1');
  assert.deepEqual(config.port_mappings, [{ protocol: 'TCP', container_port: 80, host_port: 8080, host_ip: '' }]);
  assert.deepEqual(config.linux.security_context.namespace_options, { network: 'POD', pid: 'NODE', ipc: 'POD' });
  assert.equal(config.hostname, 'p');
});

test('pod phase and conditions from observed containers', () => {
  const p = pod({ restartPolicy: 'Never' });
  const base = { runtimeName: 'nodelet', hostIP: '192.0.2.1', now: new Date('2030-01-01T00:00:00Z'), waiting: new Map() };
  const sandbox = { id: 's', attempt: 0, ready: true, createdAt: 1, ip: '10.0.0.5', ips: [] };
  const exited = (code: number) => ({ id: 'c1', sandboxId: 's', name: 'c', attempt: 0, state: 'CONTAINER_EXITED' as const, createdAt: 1, startedAt: 2e9, finishedAt: 3e9, exitCode: code, reason: '', message: '', imageRef: 'sha256:x' });
  const pending = computePodStatus(p, { sandbox, sandboxes: [sandbox], containers: [] }, base);
  assert.equal(pending.phase, 'Pending');
  assert.equal(pending.containerStatuses![0].state!.waiting!.reason, 'ContainerCreating');
  assert.equal(pending.podIP, '10.0.0.5');
  assert.equal(computePodStatus(p, { sandbox, sandboxes: [sandbox], containers: [exited(0)] }, base).phase, 'Succeeded');
  const failed = computePodStatus(p, { sandbox, sandboxes: [sandbox], containers: [exited(2)] }, base);
  assert.equal(failed.phase, 'Failed');
  assert.equal(failed.containerStatuses![0].state!.terminated!.reason, 'Error');
  assert.equal(failed.conditions!.find((c) => c.type === 'Ready')!.reason, 'PodCompleted');
  assert.equal(computePodStatus(pod({ restartPolicy: 'OnFailure' }), { sandbox, sandboxes: [sandbox], containers: [exited(2)] }, base).phase, 'Running');
  assert.equal(qosClassOf(pod()), 'BestEffort');
  assert.equal(qosClassOf(pod({ containers: [{ name: 'c', image: 'i', resources: { limits: { cpu: '1', memory: '1Gi' } } }] })), 'Guaranteed');
  assert.equal(qosClassOf(pod({ containers: [{ name: 'c', image: 'i', resources: { requests: { cpu: '1' } } }] })), 'Burstable');
});

test('flags use the kubelet names', () => {
  const cfg = parseAgentFlags(['--kubeconfig', '/k', '--node-name', 'N1', '--cluster-dns', '10.0.0.10,10.0.0.11', '--max-pods', '30', '--node-ip', '192.0.2.9']);
  assert.equal(cfg.nodeName, 'n1');
  assert.deepEqual(cfg.clusterDns, ['10.0.0.10', '10.0.0.11']);
  assert.equal(cfg.maxPods, 30);
  assert.equal(cfg.criEndpoint, 'unix:///run/nodelet/cri.sock');
  assert.throws(() => parseAgentFlags([]), /kubeconfig/);
  assert.throws(() => parseAgentFlags(['--pod-manifest-path', '/m', '--max-pods', 'x']), /max-pods/);
});

test('test apiserver patches: merge patch replaces lists, strategic merge merges by key', () => {
  const node = { status: { conditions: [{ type: 'Ready', status: 'False' }, { type: 'DiskPressure', status: 'False' }], capacity: { cpu: '1' } } };
  const patch = { status: { conditions: [{ type: 'Ready', status: 'True' }], capacity: { memory: '1Ki' } } };
  assert.deepEqual(mergePatch(node, patch).status.conditions, [{ type: 'Ready', status: 'True' }]);
  const smp = strategicMergePatch(node, { ...patch, $setElementOrder: {} });
  assert.deepEqual(smp.status.conditions, [{ type: 'Ready', status: 'True' }, { type: 'DiskPressure', status: 'False' }]);
  assert.deepEqual(smp.status.capacity, { cpu: '1', memory: '1Ki' });
  assert.deepEqual(mergePatch({ a: 1, b: 2 }, { b: null }), { a: 1 });
});
