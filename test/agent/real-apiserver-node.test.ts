// nodelet-agent joined to the real kube-apiserver the kubeadm way: TLS bootstrap with a bootstrap token, the client
// certificate renewed by CSR before it expires (the controller-manager signs 3-minute certificates here and
// approves node self-renewals), the kubelet API's serving certificate got by a kubelet-serving CSR an operator
// approves, and the kubelet API endpoints read through the apiserver's node proxy (kubectl get --raw) and with a
// service account token (TokenReview + SubjectAccessReview against the real RBAC).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import YAML from 'yaml';
import { configureLogger } from '../../src/common/log.js';
import { KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER } from '../../src/agent/certificates.js';
import { waitFor } from '../helpers/pods.js';
import { startControlPlane, type ControlPlane } from '../conformance/control-plane.js';
import { startAgentHarness, type AgentHarness } from './harness.js';
import { startTestCsiDriver } from '../helpers/csi-driver.js';
import { inlineVolumeHandle, volumeAttachmentName } from '../../src/agent/csi/volumes.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

const nodeName = `join-${randomBytes(3).toString('hex')}`;
const NS = 'default';

/** The apiserver's node proxy refuses loopback addresses: the node reports the host's first other IPv4 address. */
function hostAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('this test needs a non-loopback IPv4 address (the node proxy refuses loopback)');
}

let cp: ControlPlane | undefined;
let h: AgentHarness;
let nodeIp: string;
let nodeLogDir: string;

before(async () => {
  nodeIp = hostAddress();
  // 3 minutes: certificates are backdated 5 minutes, so a renewal falls 0.6–2.2 minutes after issue.
  cp = await startControlPlane({ clusterSigningDuration: '3m' });
  const token = await cp.bootstrapToken();
  h = await startAgentHarness({
    name: 'nodelet-agent-join-',
    nodeName,
    api: false,
    configure: async ({ base }) => {
      const bootstrapKubeconfig = path.join(base, 'bootstrap-kubelet.conf');
      await fsp.writeFile(bootstrapKubeconfig, YAML.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'kubernetes', cluster: { server: cp!.server, 'certificate-authority': cp!.caPath } }],
        users: [{ name: 'tls-bootstrap-token-user', user: { token } }],
        contexts: [{ name: 'tls-bootstrap', context: { cluster: 'kubernetes', user: 'tls-bootstrap-token-user' } }],
        'current-context': 'tls-bootstrap',
      }), { mode: 0o600 });
      nodeLogDir = path.join(base, 'varlog');
      await fsp.mkdir(nodeLogDir);
      await fsp.writeFile(path.join(nodeLogDir, 'node.log'), 'a node log line\n');
      return {
        bootstrapKubeconfig,
        kubeconfig: path.join(base, 'kubelet.conf'),
        certDir: path.join(base, 'pki'),
        rotateCertificates: true,
        rotateServerCertificates: true,
        nodeIp,
        kubeletApiAddress: `${nodeIp}:0`,
        clientCaFile: cp!.caPath,
        nodeLogDir,
        leaseRenewSeconds: 1,
        nodeStatusReportSeconds: 5,
      };
    },
  });
}, { timeout: 240_000 });

after(async () => {
  await h?.close();
  await cp?.stop();
});

async function getJson(args: string[]): Promise<any> {
  return JSON.parse(await cp!.kubectl([...args, '-o', 'json']));
}

async function csrsOf(signer: string): Promise<any[]> {
  return (await getJson(['get', 'csr'])).items
    .filter((c: any) => c.spec.signerName === signer && c.spec.username === `system:node:${nodeName}`)
    .sort((a: any, b: any) => a.metadata.creationTimestamp.localeCompare(b.metadata.creationTimestamp));
}

/** The certificate the kubelet API presents, verified against the cluster CA for the node's address. */
function servedCertificate(verify: boolean): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: nodeIp, port: h.agent.kubeletApi!.port, ca: readFileSync(cp!.caPath), rejectUnauthorized: verify }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.destroy();
      resolve(new X509Certificate(raw));
    });
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
    socket.on('error', reject);
  });
}

const pendingApproval = (c: any) => !(c.status?.conditions ?? []).some((x: any) => x.type === 'Approved' || x.type === 'Denied');

