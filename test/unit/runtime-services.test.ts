// The sandbox and container services over the in-memory FakeBackend (no runc): creation, undo of a
// creation whose step fails (nothing left half-made), stop/remove idempotence, recovery from records
// after a "crash", and exits the backend reports. Real records, real overlay and tmpfs mounts (root).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig, type NodeletConfig } from '../../src/config/config.js';
import { notFound } from '../../src/common/errors.js';
import { criProto } from '../../src/cri/grpc.js';
import { BackendFactory } from '../../src/runtime/backend.js';
import { RuntimeService } from '../../src/runtime/runtime-service.js';
import type { CniNetwork } from '../../src/network/cni.js';
import type { ImageService } from '../../src/image/image-service.js';
import type { ContainerConfig__Output } from '../../src/cri/generated/runtime/v1/ContainerConfig.js';
import type { PodSandboxConfig__Output } from '../../src/cri/generated/runtime/v1/PodSandboxConfig.js';
import { FakeBackend, FakeHost } from '../helpers/fake-backend.js';
import { containerStatusMessage, runtimeHandlers } from '../../src/cri/runtime-handlers.js';
import { containerMessage, podSandboxMessage } from '../../src/cri/list-responses.js';
import { EncodedMessage } from '../../src/cri/server.js';

let tmp: string;
let layerDir: string;
const daemons: RuntimeService[] = [];

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-fake-backend-'));
  layerDir = path.join(tmp, 'layer');
  await fsp.mkdir(path.join(layerDir, 'bin'), { recursive: true });
  await fsp.writeFile(path.join(layerDir, 'pause'), '');
});

after(async () => {
  for (const d of daemons) d.stopMonitoring();
  // Whatever a test left mounted under the temp dir (it failed half-way): unmount before removing.
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(tmp));
  const { run } = await import('../../src/common/exec.js');
  for (const m of mounts.sort((a, b) => b.length - a.length)) await run('umount', ['-l', m], { reject: false });
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** One image for everything (the pause entrypoint included); `missing` is not there. */
function images(): ImageService {
  return {
    resolveImage: async (ref: string) => {
      if (ref.includes('missing')) throw notFound(`image ${ref} not found`);
      return { record: { id: 'sha256:' + 'a'.repeat(64), repoDigests: [], config: { config: { Entrypoint: ['/pause'] } } }, layerDirs: [layerDir] };
    },
    layerTrees: async () => [{ dir: layerDir, opaqueDirs: [] }],
    lookup: () => undefined,
    pull: async () => undefined,
  } as unknown as ImageService;
}

/** Pods here are host-network: the network is never asked to set anything up. */
const network = {
  status: async () => ({ ready: true }),
  setUp: async () => {
    throw new Error('host-network pods need no network set-up');
  },
  tearDown: async () => undefined,
} as unknown as CniNetwork;

/** A daemon over `root` whose every handler runs on the fake host. */
async function startDaemon(root: string, host: FakeHost, configure: (config: NodeletConfig) => void = () => undefined): Promise<RuntimeService> {
  const config = defaultConfig();
  config.root = path.join(root, 'lib');
  config.runRoot = path.join(root, 'run');
  config.runtime.sandboxImage = 'example.test/pause:1';
  configure(config);
  const rt = new RuntimeService({
    config,
    network,
    images: images(),
    restrictOomScoreAdj: false,
    cgroupV2: existsSync('/sys/fs/cgroup/cgroup.controllers'),
    hugetlbController: false,
    appArmor: false,
    backendFactory: new BackendFactory({ runc: () => new FakeBackend(host) }),
  });
  await rt.start();
  daemons.push(rt);
  return rt;
}

/** The configs as the gRPC layer hands them over (proto defaults filled in). */
function podConfig(name: string): PodSandboxConfig__Output {
  const svc = criProto().runtime.v1.RuntimeService.service;
  const config = {
    metadata: { name, namespace: 'fake', uid: `uid-${name}`, attempt: 0 },
    log_directory: path.join(tmp, 'logs', name),
    linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
  };
  return svc.RunPodSandbox.requestDeserialize(svc.RunPodSandbox.requestSerialize({ config } as never)).config!;
}

function ctrConfig(name: string, image = 'example.test/busybox:1'): ContainerConfig__Output {
  const svc = criProto().runtime.v1.RuntimeService.service;
  const config = { metadata: { name, attempt: 0 }, image: { image }, command: ['sleep', '600'], log_path: `${name}.log` };
  return svc.CreateContainer.requestDeserialize(svc.CreateContainer.requestSerialize({ config } as never)).config!;
}

function mounted(dir: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a pod and a container: the backend gets their specs, the records are ready, start makes it RUNNING', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'create'), host);
  const podId = await rt.sandboxes.run(podConfig('web'), '');
  assert.equal(rt.sandboxes.get(podId).state, 'SANDBOX_READY');
  assert.equal(host.containers.get(podId)?.status, 'running', 'the infra container was created and started');
  assert.deepEqual(host.containers.get(podId)?.spec.process.args, ['/pause']);

  const ctrId = await rt.containers.create(podId, ctrConfig('app'));
  // Like containerd's, CreateContainer prepares only: the runtime gets the container at StartContainer.
  assert.equal(host.containers.get(ctrId), undefined, 'the backend has no container before StartContainer');
  assert.equal((await rt.containers.get(ctrId)).state, 'CONTAINER_CREATED');
  assert.equal((await rt.containers.get(ctrId)).pid, undefined, 'a created container has no pid');
  await rt.containers.start(ctrId);
  const created = host.containers.get(ctrId)!;
  assert.deepEqual(created.spec.process.args, ['sleep', '600']);
  assert.equal(created.spec.root.path, path.join(rt.ctx.containers.pathOf(ctrId), 'rootfs'));
  assert.ok(mounted(created.spec.root.path), 'the rootfs is mounted before the backend creates the container');
  assert.equal((await rt.containers.get(ctrId)).state, 'CONTAINER_RUNNING');
  assert.equal((await rt.containers.get(ctrId)).pid, created.pid);
  assert.equal(created.status, 'running');

  const res = await rt.containers.execSync(ctrId, ['echo', 'hi'], 5);
  assert.equal(res.stdout.toString(), 'hi\n');
  await rt.sandboxes.stop(podId);
  await rt.sandboxes.remove(podId);
  assert.equal(host.containers.size, 0, 'nothing left in the backend');
  assert.equal(mounted(created.spec.root.path), false);
});

