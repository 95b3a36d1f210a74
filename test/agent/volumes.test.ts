// nodelet-agent volumes end to end: configMap, secret, emptyDir, hostPath, downwardAPI, projected token, subPath,
// with real containers through nodelet-cri; plus the atomic writer and hostPath checks on their own.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configureLogger } from '../../src/common/log.js';
import { writePayload, type Payload } from '../../src/agent/volumes/atomic-writer.js';
import { prepareHostPath } from '../../src/agent/volumes/host-path.js';
import { containerMountsFor } from '../../src/agent/volumes/container-mounts.js';
import { mountPoints, unmountAllUnder } from '../../src/agent/volumes/tmpfs.js';
import { waitFor } from '../helpers/pods.js';
import type { AgentConfig } from '../../src/agent/config.js';
import type { TestDaemon } from '../helpers/daemon.js';
import type { TestApiServer } from './apiserver.js';
import { LOOP_SCRIPT, execCapture, startAgentHarness, waitPod as waitPodIn, type AgentHarness } from './harness.js';

configureLogger(process.env.NODELET_TEST_AGENT_LOG ?? 'silent');

let d: TestDaemon;
let api: TestApiServer;
let config: AgentConfig;
let base: string;
let BUSYBOX: string;
const NS = 'vol-test';
const nodeName = `node-${randomBytes(3).toString('hex')}`;
const LOOP = ['sh', '-c', LOOP_SCRIPT];

let h: AgentHarness;

before(async () => {
  h = await startAgentHarness({ name: 'nodelet-agent-vol-', nodeName });
  ({ daemon: d, api, config, base, busybox: BUSYBOX } = h as Required<AgentHarness>);
});

after(() => h?.close());

function podManifest(name: string, spec: Record<string, any>): any {
  return { metadata: { name, namespace: NS, labels: { app: name, tier: 'test' } }, spec: { nodeName, terminationGracePeriodSeconds: 5, ...spec } };
}

function container(name: string, command: string[], extra: Record<string, any> = {}): any {
  return { name, image: BUSYBOX, imagePullPolicy: 'IfNotPresent', command, ...extra };
}

function waitPod(name: string, what: string, pred: (pod: any) => boolean, timeoutMs?: number): Promise<any> {
  return waitPodIn(api, NS, name, what, pred, timeoutMs);
}

function idOf(pod: any, name: string): string {
  return pod.status.containerStatuses.find((s: any) => s.name === name).containerID.replace('nodelet://', '');
}

function exec(containerId: string, cmd: string[]): Promise<{ code: number; out: string }> {
  return execCapture(d.client, containerId, cmd);
}

async function cat(containerId: string, file: string): Promise<string> {
  const res = await exec(containerId, ['cat', file]);
  assert.equal(res.code, 0, `cat ${file}: ${res.out}`);
  return res.out;
}

async function deleteAndWait(name: string): Promise<void> {
  api.remove('pods', NS, name, 5);
  await waitFor(`${name} gone`, async () => !api.get('pods', NS, name), 20_000);
}

test('atomic writer: ..data generations swap in one rename, stale names go, unchanged content is not rewritten', async () => {
  const dir = path.join(base, `aw-${randomBytes(3).toString('hex')}`);
  const payload = (entries: [string, string, number?][]): Payload => new Map(entries.map(([p, v, mode]) => [p, { data: Buffer.from(v), mode: mode ?? 0o644 }]));
  assert.equal(await writePayload(dir, payload([['a', '1'], ['sub/b', '2', 0o600]])), true);
  assert.equal(await fsp.readFile(path.join(dir, 'a'), 'utf8'), '1');
  assert.equal(await fsp.readFile(path.join(dir, 'sub/b'), 'utf8'), '2');
  assert.equal((await fsp.stat(path.join(dir, 'sub/b'))).mode & 0o777, 0o600);
  assert.equal(await fsp.readlink(path.join(dir, 'a')), '..data/a');
  const firstGeneration = await fsp.readlink(path.join(dir, '..data'));
  assert.match(firstGeneration, /^\.\.\d{4}_/);
  assert.equal(await writePayload(dir, payload([['a', '1'], ['sub/b', '2', 0o600]])), false);
  assert.equal(await fsp.readlink(path.join(dir, '..data')), firstGeneration);
  assert.equal(await writePayload(dir, payload([['a', 'changed'], ['c', '3']])), true);
  assert.equal(await fsp.readFile(path.join(dir, 'a'), 'utf8'), 'changed');
  const entries = (await fsp.readdir(dir)).sort();
  assert.deepEqual(entries.filter((e) => !e.startsWith('..')), ['a', 'c']);
  assert.equal(entries.filter((e) => e.startsWith('..') && e !== '..data').length, 1, 'the old generation is removed');
  await assert.rejects(writePayload(dir, payload([['../escape', 'x']])), /must not contain '\.\.'/);
});