test('TLS bootstrap: the node joins with a bootstrap token; its kubeconfig points at kubelet-client-current.pem', async () => {
  await waitFor('node Ready', async () => {
    const n = await getJson(['get', 'nodes']);
    return n.items.find((x: any) => x.metadata.name === nodeName)?.status?.conditions?.find((c: any) => c.type === 'Ready')?.status === 'True';
  }, 60_000);
  const kubeconfig = YAML.parse(await fsp.readFile(h.config.kubeconfig!, 'utf8'));
  const current = path.join(h.config.certDir!, 'kubelet-client-current.pem');
  assert.equal(kubeconfig.users[0].user['client-certificate'], current);
  assert.equal(kubeconfig.users[0].user['client-key'], current);
  assert.ok((await fsp.lstat(current)).isSymbolicLink());
  const whoami = JSON.parse(await cp!.kubectl(['auth', 'whoami', '-o', 'json'], { kubeconfig: h.config.kubeconfig }));
  assert.equal(whoami.status.userInfo.username, `system:node:${nodeName}`);
  const [first] = (await getJson(['get', 'csr'])).items.filter((c: any) => c.spec.username.startsWith('system:bootstrap:'));
  assert.equal(first.spec.signerName, KUBELET_CLIENT_SIGNER);
  assert.ok(first.status.conditions.some((c: any) => c.type === 'Approved' && c.reason === 'AutoApproved'));
});

test('the serving certificate: a kubelet-serving CSR for the node\'s names, served once an operator approves it', async () => {
  const [csr] = await waitFor('a kubelet-serving CSR', async () => {
    const list = await csrsOf(KUBELET_SERVING_SIGNER);
    return list.length ? list : undefined;
  }, 30_000);
  assert.ok(pendingApproval(csr), 'kubelet-serving CSRs wait for a person');
  assert.deepEqual([...csr.spec.usages].sort(), ['digital signature', 'server auth']);
  // Until it is issued the kubelet API has no certificate: handshakes fail.
  await assert.rejects(servedCertificate(false));
  await cp!.kubectl(['certificate', 'approve', csr.metadata.name]);
  const served = await waitFor('the issued certificate served', () => servedCertificate(true).catch(() => undefined), 30_000);
  assert.match(served.subject, new RegExp(`CN=system:node:${nodeName}`));
  assert.match(served.subject, /O=system:nodes/);
  assert.ok(served.checkIP(nodeIp), `${served.subjectAltName} covers ${nodeIp}`);
  assert.ok(served.subjectAltName?.includes(`DNS:${nodeName}`), served.subjectAltName);
  assert.ok(served.checkIssued(new X509Certificate(readFileSync(cp!.caPath))), 'issued by the cluster CA');
});

/** kubectl get --raw through the apiserver's node proxy (the apiserver's kubelet client certificate, then ours). */
function proxyGet(subpath: string): Promise<string> {
  return cp!.kubectl(['get', '--raw', `/api/v1/nodes/${nodeName}/proxy${subpath}`]);
}

function sample(text: string, name: string, pred: (labels: string) => boolean = () => true): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([\w:]+)(\{[^}]*\})? (\S+)/.exec(line);
    if (m && m[1] === name && pred(m[2] ?? '')) return Number(m[3]);
  }
  return undefined;
}