test('a failed CreateContainer is undone: no record, no mount, no log file, the name is free', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'undo-ctr'), host);
  const podId = await rt.sandboxes.run(podConfig('undo'), '');
  const missing = { ...ctrConfig('app'), mounts: [{ container_path: '/data', host_path: path.join(tmp, 'no-such-dir'), readonly: false, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE', uid_mappings: [], gid_mappings: [] }] };
  await assert.rejects(rt.containers.create(podId, missing as any), { kind: 'InvalidArgument' });
  assert.deepEqual(rt.ctx.containersOf(podId), [], 'no record');
  assert.deepEqual(await fsp.readdir(path.join(tmp, 'undo-ctr', 'lib', 'containers')), [], 'no container directory');
  assert.equal(host.containers.size, 1, 'only the infra container in the backend');
  assert.equal(readFileSync('/proc/mounts', 'utf8').includes(path.join(tmp, 'undo-ctr', 'lib', 'containers')), false, 'no rootfs mount left');
  assert.equal(existsSync(path.join(tmp, 'logs', 'undo', 'app.log')), false, 'no log file of the failed creation');

  // A missing image fails before anything is made, with NotFound.
  await assert.rejects(rt.containers.create(podId, ctrConfig('app', 'example.test/missing:1')), { kind: 'NotFound' });
  const ctrId = await rt.containers.create(podId, ctrConfig('app'));
  assert.ok(ctrId, 'the name is free again');
  await rt.sandboxes.stop(podId);
  await rt.sandboxes.remove(podId);
});

test('a runtime create that fails in StartContainer: the error is returned, the container is EXITED with StartError and 128, removal cleans up', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'start-error'), host);
  const podId = await rt.sandboxes.run(podConfig('starterr'), '');
  const ctrId = await rt.containers.create(podId, ctrConfig('app'));
  host.failNext('create', 'runtime create failed: the test says so');
  await assert.rejects(rt.containers.start(ctrId), /the test says so/);
  const rec = await rt.containers.get(ctrId);
  assert.equal(rec.state, 'CONTAINER_EXITED');
  assert.equal(rec.reason, 'StartError');
  assert.equal(rec.exitCode, 128);
  assert.match(rec.message ?? '', /the test says so/);
  assert.ok(rec.finishedAt);
  assert.equal(host.containers.has(ctrId), false, 'nothing of it in the backend');
  await assert.rejects(rt.containers.start(ctrId), { kind: 'FailedPrecondition' });
  await rt.containers.stop(ctrId, 0);
  await rt.containers.remove(ctrId);
  await rt.containers.remove(ctrId);
  assert.equal(readFileSync('/proc/mounts', 'utf8').includes(rt.ctx.containers.pathOf(ctrId)), false, 'no rootfs mount left');
  await rt.sandboxes.stop(podId);
  await rt.sandboxes.remove(podId);
});

