// Findings of a security review, each replayed against a real nodelet-cri (runc, conmon, CNI):
// racing duplicates, root-only state, leftovers of interrupted or failed creations, ExecSync replies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { containerConfig, runContainer, sandboxConfig, waitFor } from '../helpers/pods.js';
import { criProto } from '../../src/cri/grpc.js';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon({ network: true });
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-hygiene-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
});

async function removePod(id: string) {
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: id });
}

function codeOf(result: PromiseSettledResult<unknown>): string {
  return result.status === 'fulfilled' ? 'OK' : grpc.status[(result.reason as grpc.ServiceError).code]!;
}

/** A process that exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

function isMounted(target: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === target);
}

test('5 concurrent RunPodSandbox / CreateContainer with one name make one; the others get AlreadyExists naming it', async () => {
  const config = sandboxConfig('race', path.join(logDir, 'race'));
  const pods = await Promise.allSettled(Array.from({ length: 5 }, () => d.client.runtime('RunPodSandbox', { config })));
  assert.deepEqual(pods.map(codeOf).sort(), ['ALREADY_EXISTS', 'ALREADY_EXISTS', 'ALREADY_EXISTS', 'ALREADY_EXISTS', 'OK']);
  const podId = (pods.find((p) => p.status === 'fulfilled') as PromiseFulfilledResult<any>).value.pod_sandbox_id as string;
  for (const p of pods) if (p.status === 'rejected') assert.match((p.reason as grpc.ServiceError).details, new RegExp(podId));
  const listed = (await d.client.runtime('ListPodSandbox', {})).items.filter((s: any) => s.metadata.uid === config.metadata.uid);
  assert.equal(listed.length, 1);
  assert.equal((await fsp.readdir(path.join(d.root, 'sandboxes'))).length, 1, 'one sandbox record on disk');

  const ctr = containerConfig('same', BUSYBOX, ['sleep', '60']);
  const created = await Promise.allSettled(Array.from({ length: 5 }, () => d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: ctr, sandbox_config: config })));
  assert.deepEqual(created.map(codeOf).sort(), ['ALREADY_EXISTS', 'ALREADY_EXISTS', 'ALREADY_EXISTS', 'ALREADY_EXISTS', 'OK']);
  const ctrId = (created.find((p) => p.status === 'fulfilled') as PromiseFulfilledResult<any>).value.container_id as string;
  for (const p of created) if (p.status === 'rejected') assert.match((p.reason as grpc.ServiceError).details, new RegExp(ctrId));
  assert.equal((await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: podId } })).containers.length, 1);

  // Removal gives the names back.
  await d.client.runtime('RemoveContainer', { container_id: ctrId });
  const again = await d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: ctr, sandbox_config: config });
  assert.notEqual(again.container_id, ctrId);
  await removePod(podId);
  const podAgain = await d.client.runtime('RunPodSandbox', { config });
  await removePod(podAgain.pod_sandbox_id);
});

test('a creation that fails after its name was reserved gives the name back and leaves nothing', async () => {
  // A missing seccomp profile is found only once set-up has begun (the file is read then).
  const config = sandboxConfig('name-back', path.join(logDir, 'name-back-new', 'pod'));
  const failing = structuredClone(config);
  failing.linux.security_context.seccomp = { profile_type: 'Localhost', localhost_ref: path.join(logDir, 'no-such-profile.json') };
  await assert.rejects(d.client.runtime('RunPodSandbox', { config: failing }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
  assert.deepEqual(await fsp.readdir(path.join(d.root, 'sandboxes')), [], 'no sandbox record left');
  assert.equal(existsSync(path.join(logDir, 'name-back-new')), false, 'the log directory the failed creation made is gone');
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });

  // The container's Localhost seccomp profile is read during set-up, after the name is reserved and the
  // log directory made: the failed creation gives both back.
  const ctr = containerConfig('fails', BUSYBOX, ['sleep', '60'], { log_path: 'fails/0.log' });
  const failingCtr = structuredClone(ctr);
  failingCtr.linux = { security_context: { seccomp: { profile_type: 'Localhost', localhost_ref: path.join(logDir, 'no-such-profile.json') } } };
  await assert.rejects(d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: failingCtr, sandbox_config: config }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT);
  assert.equal(existsSync(path.join(config.log_directory, 'fails')), false, 'no log file or directory of the failed creation');
  assert.deepEqual(await fsp.readdir(path.join(d.root, 'containers')), [], 'no container record left');

  // runc refuses to mount a file over a directory: since the runtime creates the container at StartContainer
  // (as containerd's CRI), the start fails naming the mount; the container is EXITED (StartError) and goes whole.
  const hostFile = path.join(logDir, 'a-file');
  await fsp.writeFile(hostFile, 'x');
  const { container_id: refused } = await d.client.runtime('CreateContainer', {
    pod_sandbox_id: podId,
    config: { ...ctr, metadata: { name: 'refused', attempt: 0 }, log_path: 'refused/0.log', mounts: [{ container_path: '/bin', host_path: hostFile }] },
    sandbox_config: config,
  });
  await assert.rejects(d.client.runtime('StartContainer', { container_id: refused }), (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && err.details.includes('config.mounts[0]'));
  const st = (await d.client.runtime('ContainerStatus', { container_id: refused })).status;
  assert.equal(st.state, 'CONTAINER_EXITED');
  assert.equal(st.reason, 'StartError');
  await d.client.runtime('RemoveContainer', { container_id: refused });
  await waitFor('the refused container\'s files to go', async () => !existsSync(path.join(d.root, 'containers', refused)));

  const { container_id } = await d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: ctr, sandbox_config: config });
  assert.ok(container_id, 'the name is free again');
  await removePod(podId);
});

test('state is root-only (0700 / 0600), also state written before, and stale temp files go at start-up', async () => {
  const config = sandboxConfig('modes', path.join(logDir, 'modes'));
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const ctrId = await runContainer(d.client, podId, config, containerConfig('modes', BUSYBOX, ['sleep', '600'], { envs: [{ key: 'SECRET', value: 's3cr3t' }] }));
  const mode = async (p: string) => ((await fsp.stat(p)).mode & 0o777).toString(8);
  const privateDirs = [
    path.join(d.root, 'sandboxes'),
    path.join(d.root, 'sandboxes', podId),
    path.join(d.root, 'containers'),
    path.join(d.root, 'containers', ctrId),
    path.join(d.runRoot, 'conmon', ctrId, 'bundle'),
    path.join(d.runRoot, 'sandboxes'),
    path.join(d.runRoot, 'sandboxes', podId),
    path.join(d.runRoot, 'conmon', podId, 'bundle'),
  ];
  const privateFiles = [
    path.join(d.root, 'sandboxes', podId, 'sandbox.json'),
    path.join(d.root, 'containers', ctrId, 'container.json'),
    path.join(d.runRoot, 'conmon', ctrId, 'bundle', 'config.json'),
    path.join(d.runRoot, 'conmon', podId, 'bundle', 'config.json'),
  ];
  for (const p of privateDirs) assert.equal(await mode(p), '700', p);
  for (const p of privateFiles) assert.equal(await mode(p), '600', p);
  // The pod's files bind-mounted into containers stay readable for non-root users in them.
  assert.equal(await mode(path.join(d.root, 'sandboxes', podId, 'resolv.conf')), '644');

  // As an older version left them, plus the temp files of a write cut short by a kill.
  await d.kill();
  for (const p of privateDirs) await fsp.chmod(p, 0o755);
  for (const p of privateFiles) await fsp.chmod(p, 0o644);
  const staleTmp = path.join(d.root, 'sandboxes', podId, '.sandbox.json.0123456789ab.tmp');
  await fsp.writeFile(staleTmp, '{"half":');
  const orphan = path.join(d.root, 'sandboxes', 'f'.repeat(64));
  await fsp.mkdir(orphan);
  await fsp.writeFile(path.join(orphan, '.sandbox.json.ba9876543210.tmp'), '{');
  const otherTemps = [path.join(d.root, 'cni-cache', `.${podId}.json.0a1b2c3d4e5f.tmp`), path.join(d.runRoot, 'conmon', ctrId, '.monitor.json.0a1b2c3d4e5f.tmp'), path.join(d.runRoot, 'conmon', ctrId, 'exec-0a1b2c3d.json')];
  for (const f of otherTemps) await fsp.writeFile(f, '{');
  await d.restart();
  for (const f of otherTemps) assert.equal(existsSync(f), false, `stale ${f} removed`);
  for (const p of privateDirs) assert.equal(await mode(p), '700', p);
  for (const p of privateFiles) assert.equal(await mode(p), '600', p);
  assert.equal(existsSync(staleTmp), false, 'stale temp file removed');
  assert.equal(existsSync(orphan), false, 'a directory holding only a temp file removed');
  assert.equal((await d.client.runtime('ContainerStatus', { container_id: ctrId })).status.state, 'CONTAINER_RUNNING');
  await removePod(podId);
});

test('a sandbox record left "creating" is undone fully at start-up, even when its CNI teardown fails', async () => {
  const config = sandboxConfig('interrupted', path.join(logDir, 'interrupted'));
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const recordFile = path.join(d.root, 'sandboxes', podId, 'sandbox.json');
  const rec = JSON.parse(await fsp.readFile(recordFile, 'utf8'));
  assert.ok(rec.netnsPath && existsSync(rec.netnsPath));
  assert.ok(isMounted(rec.shmPath), 'the pod has its /dev/shm tmpfs');
  const conmonPid = Number(await fsp.readFile(path.join(d.runRoot, 'conmon', podId, 'conmon.pid'), 'utf8').catch(() => '0'));

  // As a creation killed half-way left it, with a network whose teardown fails: a plugin that is
  // not there is called last (DEL goes in reverse), after the real plugins cleaned up.
  await d.kill();
  rec.phase = 'creating';
  rec.state = 'SANDBOX_NOTREADY';
  await fsp.writeFile(recordFile, JSON.stringify(rec));
  const cacheFile = path.join(d.root, 'cni-cache', `${podId}.json`);
  const cache = JSON.parse(await fsp.readFile(cacheFile, 'utf8'));
  cache.network.plugins.unshift({ type: 'nodelet-test-no-such-plugin' });
  await fsp.writeFile(cacheFile, JSON.stringify(cache));
  await d.restart();

  assert.equal(existsSync(path.join(d.root, 'sandboxes', podId)), false, 'record removed');
  assert.equal(existsSync(rec.netnsPath), false, 'network namespace removed');
  assert.equal(isMounted(rec.shmPath), false, 'shm tmpfs unmounted');
  assert.equal(existsSync(path.join(d.runRoot, 'sandboxes', podId)), false, 'run directory removed');
  assert.ok(conmonPid > 0, 'the infra monitor had a pid file');
  // The monitor exits on its own once runc killed the infra process: wait for it (bounded).
  await waitFor('the infra monitor to exit', async () => !alive(conmonPid));
  assert.equal(alive(rec.infraPid), false, 'infra process gone');
  // The teardown did fail (and was logged), the other steps ran anyway.
  assert.match(await fsp.readFile(d.logFile, 'utf8'), /"step":"network teardown".*undo step failed/);
  // The same name can be used again, and RemovePodSandbox of the old id is a plain success.
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
  const again = await d.client.runtime('RunPodSandbox', { config });
  await removePod(again.pod_sandbox_id);
});

test('ExecSync output beyond one reply is cut with a note, not an error', async () => {
  const config = sandboxConfig('big-exec', path.join(logDir, 'big-exec'));
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const ctrId = await runContainer(d.client, podId, config, containerConfig('big', BUSYBOX, ['sleep', '600']));
  // A client that accepts what the kubelet accepts (grpc-go's 16 MiB), not grpc-js's default 4 MiB.
  const client = new (criProto().runtime.v1.RuntimeService)(`unix://${d.socket}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  const res: any = await new Promise((resolve, reject) =>
    (client as any).ExecSync({ container_id: ctrId, cmd: ['sh', '-c', 'head -c 20000000 /dev/zero; echo done >&2'], timeout: 60 }, (err: Error | null, r: any) => (err ? reject(err) : resolve(r))),
  ).finally(() => client.close());
  assert.equal(res.exit_code, 0);
  const total = res.stdout.length + res.stderr.length;
  assert.ok(total <= 16 * 1024 * 1024, `reply of ${total} bytes fits a 16 MiB message`);
  assert.ok(res.stdout.length > 15 * 1024 * 1024, 'most of the output is kept');
  assert.match(res.stdout.subarray(-200).toString(), /output cut to its first \d+ bytes/);
  assert.equal(res.stderr.toString(), 'done\n');
  await removePod(podId);
});

test('two records with one name (left by a version without the registrar) do not stop the daemon from starting', async () => {
  const config = sandboxConfig('twins', path.join(logDir, 'twins'));
  const { pod_sandbox_id: first } = await d.client.runtime('RunPodSandbox', { config });
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: first });
  await d.kill();
  const second = 'a'.repeat(64);
  const rec = JSON.parse(await fsp.readFile(path.join(d.root, 'sandboxes', first, 'sandbox.json'), 'utf8'));
  rec.id = second;
  await fsp.mkdir(path.join(d.root, 'sandboxes', second), { mode: 0o700 });
  await fsp.writeFile(path.join(d.root, 'sandboxes', second, 'sandbox.json'), JSON.stringify(rec));
  await d.restart();
  const ids = (await d.client.runtime('ListPodSandbox', {})).items.map((s: any) => s.id).sort();
  assert.deepEqual(ids, [first, second].sort());
  // The name stays taken: a third is refused.
  await assert.rejects(d.client.runtime('RunPodSandbox', { config }), (err: grpc.ServiceError) => err.code === grpc.status.ALREADY_EXISTS);
  await removePod(first);
  await removePod(second);
  assert.deepEqual(await fsp.readdir(path.join(d.root, 'sandboxes')), []);
});

test('CreateContainer racing RemovePodSandbox leaves no orphan container', async () => {
  for (let round = 0; round < 6; round++) {
    // Host network: the container's creation does not depend on the pod's netns, so it could outlive the pod.
    const config = sandboxConfig(`orphan-${round}`, path.join(logDir, `orphan-${round}`));
    config.linux.security_context.namespace_options.network = 'NODE';
    const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
    const create = d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: containerConfig('c', BUSYBOX, ['sleep', '600']), sandbox_config: config });
    const remove = d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
    const [created, removed] = await Promise.allSettled([create, remove]);
    assert.equal(codeOf(removed), 'OK');
    assert.ok(['OK', 'NOT_FOUND', 'FAILED_PRECONDITION'].includes(codeOf(created)), codeOf(created));
    assert.deepEqual((await d.client.runtime('ListContainers', {})).containers, [], `round ${round}: no container outlives its pod`);
    assert.deepEqual(await fsp.readdir(path.join(d.root, 'containers')), [], `round ${round}: no container record`);
    assert.deepEqual(await fsp.readdir(path.join(d.root, 'sandboxes')), [], `round ${round}: no sandbox record`);
  }
});