test('kubelet API endpoints through the apiserver\'s node proxy: metrics, cadvisor, probes, pods, runningpods, configz, logs', async () => {
  await cp!.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'probed', namespace: NS },
      spec: {
        terminationGracePeriodSeconds: 1,
        containers: [{
          name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.2; done'],
          readinessProbe: { exec: { command: ['true'] }, periodSeconds: 1 },
        }],
      },
    }),
  });
  await waitFor('probed Ready', async () => {
    const p = await getJson(['-n', NS, 'get', 'pod', 'probed']);
    return p.status?.conditions?.find((c: any) => c.type === 'Ready')?.status === 'True';
  }, 90_000);

  const metrics = await proxyGet('/metrics');
  assert.ok((sample(metrics, 'kubelet_running_pods') ?? 0) >= 1, 'running pods');
  assert.ok((sample(metrics, 'kubelet_running_containers', (l) => l.includes('container_state="running"')) ?? 0) >= 1);
  assert.ok((sample(metrics, 'kubelet_pod_start_duration_seconds_count') ?? 0) >= 1);
  assert.ok((sample(metrics, 'kubelet_runtime_operations_total', (l) => l.includes('operation_type="run_podsandbox"')) ?? 0) >= 1);
  assert.ok((sample(metrics, 'kubelet_certificate_manager_client_ttl_seconds') ?? 0) > 0);
  assert.ok((sample(metrics, 'process_resident_memory_bytes') ?? 0) > 0);

  const cadvisor = await proxyGet('/metrics/cadvisor');
  assert.ok(
    (sample(cadvisor, 'container_memory_working_set_bytes', (l) => l.includes('pod="probed"') && l.includes('container="main"') && l.includes(`namespace="${NS}"`) && /image="[^"]*busybox/.test(l)) ?? 0) > 0,
    'a working set series for probed/main',
  );

  const probes = await waitFor('a readiness probe counted', async () => {
    const text = await proxyGet('/metrics/probes');
    return sample(text, 'prober_probe_total', (l) => l.includes('pod="probed"') && l.includes('probe_type="Readiness"') && l.includes('result="successful"')) ? text : undefined;
  }, 15_000);
  assert.match(probes, /^# TYPE prober_probe_total counter$/m);

  const pods = JSON.parse(await proxyGet('/pods'));
  assert.equal(pods.kind, 'PodList');
  assert.ok(pods.items.some((p: any) => p.metadata.name === 'probed' && p.status.phase === 'Running'));
  const running = JSON.parse(await proxyGet('/runningpods/'));
  const probed = running.items.find((p: any) => p.metadata.name === 'probed');
  assert.deepEqual(probed.spec.containers.map((c: any) => c.name), ['main']);
  const { kubeletconfig } = JSON.parse(await proxyGet('/configz'));
  assert.equal(kubeletconfig.rotateCertificates, true);
  assert.equal(kubeletconfig.serverTLSBootstrap, true);
  assert.equal(kubeletconfig.port, h.agent.kubeletApi!.port);
  assert.match(await proxyGet('/logs/'), /<a href="node\.log">node\.log<\/a>/);
  assert.equal(await proxyGet('/healthz/syncloop'), 'ok');
  assert.match(await proxyGet('/metrics/slis'), /^kubernetes_healthcheck\{name="syncloop",type="healthz"\} 1$/m);
  assert.equal(await proxyGet('/logs/node.log'), 'a node log line\n');
});

