// The RuntimeService end to end: real pods and containers through the socket (CNI, overlay), once per backend:
// runc (conmon + runc) and containerd (nodelet-cri's own containerd and its runc shim).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, testBackends, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { sandboxConfig, containerConfig, runContainer, waitExited, waitFor } from '../helpers/pods.js';
import { dispositionFromStatus } from '../helpers/wait.js';

for (const backend of testBackends()) {
describe(`runtime (${backend})`, { concurrency: false }, () => {
  let d: TestDaemon;
  let reg: Registries;
  let logDir: string;
  let BUSYBOX: string;
  let USER_NAME: string;

  before(async () => {
    reg = await useRegistries();
    // A second handler on the same binary shows runtime_handler selection (crun refuses this host's hybrid cgroups).
    d = await startTestDaemon({ backend, args: ['--runtime-handler', 'alt=runc'] });
    logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-logs-'));
    BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
    USER_NAME = `${reg.plain}/nodelet-test/user-name:latest`;
    await d.client.image('PullImage', { image: { image: BUSYBOX } });
    await d.client.image('PullImage', { image: { image: USER_NAME } });
  });

  after(async () => {
    await d?.cleanup();
    await reg?.stop();
    if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
  });

  async function newPod(name: string, extra: Record<string, any> = {}) {
    const config = sandboxConfig(name, path.join(logDir, name), extra);
    const { pod_sandbox_id } = await d.client.runtime('RunPodSandbox', { config });
    return { id: pod_sandbox_id as string, config };
  }

  async function exec(id: string, cmd: string[], timeout = 10) {
    const res = await d.client.runtime('ExecSync', { container_id: id, cmd, timeout });
    return { stdout: res.stdout.toString(), stderr: res.stderr.toString(), code: res.exit_code as number };
  }

  async function expectCode(p: Promise<unknown>, code: grpc.status, mentions?: string) {
    await assert.rejects(p, (err: grpc.ServiceError) => {
      assert.equal(err.code, code, `want ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
      if (mentions) assert.match(err.details, new RegExp(mentions));
      return true;
    });
  }

  test('Version and Status', async () => {
    const v = await d.client.runtime('Version', {});
    assert.equal(v.runtime_name, 'nodelet');
    assert.equal(v.runtime_api_version, 'v1');
    const s = await d.client.runtime('Status', {});
    const byType = Object.fromEntries(s.status.conditions.map((c: any) => [c.type, c]));
    assert.equal(byType.RuntimeReady.status, true);
    assert.equal(byType.NetworkReady.status, true, byType.NetworkReady.message);
  });

  test('a pod of two containers shares network and IPC; logs are in the CRI format', async () => {
    const pod = await newPod('twins');
    const status = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id });
    assert.equal(status.status.state, 'SANDBOX_READY');
    const ip = status.status.network.ip;
    assert.match(ip, /^10\./);
    const server = await runContainer(d.client, pod.id, pod.config, containerConfig('server', BUSYBOX, ['sh', '-c', 'echo ready; printf partial; exec httpd -f -p 8080 -h /etc']));
    const client = await runContainer(d.client, pod.id, pod.config, containerConfig('client', BUSYBOX, ['sleep', '3600']));
    // Same network namespace: localhost reaches the other container.
    const got = await waitFor('httpd in the pod', async () => {
      const r = await exec(client, ['wget', '-q', '-O', '-', 'http://127.0.0.1:8080/hostname']);
      return r.code === 0 ? r.stdout : undefined;
    });
    assert.equal(got.trim(), 'twins');
    // Same IPC namespace.
    const ipcA = await exec(server, ['readlink', '/proc/self/ns/ipc']);
    const ipcB = await exec(client, ['readlink', '/proc/self/ns/ipc']);
    assert.equal(ipcA.stdout, ipcB.stdout);
    // The pod IP answers from the host.
    const body = await waitFor('pod ip from the host', async () => (await fetch(`http://${ip}:8080/hostname`)).text());
    assert.equal(body.trim(), 'twins');
    // CRI log format, with a partial line.
    const cs = await d.client.runtime('ContainerStatus', { container_id: server });
    assert.equal(cs.status.log_path, path.join(logDir, 'twins', 'server.log'));
    const log = await waitFor('log lines', async () => {
      const text = await fsp.readFile(cs.status.log_path, 'utf8');
      return text.includes('partial') ? text : undefined;
    });
    const lines = log.trim().split('\n');
    assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) stdout F ready$/);
    assert.match(lines[1]!, / stdout P partial$/);
    const list = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: pod.id } });
    assert.equal(list.containers.length, 2);
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
    const stopped = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: pod.id, state: { state: 'CONTAINER_RUNNING' } } });
    assert.equal(stopped.containers.length, 0);
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id }); // idempotent
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
    await expectCode(d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id }), grpc.status.NOT_FOUND, pod.id);
    await expectCode(d.client.runtime('ContainerStatus', { container_id: server }), grpc.status.NOT_FOUND);
  });

  test('a host-network pod sees the host interfaces and gets no pod IP', async () => {
    const pod = await newPod('hostnet', {
      linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    });
    const st = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id });
    assert.equal(st.status.network.ip, '');
    const c = await runContainer(d.client, pod.id, pod.config, containerConfig('c', BUSYBOX, ['sleep', '3600']));
    const inside = await exec(c, ['readlink', '/proc/self/ns/net']);
    assert.equal(inside.stdout.trim(), await fsp.readlink('/proc/self/ns/net'));
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('exit codes, reasons and OOM kills are reported', async () => {
    const pod = await newPod('exits');
    const three = await runContainer(d.client, pod.id, pod.config, containerConfig('three', BUSYBOX, ['sh', '-c', 'exit 3']));
    const ok = await runContainer(d.client, pod.id, pod.config, containerConfig('ok', BUSYBOX, ['true']));
    const oom = await runContainer(d.client, pod.id, pod.config, containerConfig('oom', BUSYBOX, ['sh', '-c', 'x=a; while :; do x=$x$x; done'], {
      linux: { resources: { memory_limit_in_bytes: 32 * 1024 * 1024, memory_swap_limit_in_bytes: 32 * 1024 * 1024 } },
    }));
    const s3 = await waitExited(d.client, three);
    assert.equal(s3.state, 'CONTAINER_EXITED');
    assert.equal(s3.exit_code, 3);
    assert.equal(s3.reason, 'Error');
    assert.ok(Number(s3.finished_at) >= Number(s3.started_at));
    const s0 = await waitExited(d.client, ok);
    assert.equal(s0.exit_code, 0);
    assert.equal(s0.reason, 'Completed');
    const so = await waitExited(d.client, oom, 60_000);
    assert.equal(so.reason, 'OOMKilled');
    assert.equal(so.exit_code, 137);
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('security: image user, readonly rootfs, dropped capability, seccomp RuntimeDefault vs Unconfined', async () => {
    const pod = await newPod('security');
    const user = await runContainer(d.client, pod.id, pod.config, containerConfig('user', USER_NAME, ['sleep', '3600']));
    assert.match((await exec(user, ['id'])).stdout, /uid=1000\(app\) gid=1000\(app\)/);
    const ro = await runContainer(d.client, pod.id, pod.config, containerConfig('ro', BUSYBOX, ['sleep', '3600'], {
      linux: { security_context: { readonly_rootfs: true } },
    }));
    const w = await exec(ro, ['touch', '/newfile']);
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /Read-only file system/);
    const nochown = await runContainer(d.client, pod.id, pod.config, containerConfig('nochown', BUSYBOX, ['sleep', '3600'], {
      linux: { security_context: { capabilities: { drop_capabilities: ['CHOWN'] } } },
    }));
    assert.notEqual((await exec(nochown, ['chown', '1000', '/tmp'])).code, 0);
    const withchown = await runContainer(d.client, pod.id, pod.config, containerConfig('withchown', BUSYBOX, ['sleep', '3600']));
    assert.equal((await exec(withchown, ['chown', '1000', '/tmp'])).code, 0);
    const confined = await runContainer(d.client, pod.id, pod.config, containerConfig('confined', BUSYBOX, ['sleep', '3600'], {
      linux: { security_context: { seccomp: { profile_type: 'RuntimeDefault' } } },
    }));
    const unconfined = await runContainer(d.client, pod.id, pod.config, containerConfig('unconfined', BUSYBOX, ['sleep', '3600'], {
      linux: { security_context: { seccomp: { profile_type: 'Unconfined' } } },
    }));
    // unshare(CLONE_NEWUSER) is refused by the default profile without CAP_SYS_ADMIN.
    assert.notEqual((await exec(confined, ['unshare', '-U', 'true'])).code, 0);
    assert.equal((await exec(unconfined, ['unshare', '-U', 'true'])).code, 0);
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('the root filesystem is one overlay mount on the container\'s own upper dir, writable, gone after RemoveContainer', async () => {
    // On containerd the shim mounts it from the task's rootfs mounts (what a VM shim needs), else nodelet does.
    const overlaysOf = async (id: string) =>
      (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => / - overlay /.test(l) && l.includes(`/${id}/upper`));
    const pod = await newPod('rootfs-mount');
    const id = await runContainer(d.client, pod.id, pod.config, containerConfig('rootfs', BUSYBOX, ['sleep', '3600']));
    assert.equal((await overlaysOf(id)).length, 1, (await overlaysOf(id)).join('\n'));
    assert.equal((await exec(id, ['sh', '-c', 'echo kept > /written && cat /written'])).stdout, 'kept\n');
    await d.client.runtime('StopContainer', { container_id: id, timeout: 0 });
    await d.client.runtime('RemoveContainer', { container_id: id });
    // The backend's delete and the unmount finish in the background after RemoveContainer answers.
    await waitFor('the rootfs unmounted after RemoveContainer', async () => (await overlaysOf(id)).length === 0);
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('a mapped port is reachable on 127.0.0.1', async () => {
    const hostPort = await freePort();
    const pod = await newPod('ports', { port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort }] });
    await runContainer(d.client, pod.id, pod.config, containerConfig('web', BUSYBOX, ['httpd', '-f', '-p', '8080', '-h', '/etc']));
    const body = await waitFor('port mapping', async () => (await fetch(`http://127.0.0.1:${hostPort}/hostname`)).text());
    assert.equal(body.trim(), 'ports');
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
    const rules = await import('node:child_process').then((cp) => cp.execFileSync('iptables-save', { encoding: 'utf8' }));
    assert.ok(!rules.includes(`--dport ${hostPort} `), 'portmap rules removed with the pod');
  });

  test('ExecSync returns output and exit code; a timeout kills the command and says so', async () => {
    const pod = await newPod('execsync');
    const c = await runContainer(d.client, pod.id, pod.config, containerConfig('c', BUSYBOX, ['sleep', '3600']));
    const r = await exec(c, ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual(r, { stdout: 'out\n', stderr: 'err\n', code: 7 });
    const started = Date.now();
    await expectCode(d.client.runtime('ExecSync', { container_id: c, cmd: ['sleep', '30'], timeout: 1 }), grpc.status.DEADLINE_EXCEEDED, 'timed out');
    assert.ok(Date.now() - started < 15_000);
    const ps = await exec(c, ['ps']);
    assert.ok(!/sleep 30/.test(ps.stdout), 'the timed-out process is gone');
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('StopContainer: SIGTERM ignored → killed after the timeout; timeout 0 kills at once; stop/remove idempotent', async () => {
    const pod = await newPod('stops');
    const stubborn = await runContainer(d.client, pod.id, pod.config, containerConfig('stubborn', BUSYBOX, ['sh', '-c', "trap '' TERM; while :; do sleep 1; done"]));
    // The shell (PID 1 of its own pid namespace) ignores SIGTERM once its trap has run.
    await waitFor('the shell to ignore SIGTERM', async () => dispositionFromStatus((await exec(stubborn, ['cat', '/proc/1/status'])).stdout, 15) === 'ignored', 10_000);
    let t = Date.now();
    await d.client.runtime('StopContainer', { container_id: stubborn, timeout: 2 });
    const elapsed = Date.now() - t;
    assert.ok(elapsed >= 1800, `waited ${elapsed} ms before SIGKILL`);
    assert.equal((await d.client.runtime('ContainerStatus', { container_id: stubborn })).status.exit_code, 137);
    const quick = await runContainer(d.client, pod.id, pod.config, containerConfig('quick', BUSYBOX, ['sh', '-c', "trap '' TERM; while :; do sleep 1; done"]));
    t = Date.now();
    await d.client.runtime('StopContainer', { container_id: quick, timeout: 0 });
    // Not a speed check: only far below the 10 s a stop signal's grace would be here. A loaded CI machine took 1.5 s.
    const killedIn = Date.now() - t;
    assert.ok(killedIn < 10_000, `timeout 0 took ${killedIn} ms`);
    assert.equal((await d.client.runtime('ContainerStatus', { container_id: quick })).status.exit_code, 137);
    await d.client.runtime('StopContainer', { container_id: quick, timeout: 0 });
    await d.client.runtime('RemoveContainer', { container_id: quick });
    await d.client.runtime('RemoveContainer', { container_id: quick });
    await d.client.runtime('StopContainer', { container_id: 'doesnotexist' });
    await d.client.runtime('RemoveContainer', { container_id: 'doesnotexist' });
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: 'doesnotexist' });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: 'doesnotexist' });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('StopContainer right after StartContainer: a stop signal that came before the trap is sent again once it is set', async () => {
    // PID 1 of its own namespace drops a signal it has no handler for; this shell sets its trap a second after start.
    const pod = await newPod('late-trap');
    const late = await runContainer(d.client, pod.id, pod.config, containerConfig('late', BUSYBOX, ['sh', '-c', 'sleep 1; trap "exit 0" TERM; while :; do sleep 0.1; done']));
    const t = Date.now();
    await d.client.runtime('StopContainer', { container_id: late, timeout: 30 });
    const elapsed = Date.now() - t;
    // Lost, the signal would leave the stop to wait out its 30 s and end in SIGKILL (137).
    assert.equal((await d.client.runtime('ContainerStatus', { container_id: late })).status.exit_code, 0);
    assert.ok(elapsed < 20_000, `stopped after ${elapsed} ms`);
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('bad input is answered with the right status code and leaves nothing behind', async () => {
    await expectCode(d.client.runtime('RunPodSandbox', { config: { metadata: { name: 'x', namespace: 'y' } } }), grpc.status.INVALID_ARGUMENT, 'metadata.uid');
    await expectCode(d.client.runtime('RunPodSandbox', { config: sandboxConfig('h', logDir), runtime_handler: 'nope' }), grpc.status.INVALID_ARGUMENT, 'nope');
    const pod = await newPod('badinput');
    await expectCode(d.client.runtime('RunPodSandbox', { config: pod.config }), grpc.status.ALREADY_EXISTS);
    await expectCode(d.client.runtime('CreateContainer', { pod_sandbox_id: 'nosuchpod', config: containerConfig('c', BUSYBOX, ['true']) }), grpc.status.NOT_FOUND, 'nosuchpod');
    await expectCode(d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: containerConfig('c', `${reg.plain}/nodelet-test/never-pulled:1`, ['true']) }), grpc.status.NOT_FOUND, 'never-pulled');
    await expectCode(d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: containerConfig('', BUSYBOX, ['true']) }), grpc.status.INVALID_ARGUMENT, 'metadata.name');
    await expectCode(d.client.runtime('CreateContainer', {
      pod_sandbox_id: pod.id,
      config: containerConfig('m', BUSYBOX, ['true'], { mounts: [{ container_path: '/x', host_path: '/no/such/path' }] }),
    }), grpc.status.INVALID_ARGUMENT, '/no/such/path');
    const c = await runContainer(d.client, pod.id, pod.config, containerConfig('c', BUSYBOX, ['sleep', '3600']));
    await expectCode(d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: containerConfig('c', BUSYBOX, ['true']) }), grpc.status.ALREADY_EXISTS);
    await expectCode(d.client.runtime('StartContainer', { container_id: c }), grpc.status.FAILED_PRECONDITION);
    await expectCode(d.client.runtime('ContainerStatus', { container_id: 'nosuch' }), grpc.status.NOT_FOUND, 'nosuch');
    await expectCode(d.client.runtime('ExecSync', { container_id: c, cmd: [] }), grpc.status.INVALID_ARGUMENT, 'cmd');
    const list = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: pod.id } });
    assert.equal(list.containers.length, 1, 'failed creations left no container behind');
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('20 pods created in parallel all become ready with distinct IPs', async () => {
    const pods = await Promise.all(Array.from({ length: 20 }, (_, i) => newPod(`par${i}`)));
    const ips = new Set<string>();
    for (const p of pods) {
      const st = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: p.id });
      assert.equal(st.status.state, 'SANDBOX_READY');
      ips.add(st.status.network.ip);
    }
    assert.equal(ips.size, 20);
    const listed = await d.client.runtime('ListPodSandbox', { filter: { label_selector: { app: 'par7' } } });
    assert.equal(listed.items.length, 1);
    await Promise.all(pods.map((p) => d.client.runtime('RemovePodSandbox', { pod_sandbox_id: p.id })));
  });

  test('SIGKILL of the daemon: containers keep running, exits meanwhile are recorded, nothing leaks after removal', async () => {
    const pod = await newPod('survivor');
    const runner = await runContainer(d.client, pod.id, pod.config, containerConfig('runner', BUSYBOX, ['sleep', '3600']));
    const quitter = await runContainer(d.client, pod.id, pod.config, containerConfig('quitter', BUSYBOX, ['sh', '-c', 'sleep 2; exit 5']));
    await d.kill();
    // Restart only once the backend has the quitter's exit on record (conmon's exit file, containerd's stopped task).
    await waitFor('the quitter to exit while the daemon is down', () => d.exitRecorded(quitter), 15_000);
    await d.restart();
    const r = await d.client.runtime('ContainerStatus', { container_id: runner });
    assert.equal(r.status.state, 'CONTAINER_RUNNING');
    assert.equal((await exec(runner, ['echo', 'alive'])).stdout, 'alive\n');
    const q = await d.client.runtime('ContainerStatus', { container_id: quitter });
    assert.equal(q.status.state, 'CONTAINER_EXITED');
    assert.equal(q.status.exit_code, 5);
    const st = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: pod.id });
    assert.equal(st.status.state, 'SANDBOX_READY');
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
    const mounts = await fsp.readFile('/proc/self/mountinfo', 'utf8');
    for (const id of [pod.id, runner, quitter]) {
      assert.ok(!mounts.includes(id), `no mount of ${id} left`);
      assert.ok(!(await exists(path.join(d.root, 'containers', id))), `no state dir of ${id} left`);
      assert.ok(!(await exists(path.join(d.root, 'sandboxes', id))), `no state dir of ${id} left`);
      assert.ok(!(await exists(path.join('/run/netns', `nodelet-${id.slice(0, 56)}`))), `no netns of ${id} left`);
    }
    const conmons = await import('node:child_process').then((cp) => cp.execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8', maxBuffer: 64 << 20 }));
    assert.ok(!conmons.includes(runner) && !conmons.includes(pod.id), 'no monitor (conmon, shim) left');
    const inBackend = await d.backendContainers();
    for (const id of [pod.id, runner, quitter]) assert.ok(!inBackend.includes(id), `${id} is gone from the ${backend} backend`);
  });

  async function exists(p: string): Promise<boolean> {
    return fsp.stat(p).then(() => true, () => false);
  }

  function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.listen(0, '127.0.0.1', () => {
        const port = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(port));
      });
      srv.on('error', reject);
    });
  }

  test('pod files and settings: hostname, DNS config, sysctls; UpdateContainerResources; ReopenContainerLog', async () => {
    const pod = await newPod('settings', {
      hostname: 'custom-host',
      dns_config: { servers: ['10.96.0.10'], searches: ['ns.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] },
      linux: {
        sysctls: { 'net.ipv4.ip_unprivileged_port_start': '80' },
        security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
      },
    });
    const c = await runContainer(d.client, pod.id, pod.config, containerConfig('c', BUSYBOX, ['sh', '-c', 'while :; do echo tick; sleep 0.2; done'], {
      linux: { resources: { memory_limit_in_bytes: 64 * 1024 * 1024 } },
    }));
    assert.equal((await exec(c, ['hostname'])).stdout.trim(), 'custom-host');
    const resolv = (await exec(c, ['cat', '/etc/resolv.conf'])).stdout;
    assert.match(resolv, /nameserver 10\.96\.0\.10/);
    assert.match(resolv, /search ns\.svc\.cluster\.local svc\.cluster\.local/);
    assert.match(resolv, /options ndots:5/);
    assert.equal((await exec(c, ['cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start'])).stdout.trim(), '80');
    const limit = () => exec(c, ['cat', '/sys/fs/cgroup/memory/memory.limit_in_bytes']).then((r) => Number(r.stdout.trim()));
    assert.equal(await limit(), 64 * 1024 * 1024);
    await d.client.runtime('UpdateContainerResources', { container_id: c, linux: { memory_limit_in_bytes: 96 * 1024 * 1024 } });
    assert.equal(await limit(), 96 * 1024 * 1024);
    const st = await d.client.runtime('ContainerStatus', { container_id: c });
    assert.equal(Number(st.status.resources.linux.memory_limit_in_bytes), 96 * 1024 * 1024);
    // Rotate the log away; after ReopenContainerLog new lines go to a new file at the same path.
    const logPath = st.status.log_path;
    await waitFor('first ticks', async () => (await fsp.readFile(logPath, 'utf8')).includes('tick'));
    await fsp.rename(logPath, `${logPath}.1`);
    await d.client.runtime('ReopenContainerLog', { container_id: c });
    const fresh = await waitFor('ticks in the new file', async () => {
      const text = await fsp.readFile(logPath, 'utf8').catch(() => '');
      return text.includes('stdout F tick') ? text : undefined;
    });
    assert.ok(fresh.length > 0);
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('the image config counts: Entrypoint + Cmd, Env, WorkingDir, and STOPSIGNAL used by StopContainer', async () => {
    const ENTRY = `${reg.plain}/nodelet-test/entrypoint:latest`;
    await d.client.image('PullImage', { image: { image: ENTRY } });
    const pod = await newPod('imagecfg');
    const plain = await runContainer(d.client, pod.id, pod.config, containerConfig('plain', ENTRY, []));
    const st = await waitExited(d.client, plain);
    assert.equal(st.exit_code, 0);
    assert.match(await fsp.readFile(st.log_path, 'utf8'), / stdout F from-entrypoint default-arg\n$/);
    const withArgs = await runContainer(d.client, pod.id, pod.config, containerConfig('args', ENTRY, [], { args: ['given'] }));
    assert.match(await fsp.readFile((await waitExited(d.client, withArgs)).log_path, 'utf8'), / stdout F from-entrypoint given\n$/);
    const sig = await runContainer(d.client, pod.id, pod.config, containerConfig('sig', ENTRY, ['sh', '-c', 'trap "exit 42" USR1; while :; do sleep 0.1; done'], {
      envs: [{ key: 'EXTRA', value: '1' }],
    }));
    const env = (await exec(sig, ['env'])).stdout;
    assert.match(env, /^FOO=bar$/m);
    assert.match(env, /^EXTRA=1$/m);
    assert.equal((await exec(sig, ['pwd'])).stdout.trim(), '/work');
    await waitFor('the shell to trap SIGUSR1', async () => dispositionFromStatus((await exec(sig, ['cat', '/proc/1/status'])).stdout, 10) === 'caught', 10_000);
    const t = Date.now();
    await d.client.runtime('StopContainer', { container_id: sig, timeout: 10 });
    assert.ok(Date.now() - t < 5000, 'stopped by the image STOPSIGNAL, not by the SIGKILL after the timeout');
    assert.equal((await d.client.runtime('ContainerStatus', { container_id: sig })).status.exit_code, 42);
    // The image is held while a container of it exists, and free once RemoveContainer has answered for the
    // last one (its teardown, which runs after the answer, is waited for: as the kubelet's image GC does it).
    await expectCode(d.client.image('RemoveImage', { image: { image: ENTRY } }), grpc.status.FAILED_PRECONDITION, 'in use');
    for (const c of [plain, withArgs, sig]) await d.client.runtime('RemoveContainer', { container_id: c });
    await d.client.image('RemoveImage', { image: { image: ENTRY } });
    assert.ok(!(await d.client.image('ImageStatus', { image: { image: ENTRY } })).image, 'the image is gone');
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });

  test('runtime_handler selects the configured OCI runtime handler', async () => {
    const config = sandboxConfig('handler', path.join(logDir, 'handler'));
    const { pod_sandbox_id: id } = await d.client.runtime('RunPodSandbox', { config, runtime_handler: 'alt' });
    const st = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: id });
    assert.equal(st.status.runtime_handler, 'alt');
    const c = await runContainer(d.client, id, config, containerConfig('c', BUSYBOX, ['sleep', '3600']));
    // The container lives in that handler's own runtime root.
    const { execFileSync } = await import('node:child_process');
    const listed = execFileSync('runc', ['--root', path.join(d.runRoot, 'runtime', 'alt'), 'list', '-q'], { encoding: 'utf8' });
    assert.ok(listed.includes(c) && listed.includes(id));
    const status = await d.client.runtime('Status', {});
    assert.deepEqual(status.runtime_handlers.map((h: any) => h.name).sort(), ['', ...d.handlerNames].sort());
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: id });
  });

  test('SELinux and AppArmor requests on a host without them run the pod and say so in the log', async () => {
    const pod = await newPod('nolsm', {
      linux: { security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' }, selinux_options: { user: 'system_u', role: 'system_r', type: 'container_t', level: 's0:c1,c2' } } },
    });
    const c = await runContainer(d.client, pod.id, pod.config, containerConfig('c', BUSYBOX, ['sleep', '3600'], {
      linux: { security_context: { apparmor: { profile_type: 'RuntimeDefault' } } },
    }));
    assert.equal((await d.client.runtime('ContainerStatus', { container_id: c })).status.state, 'CONTAINER_RUNNING');
    const log = await fsp.readFile(d.logFile, 'utf8');
    assert.match(log, /sandbox: SELinux options requested but this host has no SELinux; not applied/);
    assert.match(log, /container: AppArmor profile requested but this host has no AppArmor; not applied/);
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id });
  });
});
}