test('a created container the runtime never got: status without pid, stop leaves it CREATED, resources stored for its start, exec refused, remove cleans up', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'created'), host);
  const podId = await rt.sandboxes.run(podConfig('created'), '');
  const ctrId = await rt.containers.create(podId, ctrConfig('app'));
  await rt.containers.stop(ctrId, 10);
  assert.equal((await rt.containers.get(ctrId)).state, 'CONTAINER_CREATED', 'StopContainer of a created container does nothing (as containerd)');
  await assert.rejects(rt.containers.execSync(ctrId, ['true'], 5), { kind: 'FailedPrecondition' });
  await assert.rejects(rt.containers.reopenLog(ctrId), { kind: 'FailedPrecondition' });
  await rt.containers.updateResources(ctrId, { cpu_period: 0, cpu_quota: 0, cpu_shares: 512, memory_limit_in_bytes: 67108864, oom_score_adj: 0, cpuset_cpus: '', cpuset_mems: '', hugepage_limits: [], unified: {}, memory_swap_limit_in_bytes: 0 } as any);
  assert.equal(host.containers.has(ctrId), false, 'an update does not make it in the backend');
  await rt.containers.start(ctrId);
  const spec = host.containers.get(ctrId)!.spec;
  assert.equal(Number(spec.linux?.resources?.memory?.limit), 67108864, 'the update made before the start applies at start');
  assert.ok(spec.linux?.resources?.devices?.length, 'the device rules stay');
  const other = await rt.containers.create(podId, ctrConfig('other'));
  await rt.containers.remove(other);
  assert.deepEqual(await rt.containers.list({ id: other } as any), []);
  assert.equal(host.calls.filter((c) => c.endsWith(other)).length, 0, 'the backend is never asked about a container it never got');
  await rt.sandboxes.stop(podId);
  await rt.sandboxes.remove(podId);
  assert.equal(readFileSync('/proc/mounts', 'utf8').includes(path.join(tmp, 'created', 'lib', 'containers')), false, 'no rootfs mount left');
});

test('a pod whose infra start fails is undone: no record, no shm mount, no run directory, no backend state', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'undo-pod'), host);
  host.failNext('start');
  await assert.rejects(rt.sandboxes.run(podConfig('broken'), ''), /injected start failure/);
  assert.deepEqual(rt.ctx.sandboxes.list(), []);
  assert.deepEqual(await fsp.readdir(path.join(tmp, 'undo-pod', 'lib', 'sandboxes')), []);
  assert.deepEqual(await fsp.readdir(path.join(tmp, 'undo-pod', 'run', 'sandboxes')), [], 'run directory (shm, rootfs) removed');
  assert.equal(readFileSync('/proc/mounts', 'utf8').includes(path.join(tmp, 'undo-pod')), false, 'no shm or rootfs mount left');
  assert.equal(host.containers.size, 0);
  assert.equal(existsSync(path.join(tmp, 'logs', 'broken')), false, 'the log directory it made is gone');
  const podId = await rt.sandboxes.run(podConfig('broken'), '');
  assert.ok(podId, 'the name is free again');
  await rt.sandboxes.remove(podId);
});