test('a service account token reaches the kubelet API as RBAC allows it: nodes/metrics yes, nodes/configz and nodes/log no', async () => {
  await cp!.kubectl(['apply', '-f', '-'], {
    input: YAML.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'scraper', namespace: NS } },
        { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'nodelet-test-scraper' }, rules: [{ apiGroups: [''], resources: ['nodes/metrics', 'nodes/stats'], verbs: ['get'] }] },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'nodelet-test-scraper' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'nodelet-test-scraper' },
          subjects: [{ kind: 'ServiceAccount', name: 'scraper', namespace: NS }],
        },
      ],
    }),
  });
  const token = (await cp!.kubectl(['-n', NS, 'create', 'token', 'scraper'])).trim();
  const get = (p: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.get(`https://${nodeIp}:${h.agent.kubeletApi!.port}${p}`, { ca: readFileSync(cp!.caPath), headers: { Authorization: `Bearer ${token}` }, timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
  const metrics = await get('/metrics/cadvisor');
  assert.equal(metrics.status, 200, metrics.body);
  assert.match(metrics.body, /^# TYPE container_cpu_usage_seconds_total counter$/m);
  const configz = await get('/configz');
  assert.equal(configz.status, 403);
  assert.match(configz.body, /user=system:serviceaccount:default:scraper.*subresource\(s\)=\[configz proxy\]/);
  assert.equal((await get('/logs/')).status, 403);
});

test('certificate rotation: before expiry the client certificate is renewed by an auto-approved CSR and used at once; a new serving CSR, approved, is served', { timeout: 240_000 }, async () => {
  const currentLink = path.join(h.config.certDir!, 'kubelet-client-current.pem');
  const firstTarget = await fsp.readlink(currentLink);
  const first = new X509Certificate(await fsp.readFile(currentLink));
  // The renewal is asked with the node's own certificate: the CSR's user is the node, approved as self-renewal.
  const [renewal] = await waitFor('a client certificate renewal CSR', async () => {
    const list = await csrsOf(KUBELET_CLIENT_SIGNER);
    return list.some((c) => c.status?.certificate) ? list.filter((c) => c.status?.certificate) : undefined;
  }, 200_000);
  assert.ok(renewal.status.conditions.some((c: any) => c.type === 'Approved' && c.reason === 'AutoApproved'), JSON.stringify(renewal.status.conditions));
  const renewed = await waitFor('kubelet-client-current.pem switched', async () => ((await fsp.readlink(currentLink)) !== firstTarget ? true : undefined), 30_000)
    .then(async () => new X509Certificate(await fsp.readFile(currentLink)));
  assert.notEqual(renewed.serialNumber, first.serialNumber);
  assert.equal(renewed.subject, first.subject);
  assert.ok(Date.now() < Date.parse(first.validTo), 'renewed before the old one expired');
  assert.equal(h.agent.clientCertificates!.certificate!.serialNumber, renewed.serialNumber);
  // The running agent's clients use the new pair (no restart): its next Lease renewal goes through with it.
  const user = h.agent.config.kubeconfig && YAML.parse(await fsp.readFile(h.agent.config.kubeconfig, 'utf8')).users[0].user;
  assert.equal(user['client-certificate'], currentLink);
  const renewedAt = new Date().toISOString();
  await waitFor('Lease renewed after the rotation', async () => {
    const lease = await getJson(['-n', 'kube-node-lease', 'get', 'lease', nodeName]);
    return lease.spec.renewTime > renewedAt ? true : undefined;
  }, 15_000);
  const whoami = JSON.parse(await cp!.kubectl(['auth', 'whoami', '-o', 'json'], { kubeconfig: h.config.kubeconfig }));
  assert.equal(whoami.status.userInfo.username, `system:node:${nodeName}`);

  // The serving certificate is renewed the same way; the new CSR waits for approval, then is served.
  const before = await servedCertificate(false);
  const next = await waitFor('a second kubelet-serving CSR', async () => {
    const list = await csrsOf(KUBELET_SERVING_SIGNER);
    return list.length >= 2 && pendingApproval(list.at(-1)) ? list.at(-1) : undefined;
  }, 200_000);
  await cp!.kubectl(['certificate', 'approve', next.metadata.name]);
  const served = await waitFor('the renewed serving certificate served', async () => {
    const c = await servedCertificate(true).catch(() => undefined);
    return c && c.serialNumber !== before.serialNumber ? c : undefined;
  }, 30_000);
  assert.match(served.subject, new RegExp(`CN=system:node:${nodeName}`));
});

/** Applies objects as admin. */
async function apply(...items: object[]): Promise<void> {
  await cp!.kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items }) });
}

/** A group no file on the machine has: seen on a volume only when the fsGroup was applied. */
const FS_GROUP = 54321;

function writerPod(name: string, volume: object, extra: Record<string, unknown> = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS },
    spec: {
      terminationGracePeriodSeconds: 1,
      ...extra,
      containers: [{
        name: 'main', image: h.busybox, imagePullPolicy: 'IfNotPresent',
        command: ['sh', '-c', `echo written-by-${name} > /data/${name}.txt; trap "exit 0" TERM; while true; do sleep 0.2; done`],
        volumeMounts: [{ name: 'data', mountPath: '/data' }],
      }],
      volumes: [{ name: 'data', ...volume }],
    },
  };
}

function pv(name: string, storageClassName: string, source: object, extra: object = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: { name },
    spec: { capacity: { storage: '1Gi' }, accessModes: ['ReadWriteOnce'], persistentVolumeReclaimPolicy: 'Retain', storageClassName, ...source, ...extra },
  };
}

function pvc(name: string, storageClassName: string): object {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, namespace: NS },
    spec: { accessModes: ['ReadWriteOnce'], storageClassName, resources: { requests: { storage: '1Gi' } } },
  };
}

async function podPhase(name: string): Promise<any> {
  return getJson(['-n', NS, 'get', 'pod', name]);
}