test('hostPath types are checked and created as the kubelet does', async () => {
  const dir = path.join(base, `hp-${randomBytes(3).toString('hex')}`);
  await prepareHostPath(path.join(dir, 'made/deep'), 'DirectoryOrCreate');
  assert.ok((await fsp.stat(path.join(dir, 'made/deep'))).isDirectory());
  await prepareHostPath(path.join(dir, 'made'), 'Directory');
  await assert.rejects(prepareHostPath(path.join(dir, 'absent'), 'Directory'), /is not a directory/);
  await prepareHostPath(path.join(dir, 'made/file'), 'FileOrCreate');
  assert.ok((await fsp.stat(path.join(dir, 'made/file'))).isFile());
  await assert.rejects(prepareHostPath(path.join(dir, 'no-parent/file'), 'FileOrCreate'), /cannot create file/);
  await prepareHostPath(path.join(dir, 'made/file'), 'File');
  await assert.rejects(prepareHostPath(path.join(dir, 'made'), 'File'), /is not a file/);
  await assert.rejects(prepareHostPath(path.join(dir, 'made/file'), 'DirectoryOrCreate'), /is not a directory/);
  await prepareHostPath('/dev/null', 'CharDevice');
  await assert.rejects(prepareHostPath('/dev/null', 'BlockDevice'), /is not a block device/);
  await assert.rejects(prepareHostPath(path.join(dir, 'made'), 'Socket'), /is not a socket/);
  await prepareHostPath(path.join(dir, 'anything'), '');
  await assert.rejects(prepareHostPath('relative', ''), /must be absolute/);
});

test('volumeMounts become CRI mounts: readOnly, propagation, subPath and subPathExpr, no escapes', async () => {
  const dir = path.join(base, `cm-${randomBytes(3).toString('hex')}`);
  const data = path.join(dir, 'data');
  const api = path.join(dir, 'api');
  await fsp.mkdir(data, { recursive: true });
  await fsp.mkdir(api, { recursive: true });
  await fsp.symlink('/etc', path.join(data, 'escape'));
  const volumes = new Map([['data', { hostPath: data, readOnly: false }], ['api', { hostPath: api, readOnly: true }]]);
  const env = new Map([['POD_NAME', 'web-1']]);
  const mounts = await containerMountsFor({
    name: 'c',
    volumeMounts: [
      { name: 'data', mountPath: '/a' },
      { name: 'data', mountPath: '/b', readOnly: true, mountPropagation: 'HostToContainer' },
      { name: 'data', mountPath: '/c', mountPropagation: 'Bidirectional', subPath: 'x/y' },
      { name: 'data', mountPath: '/d', subPathExpr: 'logs/$(POD_NAME)' },
      { name: 'api', mountPath: '/e' },
    ],
  }, volumes, env);
  assert.deepEqual(mounts.map((m) => [m.container_path, m.host_path, m.readonly, m.propagation]), [
    ['/a', data, false, 'PROPAGATION_PRIVATE'],
    ['/b', data, true, 'PROPAGATION_HOST_TO_CONTAINER'],
    ['/c', path.join(data, 'x/y'), false, 'PROPAGATION_BIDIRECTIONAL'],
    ['/d', path.join(data, 'logs/web-1'), false, 'PROPAGATION_PRIVATE'],
    ['/e', api, true, 'PROPAGATION_PRIVATE'],
  ]);
  assert.ok((await fsp.stat(path.join(data, 'logs/web-1'))).isDirectory(), 'a missing subPath is created');
  await assert.rejects(containerMountsFor({ name: 'c', volumeMounts: [{ name: 'data', mountPath: '/x', subPath: 'escape' }] }, volumes, env), /resolves outside the volume/);
  await assert.rejects(containerMountsFor({ name: 'c', volumeMounts: [{ name: 'data', mountPath: '/x', subPath: '../up' }] }, volumes, env), /must not contain/);
  await assert.rejects(containerMountsFor({ name: 'c', volumeMounts: [{ name: 'api', mountPath: '/x', subPath: 'absent' }] }, volumes, env), /does not exist/);
  await assert.rejects(containerMountsFor({ name: 'c', volumeMounts: [{ name: 'nope', mountPath: '/x' }] }, volumes, env), /volume "nope" not found/);
});