test('stop and remove are idempotent, and succeed for ids never seen', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'idempotent'), host);
  const podId = await rt.sandboxes.run(podConfig('twice'), '');
  const ctrId = await rt.containers.create(podId, ctrConfig('app'));
  await rt.containers.start(ctrId);
  await rt.containers.stop(ctrId, 10);
  const stopped = await rt.containers.get(ctrId);
  assert.equal(stopped.state, 'CONTAINER_EXITED');
  assert.equal(stopped.exitCode, 0, 'it stopped on its stop signal');
  await rt.containers.stop(ctrId, 10);
  assert.equal((await rt.containers.get(ctrId)).finishedAt, stopped.finishedAt, 'a second stop changes nothing');
  await rt.containers.remove(ctrId);
  await rt.containers.remove(ctrId);
  await rt.containers.stop('f'.repeat(64), 0);
  await rt.containers.remove('f'.repeat(64));
  await rt.sandboxes.stop(podId);
  await rt.sandboxes.stop(podId);
  await rt.sandboxes.remove(podId);
  await rt.sandboxes.remove(podId);
  await rt.sandboxes.stop('e'.repeat(64));
  await rt.sandboxes.remove('e'.repeat(64));
  assert.equal(host.containers.size, 0);

  // A stubborn container stops only on SIGKILL: 137.
  const pod2 = await rt.sandboxes.run(podConfig('stubborn'), '');
  const ctr2 = await rt.containers.create(pod2, ctrConfig('app'));
  await rt.containers.start(ctr2);
  host.containers.get(ctr2)!.stubborn = true;
  await rt.containers.stop(ctr2, 1);
  assert.equal((await rt.containers.get(ctr2)).exitCode, 137);
  await rt.sandboxes.remove(pod2);
});

test('recovery from records: exits while down are recorded, a lost container is EXITED Unknown, a cut-short creation is undone', async () => {
  const host = new FakeHost();
  const root = path.join(tmp, 'recover');
  const a = await startDaemon(root, host);
  const podId = await a.sandboxes.run(podConfig('recover'), '');
  const exited = await a.containers.create(podId, ctrConfig('exited'));
  const lost = await a.containers.create(podId, ctrConfig('lost'));
  const running = await a.containers.create(podId, ctrConfig('running'));
  const halfMade = await a.containers.create(podId, ctrConfig('half-made'));
  for (const id of [exited, lost, running]) await a.containers.start(id);
  const halfMadeRootfs = (await a.containers.get(halfMade)).rootfs;

  // The daemon dies; meanwhile one container exits, one is forgotten by the runtime, and one record
  // is as a creation killed half-way left it.
  a.stopMonitoring();
  host.exit(exited, 3);
  host.lose(lost);
  const recordFile = path.join(a.ctx.containers.pathOf(halfMade), 'container.json');
  const rec = JSON.parse(await fsp.readFile(recordFile, 'utf8'));
  await fsp.writeFile(recordFile, JSON.stringify({ ...rec, phase: 'creating' }));

  const b = await startDaemon(root, host);
  const e = await b.containers.get(exited);
  assert.equal(e.state, 'CONTAINER_EXITED');
  assert.equal(e.exitCode, 3);
  assert.equal(e.reason, 'Error');
  const l = await b.containers.get(lost);
  assert.equal(l.state, 'CONTAINER_EXITED');
  assert.equal(l.exitCode, 255);
  assert.equal(l.reason, 'Unknown');
  assert.equal((await b.containers.get(running)).state, 'CONTAINER_RUNNING');
  assert.equal(b.ctx.containers.get(halfMade), undefined, 'the cut-short creation is undone');
  assert.equal(host.containers.has(halfMade), false, 'and gone from the backend');
  assert.equal(mounted(halfMadeRootfs), false, 'and its rootfs unmounted');
  assert.equal(b.sandboxes.get(podId).state, 'SANDBOX_READY');
  await b.containers.create(podId, ctrConfig('half-made')).then((id) => b.containers.remove(id));

  await b.sandboxes.stop(podId);
  await b.sandboxes.remove(podId);
  assert.equal(host.containers.size, 0);
});