async function waitPodRunning(name: string, timeoutMs = 90_000): Promise<any> {
  let last: any;
  return waitFor(`${name} Running`, async () => {
    last = await podPhase(name).catch(() => undefined);
    return last?.status?.phase === 'Running' ? last : undefined;
  }, timeoutMs).catch((err) => {
    throw new Error(`${err.message}\nlast status: ${JSON.stringify(last?.status)}`);
  });
}

async function deletePod(name: string): Promise<void> {
  await cp!.kubectl(['-n', NS, 'delete', 'pod', name, '--wait=true', '--timeout=60s'], { timeoutMs: 90_000 });
}

test('a PVC volume waits until its claim is bound, then mounts the hostPath PV it is bound to', async () => {
  const dir = await fsp.mkdtemp(path.join(h.base, 'pv-host-'));
  // Bound to the node directly: the scheduler would not place a pod whose claim does not exist yet.
  await apply(writerPod('claimer', { persistentVolumeClaim: { claimName: 'late-claim' } }, { nodeName }));
  const uid = (await podPhase('claimer')).metadata.uid;
  const failedMount = await waitFor('FailedMount while the claim is missing', async () => {
    const events = await getJson(['-n', NS, 'get', 'events', '--field-selector', `involvedObject.uid=${uid},reason=FailedMount`]);
    return events.items[0];
  }, 30_000);
  assert.match(failedMount.message, /MountVolume\.SetUp failed for volume "data" : error processing PVC default\/late-claim: PVC default\/late-claim not found/);
  assert.equal((await podPhase('claimer')).status.phase, 'Pending');
  // The controller-manager binds the claim to the PV; the agent, retrying, mounts it.
  await apply(pv('host-pv', 'manual', { hostPath: { path: dir, type: 'Directory' } }), pvc('late-claim', 'manual'));
  await waitPodRunning('claimer');
  assert.equal(await fsp.readFile(path.join(dir, 'claimer.txt'), 'utf8'), 'written-by-claimer\n');
  // hostPath is neither attachable nor device-mountable: the kubelet reports no volumesInUse for it.
  const node = await getJson(['get', 'node', nodeName]);
  assert.deepEqual(node.status.volumesInUse ?? [], []);
  await deletePod('claimer');
});

test('a local PV: the pod is scheduled to the PV\'s node, mounts it, and node.status.volumesInUse names it while in use', async () => {
  const dir = await fsp.mkdtemp(path.join(h.base, 'pv-local-'));
  await apply(
    pv('local-pv', 'local-manual', { local: { path: dir } }, {
      nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [nodeName] }] }] } },
    }),
    pvc('local-claim', 'local-manual'),
  );
  await waitFor('local-claim Bound', async () => (await getJson(['-n', NS, 'get', 'pvc', 'local-claim'])).status.phase === 'Bound', 60_000);
  await apply(writerPod('local-user', { persistentVolumeClaim: { claimName: 'local-claim' } }, { securityContext: { fsGroup: FS_GROUP } }));
  const pod = await waitPodRunning('local-user');
  assert.equal(pod.spec.nodeName, nodeName);
  assert.equal(await fsp.readFile(path.join(dir, 'local-user.txt'), 'utf8'), 'written-by-local-user\n');
  // The fsGroup on a local PV: the volume's group, setgid, so what the pod writes there is the group's too.
  const root = await fsp.stat(dir);
  assert.equal(root.gid, FS_GROUP);
  assert.ok(root.mode & 0o2000, 'setgid on the volume root');
  assert.equal((await fsp.stat(path.join(dir, 'local-user.txt'))).gid, FS_GROUP);
  await waitFor('volumesInUse names the local PV', async () => {
    const node = await getJson(['get', 'node', nodeName]);
    return (node.status.volumesInUse ?? []).includes('kubernetes.io/local-volume/local-pv') ? true : undefined;
  }, 20_000);
  // Its figures: /stats/summary pods[].volume with the claim, and kubelet_volume_stats_* (what PVC alerts read).
  const summary = JSON.parse(await proxyGet('/stats/summary'));
  const volume = summary.pods.find((p: any) => p.podRef.name === 'local-user').volume.find((v: any) => v.name === 'data');
  assert.deepEqual(volume.pvcRef, { name: 'local-claim', namespace: NS });
  assert.ok(volume.capacityBytes > 0 && volume.availableBytes > 0 && volume.usedBytes > 0 && volume.inodes > 0, JSON.stringify(volume));
  const metrics = await proxyGet('/metrics');
  assert.equal(sample(metrics, 'kubelet_volume_stats_capacity_bytes', (l) => l === `{namespace="${NS}",persistentvolumeclaim="local-claim"}`), volume.capacityBytes);
  assert.ok((sample(metrics, 'kubelet_volume_stats_inodes_used', (l) => l.includes('persistentvolumeclaim="local-claim"')) ?? 0) > 0);
  await deletePod('local-user');
  const after = await proxyGet('/metrics');
  assert.equal(sample(after, 'kubelet_volume_stats_capacity_bytes', (l) => l.includes('persistentvolumeclaim="local-claim"')), undefined, 'gone with the pod');
  await waitFor('volumesInUse empty again', async () => {
    const node = await getJson(['get', 'node', nodeName]);
    return (node.status.volumesInUse ?? []).length === 0 ? true : undefined;
  }, 20_000);
});