test('configMap, secret, emptyDir, hostPath, downwardAPI, projected token and subPath volumes are seen in the containers', async () => {
  const hostDir = path.join(base, `host-${randomBytes(3).toString('hex')}`, 'created');
  api.create('configmaps', { metadata: { name: 'app-config', namespace: NS }, data: { colour: 'teal', size: 'xl' } });
  api.create('secrets', { metadata: { name: 'app-secret', namespace: NS }, type: 'Opaque', data: { password: Buffer.from('s3cr3t').toString('base64') } });
  api.create('configmaps', { metadata: { name: 'kube-root-ca.crt', namespace: NS }, data: { 'ca.crt': '-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n' } });
  api.create('serviceaccounts', { metadata: { name: 'robot', namespace: NS } });
  api.create('pods', podManifest('vols', {
    serviceAccountName: 'robot',
    volumes: [
      { name: 'config', configMap: { name: 'app-config', items: [{ key: 'colour', path: 'nested/colour.txt', mode: 0o600 }, { key: 'size', path: 'size' }] } },
      { name: 'whole-config', configMap: { name: 'app-config' } },
      { name: 'secret', secret: { secretName: 'app-secret', defaultMode: 0o400 } },
      { name: 'optional', configMap: { name: 'does-not-exist', optional: true } },
      { name: 'shared', emptyDir: {} },
      { name: 'memory', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
      { name: 'host', hostPath: { path: hostDir, type: 'DirectoryOrCreate' } },
      { name: 'podinfo', downwardAPI: { items: [
        { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
        { path: 'name', fieldRef: { fieldPath: 'metadata.name' } },
        { path: 'mem', resourceFieldRef: { containerName: 'writer', resource: 'limits.memory', divisor: '1Mi' } },
      ] } },
      { name: 'kube-api-access', projected: { defaultMode: 0o644, sources: [
        { serviceAccountToken: { path: 'token', expirationSeconds: 3607 } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { fieldPath: 'metadata.namespace' } }] } },
      ] } },
    ],
    containers: [
      container('writer', ['sh', '-c', 'echo hello > /shared/greeting; echo from-pod > /host/written; echo in-sub > /sub/file; trap "exit 0" TERM; while true; do sleep 0.2; done'], {
        resources: { limits: { memory: '64Mi' } },
        env: [{ name: 'COLOUR', valueFrom: { configMapKeyRef: { name: 'app-config', key: 'colour' } } }, { name: 'PASSWORD', valueFrom: { secretKeyRef: { name: 'app-secret', key: 'password' } } }],
        volumeMounts: [
          { name: 'config', mountPath: '/etc/config' },
          { name: 'whole-config', mountPath: '/etc/whole' },
          { name: 'secret', mountPath: '/etc/secret' },
          { name: 'optional', mountPath: '/etc/optional' },
          { name: 'shared', mountPath: '/shared' },
          { name: 'shared', mountPath: '/sub', subPath: 'deeper/part' },
          { name: 'memory', mountPath: '/mem' },
          { name: 'host', mountPath: '/host' },
          { name: 'podinfo', mountPath: '/etc/podinfo' },
          { name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
        ],
      }),
      container('reader', LOOP, { volumeMounts: [{ name: 'shared', mountPath: '/data', readOnly: true }, { name: 'whole-config', mountPath: '/cfg/colour', subPath: 'colour' }] }),
    ],
  }));
  const pod = await waitPod('vols', 'Running', (p) => p.status.phase === 'Running' && p.status.containerStatuses.every((s: any) => s.ready));
  const uid = pod.metadata.uid;
  const writer = idOf(pod, 'writer');
  const reader = idOf(pod, 'reader');
  const volumesDir = path.join(config.root, 'pods', uid, 'volumes');

  // env and files from the configMap and the secret
  const env = (await exec(writer, ['env'])).out;
  assert.match(env, /^COLOUR=teal$/m);
  assert.match(env, /^PASSWORD=s3cr3t$/m);
  assert.equal(await cat(writer, '/etc/config/nested/colour.txt'), 'teal');
  assert.equal(await cat(writer, '/etc/config/size'), 'xl');
  assert.equal((await exec(writer, ['stat', '-L', '-c', '%a', '/etc/config/nested/colour.txt'])).out.trim(), '600');
  assert.equal((await exec(writer, ['ls', '/etc/config'])).out.split('\n').filter(Boolean).sort().join(','), 'nested,size');
  assert.equal(await cat(writer, '/etc/whole/colour'), 'teal');
  assert.equal(await cat(writer, '/etc/secret/password'), 's3cr3t');
  assert.equal((await exec(writer, ['stat', '-L', '-c', '%a', '/etc/secret/password'])).out.trim(), '400');
  assert.notEqual((await exec(writer, ['touch', '/etc/config/new'])).code, 0, 'configMap volumes are read-only');
  assert.equal((await exec(writer, ['ls', '/etc/optional'])).out.trim(), '', 'an optional missing configMap gives an empty volume');

  // secrets and projected tokens live on tmpfs; the Memory emptyDir has its size limit
  const mounts = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const tmpfsAt = (dir: string) => mounts.split('\n').find((l) => l.split(' ')[4] === dir && / - tmpfs /.test(l));
  assert.ok(tmpfsAt(path.join(volumesDir, 'kubernetes.io~secret', 'secret')), 'secret on tmpfs');
  assert.ok(tmpfsAt(path.join(volumesDir, 'kubernetes.io~projected', 'kube-api-access')), 'projected on tmpfs');
  assert.match(tmpfsAt(path.join(volumesDir, 'kubernetes.io~empty-dir', 'memory')) ?? '', /size=16384k/);
  assert.match((await exec(writer, ['df', '-k', '/mem'])).out, /16384/);

  // emptyDir shared between the two containers, subPath inside it, hostPath created on the host
  await waitFor('greeting', async () => (await exec(reader, ['cat', '/data/greeting'])).out === 'hello\n');
  assert.notEqual((await exec(reader, ['touch', '/data/x'])).code, 0, 'readOnly volumeMount');
  assert.equal(await fsp.readFile(path.join(volumesDir, 'kubernetes.io~empty-dir', 'shared', 'deeper/part/file'), 'utf8'), 'in-sub\n');
  assert.equal(await fsp.readFile(path.join(hostDir, 'written'), 'utf8'), 'from-pod\n');
  assert.equal(await cat(reader, '/cfg/colour'), 'teal', 'subPath of a configMap key');

  // downwardAPI
  assert.equal(await cat(writer, '/etc/podinfo/labels'), 'app="vols"\ntier="test"');
  assert.equal(await cat(writer, '/etc/podinfo/name'), 'vols');
  assert.equal(await cat(writer, '/etc/podinfo/mem'), '64');

  // projected service account token, CA and namespace
  const token = await cat(writer, '/var/run/secrets/kubernetes.io/serviceaccount/token');
  const issued = api.tokens.find((t) => t.name === 'robot');
  assert.ok(issued, 'a TokenRequest was made');
  assert.deepEqual(issued.claims['kubernetes.io'].pod, { name: 'vols', uid });
  assert.equal(issued.claims.exp - issued.claims.iat, 3607);
  assert.equal(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub, `system:serviceaccount:${NS}:robot`);
  assert.match(await cat(writer, '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'), /BEGIN CERTIFICATE/);
  assert.equal(await cat(writer, '/var/run/secrets/kubernetes.io/serviceaccount/namespace'), NS);
  assert.ok(api.requests.some((r) => r.method === 'POST' && r.path === `/api/v1/namespaces/${NS}/serviceaccounts/robot/token`));

  // a configMap update shows in the running container's file
  const cm = api.get('configmaps', NS, 'app-config');
  api.update('configmaps', { ...cm, data: { colour: 'crimson', size: 'xl' } });
  const changedAt = Date.now();
  await waitFor('configMap update in the container', async () => (await exec(writer, ['cat', '/etc/config/nested/colour.txt'])).out === 'crimson', 15_000);
  console.log(`# configMap update seen in ${Date.now() - changedAt} ms`);
  assert.equal(await cat(writer, '/etc/whole/colour'), 'crimson');
  // labels changes reach the downwardAPI file too
  const current = api.get('pods', NS, 'vols');
  api.update('pods', { ...current, metadata: { ...current.metadata, labels: { ...current.metadata.labels, extra: 'yes' } } });
  await waitFor('downwardAPI labels update', async () => (await exec(writer, ['cat', '/etc/podinfo/labels'])).out.includes('extra="yes"'), 15_000);

  // deletion tears the volumes down: tmpfs unmounted, directories removed, the hostPath kept
  await deleteAndWait('vols');
  await waitFor('volumes torn down', async () => !(await fsp.stat(volumesDir).catch(() => undefined)), 5000);
  const left = (await mountPoints()).filter((m) => m.startsWith(path.join(config.root, 'pods', uid)));
  assert.deepEqual(left, []);
  assert.equal(await fsp.readFile(path.join(hostDir, 'written'), 'utf8'), 'from-pod\n');
});