test('recovery of created containers: never started stays CREATED (not lost); a start cut short is CREATED again or RUNNING, never half', async () => {
  const host = new FakeHost();
  const root = path.join(tmp, 'recover-created');
  const a = await startDaemon(root, host);
  const podId = await a.sandboxes.run(podConfig('created'), '');
  const untouched = await a.containers.create(podId, ctrConfig('untouched'));
  const createdInRuntime = await a.containers.create(podId, ctrConfig('runtime-created'));
  const startedInRuntime = await a.containers.create(podId, ctrConfig('runtime-started'));
  // The daemon dies inside two StartContainers: one after the runtime's create, one after its start.
  a.stopMonitoring();
  for (const [id, status] of [[createdInRuntime, 'created'], [startedInRuntime, 'running']] as const) {
    host.containers.set(id, { id, spec: a.ctx.containers.get(id)!.spec!, logPath: '/dev/null', status, pid: host.newPid() });
  }

  const b = await startDaemon(root, host);
  for (const id of [untouched, createdInRuntime]) {
    const rec = await b.containers.get(id);
    assert.equal(rec.state, 'CONTAINER_CREATED', 'a created container is not lost at restart');
    assert.equal(host.containers.has(id), false, 'nothing of it in the runtime');
    await b.containers.start(id);
    assert.equal((await b.containers.get(id)).state, 'CONTAINER_RUNNING');
  }
  const started = await b.containers.get(startedInRuntime);
  assert.equal(started.state, 'CONTAINER_RUNNING', 'a container the runtime started is RUNNING');
  assert.equal(started.spec, undefined);
  await b.sandboxes.stop(podId);
  await b.sandboxes.remove(podId);
  assert.equal(host.containers.size, 0);
});

test('exits the backend reports update the records and emit CONTAINER_STOPPED; an OOM kill says OOMKilled', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'exits'), host);
  await rt.startMonitoring();
  const podId = await rt.sandboxes.run(podConfig('exits'), '');
  const done = await rt.containers.create(podId, ctrConfig('done'));
  const oom = await rt.containers.create(podId, ctrConfig('oom'));
  for (const id of [done, oom]) await rt.containers.start(id);
  const subscription = rt.ctx.events.subscribe();
  host.exit(done, 0);
  host.exit(oom, 137, { oomKilled: true });
  await waitFor('both exits recorded', () => rt.ctx.containers.get(done)?.state === 'CONTAINER_EXITED' && rt.ctx.containers.get(oom)?.state === 'CONTAINER_EXITED');
  assert.equal(rt.ctx.containers.get(done)?.reason, 'Completed');
  assert.equal(rt.ctx.containers.get(oom)?.reason, 'OOMKilled');
  const stopped = new Set<string>();
  while (stopped.size < 2) {
    const ev = await Promise.race([subscription.next(), new Promise<undefined>((r) => setTimeout(r, 5000))]);
    assert.ok(ev, 'a CONTAINER_STOPPED_EVENT for each exit');
    if (ev.type === 'CONTAINER_STOPPED_EVENT') stopped.add(ev.containerId);
  }
  assert.deepEqual([...stopped].sort(), [done, oom].sort());

  // The infra process dying makes the pod NOTREADY.
  host.exit(podId, 137);
  await waitFor('pod not ready', () => rt.ctx.sandboxes.get(podId)?.state === 'SANDBOX_NOTREADY');
  subscription.close();
  rt.stopMonitoring();
  await rt.sandboxes.remove(podId);
  assert.equal(host.containers.size, 0);
});

test('a handler whose type has no backend in this build is unusable: left out at start, its pods refused naming why', async () => {
  const host = new FakeHost();
  const rt = await startDaemon(path.join(tmp, 'no-backend'), host, (config) => {
    config.runtime.handlers.shim = { type: 'containerd', path: '', runtimeType: 'io.containerd.runc.v2' };
  });
  assert.deepEqual(rt.ctx.usableHandlers().sort(), ['crun', 'runc']);
  await assert.rejects(rt.sandboxes.run(podConfig('shim'), 'shim'), (err: Error & { kind?: string }) => {
    assert.equal(err.kind, 'FailedPrecondition');
    assert.match(err.message, /runtime_handler "shim" is not usable: its type containerd has no backend in this build/);
    return true;
  });
  await assert.rejects(rt.sandboxes.run(podConfig('nosuch'), 'nosuch'), { kind: 'InvalidArgument' });
  assert.equal(host.containers.size, 0);

  // As the default handler, it stops the daemon from starting, saying why.
  await assert.rejects(
    startDaemon(path.join(tmp, 'no-backend-default'), host, (config) => {
      config.runtime.handlers.shim = { type: 'containerd', path: '', runtimeType: 'io.containerd.runc.v2' };
      config.runtime.defaultHandler = 'shim';
    }),
    /default runtime handler "shim" is not usable: its type containerd has no backend in this build/,
  );
});