test('a generic ephemeral volume: the controller-manager makes <pod>-<volume> from the template, it binds, the pod mounts it', async () => {
  const dir = await fsp.mkdtemp(path.join(h.base, 'pv-eph-'));
  await apply(pv('eph-pv', 'eph-manual', { hostPath: { path: dir, type: 'Directory' } }));
  await apply(writerPod('eph', {
    ephemeral: { volumeClaimTemplate: { spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'eph-manual', resources: { requests: { storage: '1Gi' } } } } },
  }));
  const pod = await waitPodRunning('eph');
  const claim = await getJson(['-n', NS, 'get', 'pvc', 'eph-data']);
  assert.deepEqual(claim.metadata.ownerReferences.map((o: any) => [o.kind, o.name, o.uid, o.controller]), [['Pod', 'eph', pod.metadata.uid, true]]);
  assert.equal(claim.spec.volumeName, 'eph-pv');
  assert.equal(await fsp.readFile(path.join(dir, 'eph.txt'), 'utf8'), 'written-by-eph\n');
  await deletePod('eph');
});

test('a CSI volume: the plugin registers through plugins_registry (CSINode, nodeid annotation); a csi PV is staged, published, unpublished and unstaged', async () => {
  const driverName = 'csi.nodelet.test';
  const driver = await startTestCsiDriver({
    name: driverName,
    nodeId: `id-${nodeName}`,
    dir: await fsp.mkdtemp(path.join(h.base, 'csi-')),
    registryDir: path.join(h.config.root, 'plugins_registry'),
  });
  try {
    await waitFor('the agent registered the plugin', async () => driver.registration?.plugin_registered === true, 30_000);
    const csiNode = await waitFor('CSINode lists the driver', async () => {
      const n = await getJson(['get', 'csinode', nodeName]).catch(() => undefined);
      return n?.spec?.drivers?.some((d: any) => d.name === driverName) ? n : undefined;
    }, 30_000);
    assert.deepEqual(csiNode.spec.drivers.find((d: any) => d.name === driverName), { name: driverName, nodeID: `id-${nodeName}`, topologyKeys: null, allocatable: { count: 16 } });
    assert.deepEqual(csiNode.metadata.ownerReferences.map((o: any) => [o.kind, o.name]), [['Node', nodeName]]);
    const annotated = await getJson(['get', 'node', nodeName]);
    assert.deepEqual(JSON.parse(annotated.metadata.annotations['csi.volume.kubernetes.io/nodeid']), { [driverName]: `id-${nodeName}` });

    await apply(
      { apiVersion: 'storage.k8s.io/v1', kind: 'CSIDriver', metadata: { name: driverName }, spec: { attachRequired: false, podInfoOnMount: false, fsGroupPolicy: 'File' } },
      pv('csi-pv', 'csi-manual', { csi: { driver: driverName, volumeHandle: 'vol-1', volumeAttributes: { flavour: 'test' } } }),
      pvc('csi-claim', 'csi-manual'),
    );
    await apply(writerPod('csi-user', { persistentVolumeClaim: { claimName: 'csi-claim' } }, { securityContext: { fsGroup: FS_GROUP } }));
    const pod = await waitPodRunning('csi-user');
    assert.equal(await fsp.readFile(path.join(driver.backing, 'vol-1', 'csi-user.txt'), 'utf8'), 'written-by-csi-user\n');
    // fsGroupPolicy File: the node applies the pod's fsGroup to the published volume.
    assert.equal((await fsp.stat(path.join(driver.backing, 'vol-1'))).gid, FS_GROUP);
    assert.equal((await fsp.stat(path.join(driver.backing, 'vol-1', 'csi-user.txt'))).gid, FS_GROUP);
    const stage = driver.calls.find((c) => c.method === 'NodeStageVolume')!.request;
    const publish = driver.calls.find((c) => c.method === 'NodePublishVolume')!.request;
    assert.match(stage.staging_target_path, new RegExp(`^${h.config.root}/plugins/kubernetes\\.io/csi/${driverName.replace(/\./g, '\\.')}/[0-9a-f]{64}/globalmount$`));
    assert.deepEqual(stage.volume_capability.access_mode, { mode: 'SINGLE_NODE_WRITER' });
    assert.deepEqual(stage.volume_context, { flavour: 'test' });
    assert.equal(publish.staging_target_path, stage.staging_target_path);
    assert.equal(publish.target_path, path.join(h.config.root, 'pods', pod.metadata.uid, 'volumes', 'kubernetes.io~csi', 'csi-pv', 'mount'));
    assert.equal(publish.readonly, false);
    await waitFor('volumesInUse names the CSI volume', async () => {
      const node = await getJson(['get', 'node', nodeName]);
      return (node.status.volumesInUse ?? []).includes(`kubernetes.io/csi/${driverName}^vol-1`) ? true : undefined;
    }, 20_000);

    await deletePod('csi-user');
    await waitFor('unpublished and unstaged', async () => driver.calls.some((c) => c.method === 'NodeUnstageVolume'), 30_000);
    const order = driver.calls.map((c) => c.method).filter((m) => m.startsWith('NodeStage') || m.startsWith('NodePublish') || m.startsWith('NodeUn'));
    assert.deepEqual(order, ['NodeStageVolume', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeUnstageVolume']);
    assert.equal(await fsp.readFile(path.join(driver.backing, 'vol-1', 'csi-user.txt'), 'utf8'), 'written-by-csi-user\n', 'the data stays with the volume');
    await assert.rejects(fsp.access(stage.staging_target_path), 'staging dir removed');
  } finally {
    await driver.stop();
  }
  // A plugin that goes away is deregistered: CSINode no longer lists it.
  await waitFor('CSINode without the driver', async () => {
    const n = await getJson(['get', 'csinode', nodeName]);
    return !(n.spec.drivers ?? []).some((d: any) => d.name === driverName) ? true : undefined;
  }, 30_000);
});

test('a CSI volume that needs attaching waits for its VolumeAttachment; once attached, its metadata is the publish_context; podInfoOnMount adds the pod', async () => {
  const driverName = 'attach.nodelet.test';
  const driver = await startTestCsiDriver({
    name: driverName,
    nodeId: `id-${nodeName}`,
    dir: await fsp.mkdtemp(path.join(h.base, 'csi-attach-')),
    registryDir: path.join(h.config.root, 'plugins_registry'),
  });
  try {
    await waitFor('the agent registered the plugin', async () => driver.registration?.plugin_registered === true, 30_000);
    await apply(
      { apiVersion: 'storage.k8s.io/v1', kind: 'CSIDriver', metadata: { name: driverName }, spec: { attachRequired: true, podInfoOnMount: true } },
      pv('csi-pv2', 'csi-attach', { csi: { driver: driverName, volumeHandle: 'vol-2' } }),
      pvc('csi-claim2', 'csi-attach'),
    );
    await apply(writerPod('attached-user', { persistentVolumeClaim: { claimName: 'csi-claim2' } }));
    // The attach/detach controller makes the VolumeAttachment (under the name the agent computes); nothing attaches it.
    const va = await waitFor('a VolumeAttachment for csi-pv2', async () => {
      const list = await getJson(['get', 'volumeattachments']);
      return list.items.find((v: any) => v.spec.source.persistentVolumeName === 'csi-pv2' && v.spec.nodeName === nodeName);
    }, 60_000);
    assert.equal(va.metadata.name, volumeAttachmentName('vol-2', driverName, nodeName));
    const uid = (await podPhase('attached-user')).metadata.uid;
    const event = await waitFor('FailedMount: not attached yet', async () => {
      const events = await getJson(['-n', NS, 'get', 'events', '--field-selector', `involvedObject.uid=${uid},reason=FailedMount`]);
      return events.items.find((e: any) => /not attached yet/.test(e.message));
    }, 30_000);
    assert.match(event.message, new RegExp(`VolumeAttachment ${va.metadata.name}`));
    assert.ok(!driver.calls.some((c) => c.method === 'NodeStageVolume'), 'nothing staged before the attach');
    // What the driver's external-attacher would do.
    await cp!.kubectl(['patch', 'volumeattachment', va.metadata.name, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { attached: true, attachmentMetadata: { devicePath: '/dev/fake0' } } })]);
    await waitPodRunning('attached-user');
    assert.equal(await fsp.readFile(path.join(driver.backing, 'vol-2', 'attached-user.txt'), 'utf8'), 'written-by-attached-user\n');
    const stage = driver.calls.find((c) => c.method === 'NodeStageVolume')!.request;
    const publish = driver.calls.find((c) => c.method === 'NodePublishVolume')!.request;
    assert.deepEqual(stage.publish_context, { devicePath: '/dev/fake0' });
    assert.deepEqual(publish.publish_context, { devicePath: '/dev/fake0' });
    assert.deepEqual(publish.volume_context, {
      'csi.storage.k8s.io/pod.name': 'attached-user',
      'csi.storage.k8s.io/pod.namespace': NS,
      'csi.storage.k8s.io/pod.uid': uid,
      'csi.storage.k8s.io/serviceAccount.name': 'default',
      'csi.storage.k8s.io/ephemeral': 'false',
    });
    await deletePod('attached-user');
    await waitFor('unstaged', async () => driver.calls.some((c) => c.method === 'NodeUnstageVolume'), 30_000);
  } finally {
    await driver.stop();
  }
});