test('a missing configMap fails the mount (FailedMount, ContainerCreating) until it is created', async () => {
  api.create('pods', podManifest('nomount', {
    volumes: [{ name: 'cfg', configMap: { name: 'late-config' } }],
    containers: [container('main', LOOP, { volumeMounts: [{ name: 'cfg', mountPath: '/cfg' }] })],
  }));
  const event = await waitFor('FailedMount event', async () => api.list('events').find((e) => e.reason === 'FailedMount' && e.involvedObject.name === 'nomount'));
  assert.equal(event.type, 'Warning');
  assert.match(event.message, /MountVolume.SetUp failed for volume "cfg" : configmap "late-config" not found/);
  const pod = await waitPod('nomount', 'ContainerCreating', (p) => p.status.containerStatuses?.[0]?.state?.waiting?.reason === 'ContainerCreating');
  assert.equal(pod.status.phase, 'Pending');
  const { items } = await d.client.runtime('ListPodSandbox', { filter: { label_selector: { 'io.kubernetes.pod.uid': pod.metadata.uid } } });
  assert.equal(items.length, 0, 'no sandbox before the volumes are ready');
  api.create('configmaps', { metadata: { name: 'late-config', namespace: NS }, data: { k: 'arrived' } });
  const running = await waitPod('nomount', 'Running', (p) => p.status.phase === 'Running');
  assert.equal(await cat(idOf(running, 'main'), '/cfg/k'), 'arrived');
  await deleteAndWait('nomount');
});