/**
 * ListContainers and ListPodSandbox answer from per-record encoded entries: for every filter, before and
 * after each change of state, the bytes are those the generic serializer makes of freshly built messages.
 */
test('list answers (reused encoded entries) equal the generic encoding for every filter, across start, stop, exits, update, remove and recovery', async () => {
  const svc = criProto().runtime.v1.RuntimeService.service;
  const host = new FakeHost();
  const root = path.join(tmp, 'lists');
  const labelled = <T extends { labels: Record<string, string>; annotations: Record<string, string> }>(c: T, labels: Record<string, string>): T => ({
    ...c,
    labels,
    annotations: { 'example.test/note': `for ${Object.values(labels).join(',')}`, 'io.kubernetes.container.hash': 'abc' },
  });
  const podIds: string[] = [];
  const ctrIds: string[] = [];
  let rt = await startDaemon(root, host);
  // Made once per daemon, as the server does: the entries are kept from one list to the next.
  let handlers = runtimeHandlers(rt).unary;
  for (const [i, tier] of ['web', 'db'].entries()) {
    podIds.push(await rt.sandboxes.run(labelled(podConfig(`lists-${tier}`), { tier, app: 'lists', [`only-${i}`]: 'yes' }), ''));
    for (const name of ['a', 'b', 'c']) ctrIds.push(await rt.containers.create(podIds[i]!, labelled(ctrConfig(`${tier}-${name}`), { tier, name, app: 'lists' })));
  }

  const containerFilters = (): object[] => [
    {},
    { id: ctrIds[1]!.slice(0, 10) },
    { id: 'f'.repeat(12) },
    { pod_sandbox_id: podIds[1]! },
    { pod_sandbox_id: podIds[0]!.slice(0, 8) },
    ...['CONTAINER_CREATED', 'CONTAINER_RUNNING', 'CONTAINER_EXITED', 'CONTAINER_UNKNOWN'].map((state) => ({ state: { state } })),
    { label_selector: { tier: 'web' } },
    { label_selector: { tier: 'db', name: 'b' } },
    { label_selector: { tier: 'nope' } },
    { pod_sandbox_id: podIds[0]!, state: { state: 'CONTAINER_RUNNING' }, label_selector: { app: 'lists' } },
  ];
  const sandboxFilters = (): object[] => [
    {},
    { id: podIds[0]!.slice(0, 10) },
    { state: { state: 'SANDBOX_READY' } },
    { state: { state: 'SANDBOX_NOTREADY' } },
    { label_selector: { 'only-1': 'yes' } },
    { label_selector: { app: 'lists', tier: 'web' } },
    { id: podIds[1]!, state: { state: 'SANDBOX_READY' } },
  ];
  /** Every filter, both lists: the handler's bytes against the generic serializer's; returns the unfiltered lists decoded. */
  const check = async (when: string) => {
    for (const filter of containerFilters()) {
      const req = svc.ListContainers.requestDeserialize(svc.ListContainers.requestSerialize({ filter } as never));
      const answer = await handlers.ListContainers!(req, {} as never);
      assert.ok(answer instanceof EncodedMessage, 'ListContainers answers pre-encoded bytes');
      const generic = svc.ListContainers.responseSerialize({ containers: (await rt.containers.list(req.filter)).map(containerMessage) } as never);
      assert.deepEqual(svc.ListContainers.responseDeserialize(answer.bytes), svc.ListContainers.responseDeserialize(generic), `${when}: ListContainers ${JSON.stringify(filter)}`);
      assert.ok(answer.bytes.equals(generic), `${when}: the same bytes for ListContainers ${JSON.stringify(filter)}`);
    }
    for (const filter of sandboxFilters()) {
      const req = svc.ListPodSandbox.requestDeserialize(svc.ListPodSandbox.requestSerialize({ filter } as never));
      const answer = await handlers.ListPodSandbox!(req, {} as never);
      assert.ok(answer instanceof EncodedMessage, 'ListPodSandbox answers pre-encoded bytes');
      const generic = svc.ListPodSandbox.responseSerialize({ items: (await rt.sandboxes.list(req.filter)).map(podSandboxMessage) } as never);
      assert.deepEqual(svc.ListPodSandbox.responseDeserialize(answer.bytes), svc.ListPodSandbox.responseDeserialize(generic), `${when}: ListPodSandbox ${JSON.stringify(filter)}`);
      assert.ok(answer.bytes.equals(generic), `${when}: the same bytes for ListPodSandbox ${JSON.stringify(filter)}`);
    }
    // Each container's (non-verbose) status: kept encoded per record, it must follow every change as the lists do.
    for (const id of ctrIds) {
      const rec = rt.ctx.containers.get(id);
      if (!rec || rec.phase !== 'ready') continue;
      const req = svc.ContainerStatus.requestDeserialize(svc.ContainerStatus.requestSerialize({ container_id: id } as never));
      const answer = await handlers.ContainerStatus!(req, {} as never);
      assert.ok(answer instanceof EncodedMessage, 'ContainerStatus answers pre-encoded bytes');
      const generic = svc.ContainerStatus.responseSerialize({ status: containerStatusMessage(await rt.containers.get(id)), info: {} } as never);
      assert.ok(answer.bytes.equals(generic), `${when}: the same bytes for ContainerStatus of ${id}`);
    }
    const all = svc.ListContainers.responseDeserialize(((await handlers.ListContainers!(svc.ListContainers.requestDeserialize(Buffer.alloc(0)), {} as never)) as EncodedMessage).bytes);
    const pods = svc.ListPodSandbox.responseDeserialize(((await handlers.ListPodSandbox!(svc.ListPodSandbox.requestDeserialize(Buffer.alloc(0)), {} as never)) as EncodedMessage).bytes);
    const stateOf = new Map<string, string>([...all.containers!.map((c) => [c.id!, c.state as string] as const), ...pods.items!.map((p) => [p.id!, p.state as string] as const)]);
    return stateOf;
  };

  let states = await check('all created');
  assert.deepEqual([...new Set(ctrIds.map((id) => states.get(id)))], ['CONTAINER_CREATED']);
  for (const id of ctrIds.slice(0, 4)) await rt.containers.start(id);
  states = await check('four started');
  assert.equal(states.get(ctrIds[0]!), 'CONTAINER_RUNNING');
  await rt.containers.stop(ctrIds[0]!, 10);
  states = await check('one stopped');
  assert.equal(states.get(ctrIds[0]!), 'CONTAINER_EXITED', 'a stop is seen in the next list');
  const update = svc.UpdateContainerResources.requestDeserialize(svc.UpdateContainerResources.requestSerialize({ linux: { cpu_shares: 512 } } as never));
  await rt.containers.updateResources(ctrIds[1]!, update.linux!);
  await check('resources updated');
  await rt.startMonitoring();
  host.exit(ctrIds[2]!, 1);
  await waitFor('the exit recorded', () => rt.ctx.containers.get(ctrIds[2]!)?.state === 'CONTAINER_EXITED');
  states = await check('an exit the backend reported');
  assert.equal(states.get(ctrIds[2]!), 'CONTAINER_EXITED');
  rt.stopMonitoring();
  await rt.containers.remove(ctrIds[1]!);
  states = await check('one removed');
  assert.equal(states.has(ctrIds[1]!), false, 'a removed container is gone from the list');
  await rt.sandboxes.stop(podIds[1]!);
  states = await check('a pod stopped');
  assert.equal(states.get(podIds[1]!), 'SANDBOX_NOTREADY');
  assert.equal(states.get(ctrIds[3]!), 'CONTAINER_EXITED', "the stopped pod's container too");

  // A restart: new record objects, and a state changed while down.
  const late = await rt.containers.create(podIds[0]!, labelled(ctrConfig('web-late'), { tier: 'web', name: 'late', app: 'lists' }));
  await rt.containers.start(late);
  ctrIds.push(late);
  states = await check('one more started');
  assert.equal(states.get(late), 'CONTAINER_RUNNING');
  host.exit(late, 2);
  rt = await startDaemon(root, host);
  handlers = runtimeHandlers(rt).unary;
  states = await check('after a restart');
  assert.equal(states.get(late), 'CONTAINER_EXITED', 'an exit while down is in the first list');
  assert.equal(states.get(ctrIds[1]!), undefined);
  await rt.sandboxes.remove(podIds[0]!);
  await rt.sandboxes.remove(podIds[1]!);
  states = await check('all removed');
  assert.equal(states.size, 0);
  assert.equal(host.containers.size, 0);
});