test('an inline CSI volume (pod spec): published, never staged, under the kubelet\'s csi-<hash> handle, with its nodePublishSecretRef', async () => {
  const driverName = 'inline.nodelet.test';
  const driver = await startTestCsiDriver({
    name: driverName,
    nodeId: `id-${nodeName}`,
    dir: await fsp.mkdtemp(path.join(h.base, 'csi-inline-')),
    registryDir: path.join(h.config.root, 'plugins_registry'),
  });
  try {
    await waitFor('the agent registered the plugin', async () => driver.registration?.plugin_registered === true, 30_000);
    await apply(
      { apiVersion: 'storage.k8s.io/v1', kind: 'CSIDriver', metadata: { name: driverName }, spec: { attachRequired: false, volumeLifecycleModes: ['Ephemeral'] } },
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'inline-creds', namespace: NS }, stringData: { user: 'u1', password: 'p1' } },
    );
    await apply(writerPod('inline-user', { csi: { driver: driverName, volumeAttributes: { size: '1Mi' }, nodePublishSecretRef: { name: 'inline-creds' } } }));
    const pod = await waitPodRunning('inline-user');
    const handle = inlineVolumeHandle(pod.metadata.uid, 'data');
    assert.equal(await fsp.readFile(path.join(driver.backing, handle, 'inline-user.txt'), 'utf8'), 'written-by-inline-user\n');
    const publish = driver.calls.find((c) => c.method === 'NodePublishVolume')!.request;
    assert.equal(publish.volume_id, handle);
    assert.equal(publish.staging_target_path, '');
    assert.deepEqual(publish.secrets, { user: 'u1', password: 'p1' });
    assert.deepEqual(publish.volume_context, { size: '1Mi', 'csi.storage.k8s.io/ephemeral': 'true' });
    assert.equal(publish.target_path, path.join(h.config.root, 'pods', pod.metadata.uid, 'volumes', 'kubernetes.io~csi', 'data', 'mount'));
    await deletePod('inline-user');
    await waitFor('unpublished', async () => driver.calls.some((c) => c.method === 'NodeUnpublishVolume'), 30_000);
    assert.deepEqual(driver.calls.map((c) => c.method).filter((m) => /^Node(Stage|Publish|Unstage|Unpublish)Volume$/.test(m)), ['NodePublishVolume', 'NodeUnpublishVolume']);
  } finally {
    await driver.stop();
  }
});
