// A table of invalid requests across the CRI RPCs, each against a real nodelet-cri (runc, conmon, CNI):
// every one must get the expected gRPC code (a validation error naming the field), never INTERNAL or
// UNKNOWN, and once the whole table ran nothing may be left behind: records, network namespaces,
// mounts, cgroups, monitor processes, iptables rules, log files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { containerConfig, runContainer, sandboxConfig, waitFor } from '../helpers/pods.js';
import { run } from '../../src/common/exec.js';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;
const tag = randomBytes(3).toString('hex');
/** Fixtures: a ready pod with a running and a created container, and a stopped pod. */
let podId = '';
let podConfig: any;
let runningId = '';
let createdId = '';
let hogId = '';
let stoppedPodId = '';
let stoppedPodConfig: any;
let hostileFile: string;

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon({ network: true });
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-invalid-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
  podConfig = sandboxConfig(`inv-${tag}`, path.join(logDir, 'pod'));
  ({ pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config: podConfig }));
  runningId = await runContainer(d.client, podId, podConfig, containerConfig('running', BUSYBOX, ['sleep', '3600']));
  ({ container_id: createdId } = await d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: containerConfig('created', BUSYBOX, ['true']), sandbox_config: podConfig }));
  // Holds 24 MiB of tmpfs pages: its memory limit cannot go below that.
  hogId = await runContainer(d.client, podId, podConfig, containerConfig('hog', BUSYBOX, ['sh', '-c', 'head -c 25165824 /dev/zero > /dev/shm/hog; sleep 3600']));
  await waitFor('the hog to fill /dev/shm', async () => (await d.client.runtime('ExecSync', { container_id: hogId, cmd: ['sh', '-c', 'test $(wc -c < /dev/shm/hog) -eq 25165824'], timeout: 10 })).exit_code === 0);
  stoppedPodConfig = sandboxConfig(`inv-stopped-${tag}`, path.join(logDir, 'stopped'));
  ({ pod_sandbox_id: stoppedPodId } = await d.client.runtime('RunPodSandbox', { config: stoppedPodConfig }));
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: stoppedPodId });
  await fsp.mkdir(path.join(logDir, 'pod', 'existing-dir'));
  await fsp.symlink('/etc/hostname', path.join(logDir, 'pod', 'link.log'));
  // A secret-looking host file, to check that errors never quote files they were pointed at.
  hostileFile = path.join(logDir, 'secret.txt');
  await fsp.writeFile(hostileFile, 'root:$6$TOPSECRETHASH:19000:0:99999:7:::\n');
  const profiles: Record<string, unknown> = {
    'bad-default.json': { defaultAction: 'SCMP_ACT_BOGUS' },
    'bad-action.json': { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_EXPLODE' }] },
    'array.json': [{ defaultAction: 'SCMP_ACT_ALLOW' }],
    'bad-arch.json': { defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_BOGUS'] },
    'bad-operator.json': { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 1, op: 'SCMP_CMP_BOGUS' }] }] },
  };
  for (const [name, content] of Object.entries(profiles)) await fsp.writeFile(path.join(logDir, name), JSON.stringify(content));
  await fsp.writeFile(path.join(logDir, 'huge.json'), `{"defaultAction":"SCMP_ACT_ALLOW","x":"${'y'.repeat(2 * 1024 * 1024)}"}`);
  await run('mkfifo', [path.join(logDir, 'fifo.json')]);
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
  for (const root of cgroupRoots()) await fsp.rmdir(path.join(root, `nl-escape-${tag}`)).catch(() => undefined);
});

// ---- request builders: a valid request, changed in one place ----

let seq = 0;
function podReq(change: (c: any, req: any) => void = () => undefined): any {
  const c = sandboxConfig(`bad-${tag}-${++seq}`, path.join(logDir, `bad-${seq}`));
  const req = { config: c, runtime_handler: '' };
  change(c, req);
  return req;
}

function ctrReq(change: (c: any, req: any) => void = () => undefined): any {
  const c = containerConfig(`c${++seq}`, BUSYBOX, ['sleep', '60']);
  const req = { pod_sandbox_id: podId, config: c, sandbox_config: podConfig };
  change(c, req);
  return req;
}

const linux = (c: any) => (c.linux ??= {});
const sc = (c: any) => (linux(c).security_context ??= {});
const res = (c: any) => (linux(c).resources ??= {});
const big = (n: number) => 'x'.repeat(n);

type Code = keyof typeof grpc.status;
interface Case {
  title: string;
  rpc: string;
  image?: boolean;
  req: () => any;
  code: Code;
  /** Text the error message must contain (the field a validation error names). */
  says?: string | (() => string);
  /** Text the error message must not contain. */
  never?: string;
  /** For an OK answer: what is wrong with the response, if anything. */
  check?: (res: any) => string | undefined;
  /** A CreateContainer that succeeds and whose StartContainer gets the answer (the runtime is given the container there). */
  start?: boolean;
}
const cases: Case[] = [];
const add = (rpc: string, title: string, req: () => any, code: Code, says?: string | (() => string), never?: string) => cases.push({ rpc, title, req, code, says, never });
const addImage = (rpc: string, title: string, req: () => any, code: Code, says?: string) => cases.push({ rpc, title, req, code, says, image: true });

// ---- RunPodSandbox ----
const RP = 'RunPodSandbox';
add(RP, 'no config', () => ({}), 'INVALID_ARGUMENT', 'config');
add(RP, 'no metadata', () => podReq((c) => delete c.metadata), 'INVALID_ARGUMENT', 'config.metadata');
for (const f of ['name', 'namespace', 'uid']) {
  add(RP, `empty ${f}`, () => podReq((c) => (c.metadata[f] = '')), 'INVALID_ARGUMENT', `config.metadata.${f}`);
  add(RP, `NUL in ${f}`, () => podReq((c) => (c.metadata[f] = `a\0b${seq}`)), 'INVALID_ARGUMENT', `config.metadata.${f}`);
  add(RP, `newline in ${f}`, () => podReq((c) => (c.metadata[f] = `a\nb${seq}`)), 'INVALID_ARGUMENT', `config.metadata.${f}`);
  add(RP, `escape char in ${f}`, () => podReq((c) => (c.metadata[f] = `a\u001b[2Jb${seq}`)), 'INVALID_ARGUMENT', `config.metadata.${f}`);
  add(RP, `DEL char in ${f}`, () => podReq((c) => (c.metadata[f] = `a\u007fb${seq}`)), 'INVALID_ARGUMENT', `config.metadata.${f}`);
  add(RP, `300-byte ${f}`, () => podReq((c) => (c.metadata[f] = big(300))), 'INVALID_ARGUMENT', `config.metadata.${f}`);
}
add(RP, '10 kB hostname', () => podReq((c) => (c.hostname = big(10_000))), 'INVALID_ARGUMENT', 'config.hostname');
add(RP, '65-byte hostname', () => podReq((c) => (c.hostname = big(65))), 'INVALID_ARGUMENT', 'config.hostname');
add(RP, 'NUL in hostname', () => podReq((c) => (c.hostname = 'a\0b')), 'INVALID_ARGUMENT', 'config.hostname');
add(RP, 'space in hostname', () => podReq((c) => (c.hostname = 'a b')), 'INVALID_ARGUMENT', 'config.hostname');
add(RP, 'slash in hostname', () => podReq((c) => (c.hostname = 'a/b')), 'INVALID_ARGUMENT', 'config.hostname');
add(RP, 'hostname starting with a dash', () => podReq((c) => (c.hostname = '-a')), 'INVALID_ARGUMENT', 'config.hostname');
add(RP, 'relative log_directory', () => podReq((c) => (c.log_directory = `rel-${tag}/logs`)), 'INVALID_ARGUMENT', 'config.log_directory');
add(RP, 'log_directory with ..', () => podReq((c) => (c.log_directory = `${logDir}/../escape-${tag}`)), 'INVALID_ARGUMENT', 'config.log_directory');
add(RP, 'log_directory that is a file', () => podReq((c) => (c.log_directory = hostileFile)), 'INVALID_ARGUMENT', 'config.log_directory');
add(RP, 'log_directory under a file', () => podReq((c) => (c.log_directory = path.join(hostileFile, 'logs'))), 'INVALID_ARGUMENT', 'config.log_directory');
add(RP, 'NUL in log_directory', () => podReq((c) => (c.log_directory = `${logDir}/a\0b`)), 'INVALID_ARGUMENT', 'config.log_directory');
add(RP, '5 MB annotation', () => podReq((c) => (c.annotations = { big: big(5 * 1024 * 1024) })), 'INVALID_ARGUMENT', 'config.annotations');
add(RP, '300 kB labels', () => podReq((c) => (c.labels = { big: big(300 * 1024) })), 'INVALID_ARGUMENT', 'config.labels');
add(RP, 'labels and annotations over 256 kB together', () => podReq((c) => ((c.labels = { a: big(130 * 1024) }), (c.annotations = { b: big(130 * 1024) }))), 'INVALID_ARGUMENT', 'config.annotations');
add(RP, 'empty label key', () => podReq((c) => (c.labels = { '': 'x' })), 'INVALID_ARGUMENT', 'config.labels');
add(RP, 'empty annotation key', () => podReq((c) => (c.annotations = { '': 'x' })), 'INVALID_ARGUMENT', 'config.annotations');
add(RP, 'NUL in a label key', () => podReq((c) => (c.labels = { 'a\0b': 'x' })), 'INVALID_ARGUMENT', 'config.labels');
add(RP, 'DNS server not an IP', () => podReq((c) => (c.dns_config = { servers: ['not-an-ip'], searches: [], options: [] })), 'INVALID_ARGUMENT', 'config.dns_config.servers[0]');
add(RP, 'DNS server with a line break', () => podReq((c) => (c.dns_config = { servers: ['1.1.1.1\nnameserver 6.6.6.6'], searches: [], options: [] })), 'INVALID_ARGUMENT', 'config.dns_config.servers[0]');
add(RP, 'DNS search with a line break', () => podReq((c) => (c.dns_config = { servers: [], searches: ['a.com\nnameserver 6.6.6.6'], options: [] })), 'INVALID_ARGUMENT', 'config.dns_config.searches[0]');
add(RP, 'DNS search with a space', () => podReq((c) => (c.dns_config = { servers: [], searches: ['a.com b.com'], options: [] })), 'INVALID_ARGUMENT', 'config.dns_config.searches[0]');
add(RP, 'DNS option with a line break', () => podReq((c) => (c.dns_config = { servers: [], searches: [], options: ['ndots:5\nnameserver 6.6.6.6'] })), 'INVALID_ARGUMENT', 'config.dns_config.options[0]');
add(RP, 'DNS option with NUL', () => podReq((c) => (c.dns_config = { servers: [], searches: [], options: ['nd\0ots'] })), 'INVALID_ARGUMENT', 'config.dns_config.options[0]');
const port = (p: object) => (c: any) => (c.port_mappings = [{ protocol: 'TCP', container_port: 80, host_port: 0, host_ip: '', ...p }]);
add(RP, 'host_port 70000', () => podReq(port({ host_port: 70000 })), 'INVALID_ARGUMENT', 'config.port_mappings[0].host_port');
add(RP, 'host_port -5', () => podReq(port({ host_port: -5 })), 'INVALID_ARGUMENT', 'config.port_mappings[0].host_port');
add(RP, 'container_port 0', () => podReq(port({ container_port: 0 })), 'INVALID_ARGUMENT', 'config.port_mappings[0].container_port');
add(RP, 'container_port 70000', () => podReq(port({ container_port: 70000 })), 'INVALID_ARGUMENT', 'config.port_mappings[0].container_port');
add(RP, 'container_port -1', () => podReq(port({ container_port: -1 })), 'INVALID_ARGUMENT', 'config.port_mappings[0].container_port');
add(RP, 'host_ip not-an-ip', () => podReq(port({ host_port: 18080, host_ip: 'not-an-ip' })), 'INVALID_ARGUMENT', 'config.port_mappings[0].host_ip');
add(RP, 'host_ip 1.2.3.4.5', () => podReq(port({ host_port: 18080, host_ip: '1.2.3.4.5' })), 'INVALID_ARGUMENT', 'config.port_mappings[0].host_ip');
add(RP, 'host_ip with a CIDR', () => podReq(port({ host_port: 18080, host_ip: '10.0.0.0/8' })), 'INVALID_ARGUMENT', 'config.port_mappings[0].host_ip');
add(RP, 'unknown protocol number', () => podReq(port({ protocol: 7 })), 'INVALID_ARGUMENT', 'config.port_mappings[0].protocol');
add(RP, 'second mapping bad', () => podReq((c) => (c.port_mappings = [{ protocol: 'TCP', container_port: 80, host_port: 0 }, { protocol: 'UDP', container_port: 53, host_port: 99999 }])), 'INVALID_ARGUMENT', 'config.port_mappings[1].host_port');
const cgParent = (p: string) => (c: any) => (linux(c).cgroup_parent = p);
add(RP, 'cgroup_parent climbing out', () => podReq(cgParent(`../../../../nl-escape-${tag}`)), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
add(RP, 'cgroup_parent with .. inside', () => podReq(cgParent(`/kubepods/../../nl-escape-${tag}`)), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
add(RP, 'relative cgroup_parent', () => podReq(cgParent(`nl-escape-${tag}/pod`)), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
add(RP, 'cgroup_parent with .', () => podReq(cgParent('/kubepods/./pod')), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
add(RP, 'cgroup_parent with a colon', () => podReq(cgParent('/kube:pods:x')), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
add(RP, 'cgroup_parent with NUL', () => podReq(cgParent('/kube\0pods')), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
add(RP, 'slice cgroup_parent climbing out', () => podReq(cgParent('../../x.slice')), 'INVALID_ARGUMENT', 'config.linux.cgroup_parent');
const sysctl = (k: string, v = '1') => (c: any) => (linux(c).sysctls = { [k]: v });
add(RP, 'sysctl vm.swappiness (not namespaced)', () => podReq(sysctl('vm.swappiness', '10')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl kernel.panic (not namespaced)', () => podReq(sysctl('kernel.panic')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl kernel.hostname', () => podReq(sysctl('kernel.hostname', 'x')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl with ../', () => podReq(sysctl('net/../../vm/swappiness')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl with ..', () => podReq(sysctl('net..ipv4.ip_forward')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl starting with a dot', () => podReq(sysctl('.net.ipv4.ip_forward')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'unknown net sysctl', () => podReq(sysctl('net.ipv4.no_such_knob')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'unknown fs.mqueue sysctl', () => podReq(sysctl('fs.mqueue.no_such_knob')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl name with a space', () => podReq(sysctl('net.ipv4.ip forward')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl value with NUL', () => podReq(sysctl('net.ipv4.ip_forward', '1\0')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl value with a line break', () => podReq(sysctl('net.ipv4.ip_forward', '1\n0')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'net sysctl on the host network', () => podReq((c) => ((c.linux.security_context.namespace_options.network = 'NODE'), (c.linux.sysctls = { 'net.core.somaxconn': '1024' }))), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'IPC sysctl in the host IPC namespace', () => podReq((c) => ((c.linux.security_context.namespace_options.ipc = 'NODE'), (c.linux.sysctls = { 'kernel.shmmax': '1024' }))), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl value the kernel refuses', () => podReq(sysctl('net.ipv4.ip_forward', 'abc')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'sysctl value out of range', () => podReq(sysctl('net.ipv4.ip_unprivileged_port_start', '99999999')), 'INVALID_ARGUMENT', 'config.linux.sysctls');
add(RP, 'run_as_user 99999999999', () => podReq((c) => (sc(c).run_as_user = { value: 99999999999 })), 'INVALID_ARGUMENT', 'config.linux.security_context.run_as_user');
add(RP, 'run_as_user -1', () => podReq((c) => (sc(c).run_as_user = { value: -1 })), 'INVALID_ARGUMENT', 'config.linux.security_context.run_as_user');
add(RP, 'run_as_group 99999999999', () => podReq((c) => ((sc(c).run_as_user = { value: 1000 }), (sc(c).run_as_group = { value: 99999999999 }))), 'INVALID_ARGUMENT', 'config.linux.security_context.run_as_group');
add(RP, 'supplemental group 99999999999', () => podReq((c) => (sc(c).supplemental_groups = [99999999999])), 'INVALID_ARGUMENT', 'config.linux.security_context.supplemental_groups[0]');
add(RP, 'pod cpu_quota -5', () => podReq((c) => (res(c).cpu_quota = -5)), 'INVALID_ARGUMENT', 'config.linux.resources.cpu_quota');
add(RP, 'pod memory 1 B', () => podReq((c) => (res(c).memory_limit_in_bytes = 1)), 'INVALID_ARGUMENT', 'config.linux.resources.memory_limit_in_bytes');
add(RP, 'pod overhead cpuset 999', () => podReq((c) => (linux(c).overhead = { cpuset_cpus: '999' })), 'INVALID_ARGUMENT', 'config.linux.overhead.cpuset_cpus');
add(RP, 'unknown runtime handler', () => podReq((c, r) => (r.runtime_handler = 'no-such-handler')), 'INVALID_ARGUMENT', 'runtime_handler');
add(RP, 'seccomp localhost_ref to a non-JSON host file', () => podReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: hostileFile })), 'INVALID_ARGUMENT', 'seccomp', 'TOPSECRET');
add(RP, 'relative seccomp localhost_ref', () => podReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: 'profile.json' })), 'INVALID_ARGUMENT', 'seccomp');
add(RP, 'missing seccomp localhost_ref file', () => podReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: `/nonexistent-${tag}.json` })), 'INVALID_ARGUMENT', 'seccomp');
add(RP, 'seccomp Localhost without a ref', () => podReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: '' })), 'INVALID_ARGUMENT', 'localhost_ref');
add(RP, 'bad legacy seccomp_profile_path', () => podReq((c) => (sc(c).seccomp_profile_path = 'bogus/profile')), 'INVALID_ARGUMENT', 'seccomp_profile_path');
const nsOpt = (o: object) => (c: any) => Object.assign(c.linux.security_context.namespace_options, o);
add(RP, 'network namespace CONTAINER', () => podReq(nsOpt({ network: 'CONTAINER' })), 'INVALID_ARGUMENT', 'namespace_options.network');
add(RP, 'network namespace TARGET', () => podReq(nsOpt({ network: 'TARGET' })), 'INVALID_ARGUMENT', 'namespace_options.network');
add(RP, 'ipc namespace TARGET', () => podReq(nsOpt({ ipc: 'TARGET' })), 'INVALID_ARGUMENT', 'namespace_options.ipc');
add(RP, 'pid namespace TARGET for a pod', () => podReq(nsOpt({ pid: 'TARGET', target_id: runningId })), 'INVALID_ARGUMENT', 'namespace_options.pid');
add(RP, 'unknown namespace mode number', () => podReq(nsOpt({ network: 9 })), 'INVALID_ARGUMENT', 'namespace_options.network');
add(RP, 'user namespace asked for', () => podReq(nsOpt({ userns_options: { mode: 'POD', uids: [{ host_id: 100000, container_id: 0, length: 65536 }], gids: [{ host_id: 100000, container_id: 0, length: 65536 }] } })), 'INVALID_ARGUMENT', 'userns_options');
add(RP, 'same name as a running pod', () => ({ config: podConfig }), 'ALREADY_EXISTS', () => podId);

// ---- CreateContainer ----
const CC = 'CreateContainer';
add(CC, 'no pod_sandbox_id', () => ctrReq((c, r) => (r.pod_sandbox_id = '')), 'INVALID_ARGUMENT', 'pod_sandbox_id');
add(CC, 'unknown pod', () => ctrReq((c, r) => (r.pod_sandbox_id = 'f'.repeat(64))), 'NOT_FOUND', 'f'.repeat(12));
add(CC, 'pod id with a path', () => ctrReq((c, r) => (r.pod_sandbox_id = '../../etc')), 'NOT_FOUND');
add(CC, 'stopped pod', () => ctrReq((c, r) => ((r.pod_sandbox_id = stoppedPodId), (r.sandbox_config = stoppedPodConfig))), 'FAILED_PRECONDITION', 'not ready');
add(CC, 'no config', () => ({ pod_sandbox_id: podId }), 'INVALID_ARGUMENT', 'config');
add(CC, 'no metadata', () => ctrReq((c) => delete c.metadata), 'INVALID_ARGUMENT', 'config.metadata');
add(CC, 'empty name', () => ctrReq((c) => (c.metadata.name = '')), 'INVALID_ARGUMENT', 'config.metadata.name');
add(CC, 'NUL in name', () => ctrReq((c) => (c.metadata.name = 'a\0b')), 'INVALID_ARGUMENT', 'config.metadata.name');
add(CC, 'newline in name', () => ctrReq((c) => (c.metadata.name = 'a\nb')), 'INVALID_ARGUMENT', 'config.metadata.name');
add(CC, '300-byte name', () => ctrReq((c) => (c.metadata.name = big(300))), 'INVALID_ARGUMENT', 'config.metadata.name');
add(CC, 'no image', () => ctrReq((c) => delete c.image), 'INVALID_ARGUMENT', 'config.image');
add(CC, 'empty image', () => ctrReq((c) => (c.image.image = '')), 'INVALID_ARGUMENT', 'config.image.image');
add(CC, 'NUL in image', () => ctrReq((c) => (c.image.image = 'busy\0box')), 'INVALID_ARGUMENT', 'config.image.image');
add(CC, 'image not pulled', () => ctrReq((c) => (c.image.image = `${reg.plain}/nodelet-test/not-pulled-${tag}:1`)), 'NOT_FOUND', 'not-pulled');
add(CC, 'same name as an existing container', () => ({ pod_sandbox_id: podId, config: containerConfig('running', BUSYBOX, ['true']), sandbox_config: podConfig }), 'ALREADY_EXISTS', () => runningId);
add(CC, 'NUL in command', () => ctrReq((c) => (c.command = ['sh', '-c', 'echo a\0b'])), 'INVALID_ARGUMENT', 'config.command[2]');
add(CC, 'NUL in args', () => ctrReq((c) => (c.args = ['a\0'])), 'INVALID_ARGUMENT', 'config.args[0]');
add(CC, 'empty env key', () => ctrReq((c) => (c.envs = [{ key: '', value: 'x' }])), 'INVALID_ARGUMENT', 'config.envs[0].key');
add(CC, 'env key with =', () => ctrReq((c) => (c.envs = [{ key: 'A=B', value: 'x' }])), 'INVALID_ARGUMENT', 'config.envs[0].key');
add(CC, 'NUL in env key', () => ctrReq((c) => (c.envs = [{ key: 'A\0', value: 'x' }])), 'INVALID_ARGUMENT', 'config.envs[0].key');
add(CC, 'NUL in env value', () => ctrReq((c) => (c.envs = [{ key: 'OK', value: 'x' }, { key: 'A', value: 'x\0y' }])), 'INVALID_ARGUMENT', 'config.envs[1].value');
add(CC, 'relative working_dir', () => ctrReq((c) => (c.working_dir = 'tmp')), 'INVALID_ARGUMENT', 'config.working_dir');
add(CC, 'NUL in working_dir', () => ctrReq((c) => (c.working_dir = '/tm\0p')), 'INVALID_ARGUMENT', 'config.working_dir');
const mount = (m: object) => (c: any) => (c.mounts = [{ container_path: '/data', host_path: logDir, readonly: false, ...m }]);
add(CC, 'relative mount host_path', () => ctrReq(mount({ host_path: 'etc' })), 'INVALID_ARGUMENT', 'config.mounts[0].host_path');
add(CC, 'empty mount host_path', () => ctrReq(mount({ host_path: '' })), 'INVALID_ARGUMENT', 'config.mounts[0].host_path');
add(CC, 'mount host_path with ..', () => ctrReq(mount({ host_path: `${logDir}/../..` })), 'INVALID_ARGUMENT', 'config.mounts[0].host_path');
add(CC, 'missing mount host_path', () => ctrReq(mount({ host_path: `/nonexistent-${tag}` })), 'INVALID_ARGUMENT', 'host_path');
add(CC, 'NUL in mount host_path', () => ctrReq(mount({ host_path: '/tm\0p' })), 'INVALID_ARGUMENT', 'config.mounts[0].host_path');
add(CC, 'relative mount container_path', () => ctrReq(mount({ container_path: 'data' })), 'INVALID_ARGUMENT', 'config.mounts[0].container_path');
add(CC, 'empty mount container_path', () => ctrReq(mount({ container_path: '' })), 'INVALID_ARGUMENT', 'config.mounts[0].container_path');
add(CC, 'mount container_path with ..', () => ctrReq(mount({ container_path: '/data/../../x' })), 'INVALID_ARGUMENT', 'config.mounts[0].container_path');
add(CC, 'unknown mount propagation', () => ctrReq(mount({ propagation: 9 })), 'INVALID_ARGUMENT', 'propagation');
add(CC, 'image volume of an image not pulled', () => ctrReq((c) => (c.mounts = [{ container_path: '/v', readonly: true, image: { image: `${reg.plain}/nodelet-test/not-pulled-${tag}:2` } }])), 'NOT_FOUND', 'mounts[0]');
const device = (dv: object) => (c: any) => (c.devices = [{ container_path: '/dev/x', host_path: '/dev/null', permissions: 'rwm', ...dv }]);
add(CC, 'relative device host_path', () => ctrReq(device({ host_path: 'dev/null' })), 'INVALID_ARGUMENT', 'config.devices[0].host_path');
add(CC, 'missing device', () => ctrReq(device({ host_path: `/dev/nonexistent-${tag}` })), 'INVALID_ARGUMENT', 'devices');
add(CC, 'device that is a regular file', () => ctrReq(device({ host_path: '/etc/hostname' })), 'INVALID_ARGUMENT', 'devices');
add(CC, 'relative device container_path', () => ctrReq(device({ container_path: 'dev/x' })), 'INVALID_ARGUMENT', 'config.devices[0].container_path');
add(CC, 'bad device permissions', () => ctrReq(device({ permissions: 'rwx' })), 'INVALID_ARGUMENT', 'permissions');
const logPath = (p: string) => (c: any) => (c.log_path = p);
add(CC, 'log_path escaping with ..', () => ctrReq(logPath(`../../../escape-${tag}.log`)), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path with .. inside', () => ctrReq(logPath(`a/../../escape-${tag}.log`)), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path to a host file', () => ctrReq(logPath('../../../../../../etc/hostname')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'absolute log_path', () => ctrReq(logPath(`/tmp/abs-${tag}.log`)), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path naming a directory', () => ctrReq(logPath('dir/')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path .', () => ctrReq(logPath('.')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path under a file', () => ctrReq(logPath('running.log/x.log')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path that is a directory', () => ctrReq(logPath('.')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path naming an existing directory', () => ctrReq(logPath('existing-dir')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'log_path that is a symbolic link', () => ctrReq(logPath('link.log')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'NUL in log_path', () => ctrReq(logPath('a\0.log')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, 'newline in log_path', () => ctrReq(logPath('a\n.log')), 'INVALID_ARGUMENT', 'config.log_path');
add(CC, '5 MB annotation', () => ctrReq((c) => (c.annotations = { big: big(5 * 1024 * 1024) })), 'INVALID_ARGUMENT', 'config.annotations');
add(CC, '300 kB labels', () => ctrReq((c) => (c.labels = { big: big(300 * 1024) })), 'INVALID_ARGUMENT', 'config.labels');
add(CC, 'empty label key', () => ctrReq((c) => (c.labels = { '': 'x' })), 'INVALID_ARGUMENT', 'config.labels');
add(CC, 'stop_signal 999', () => ctrReq((c) => (c.stop_signal = 999)), 'INVALID_ARGUMENT', 'config.stop_signal');
add(CC, 'stop_signal -1', () => ctrReq((c) => (c.stop_signal = -1)), 'INVALID_ARGUMENT', 'config.stop_signal');
const r = (v: object) => (c: any) => Object.assign(res(c), v);
const RES = 'config.linux.resources';
add(CC, 'cpu_quota 9e18', () => ctrReq(r({ cpu_quota: 9e18 })), 'INVALID_ARGUMENT', `${RES}.cpu_quota`);
add(CC, 'cpu_quota -5', () => ctrReq(r({ cpu_quota: -5 })), 'INVALID_ARGUMENT', `${RES}.cpu_quota`);
add(CC, 'cpu_quota 999 (below 1 ms)', () => ctrReq(r({ cpu_quota: 999 })), 'INVALID_ARGUMENT', `${RES}.cpu_quota`);
add(CC, 'cpu_quota 2^44', () => ctrReq(r({ cpu_quota: 2 ** 44 })), 'INVALID_ARGUMENT', `${RES}.cpu_quota`);
add(CC, 'cpu_period 9e18', () => ctrReq(r({ cpu_period: 9e18 })), 'INVALID_ARGUMENT', `${RES}.cpu_period`);
add(CC, 'cpu_period 999', () => ctrReq(r({ cpu_period: 999 })), 'INVALID_ARGUMENT', `${RES}.cpu_period`);
add(CC, 'cpu_period 1000001', () => ctrReq(r({ cpu_period: 1_000_001 })), 'INVALID_ARGUMENT', `${RES}.cpu_period`);
add(CC, 'cpu_period -1', () => ctrReq(r({ cpu_period: -1 })), 'INVALID_ARGUMENT', `${RES}.cpu_period`);
add(CC, 'cpu_shares 9e18', () => ctrReq(r({ cpu_shares: 9e18 })), 'INVALID_ARGUMENT', `${RES}.cpu_shares`);
add(CC, 'cpu_shares 262145', () => ctrReq(r({ cpu_shares: 262_145 })), 'INVALID_ARGUMENT', `${RES}.cpu_shares`);
add(CC, 'cpu_shares -2', () => ctrReq(r({ cpu_shares: -2 })), 'INVALID_ARGUMENT', `${RES}.cpu_shares`);
add(CC, 'memory 1 B', () => ctrReq(r({ memory_limit_in_bytes: 1 })), 'INVALID_ARGUMENT', `${RES}.memory_limit_in_bytes`);
add(CC, 'memory 4 KiB', () => ctrReq(r({ memory_limit_in_bytes: 4096 })), 'INVALID_ARGUMENT', `${RES}.memory_limit_in_bytes`);
add(CC, 'memory -5', () => ctrReq(r({ memory_limit_in_bytes: -5 })), 'INVALID_ARGUMENT', `${RES}.memory_limit_in_bytes`);
add(CC, 'memory 9e18', () => ctrReq(r({ memory_limit_in_bytes: 9e18 })), 'INVALID_ARGUMENT', `${RES}.memory_limit_in_bytes`);
add(CC, 'swap below memory', () => ctrReq(r({ memory_limit_in_bytes: 64 << 20, memory_swap_limit_in_bytes: 32 << 20 })), 'INVALID_ARGUMENT', `${RES}.memory_swap_limit_in_bytes`);
add(CC, 'swap -5', () => ctrReq(r({ memory_swap_limit_in_bytes: -5 })), 'INVALID_ARGUMENT', `${RES}.memory_swap_limit_in_bytes`);
add(CC, 'oom_score_adj 5000', () => ctrReq(r({ oom_score_adj: 5000 })), 'INVALID_ARGUMENT', `${RES}.oom_score_adj`);
add(CC, 'oom_score_adj -5000', () => ctrReq(r({ oom_score_adj: -5000 })), 'INVALID_ARGUMENT', `${RES}.oom_score_adj`);
for (const cpus of ['999', '0-999', 'abc', '1-0', '0,,1', '-1', '0-', '0 1', '0-1-2', '1,0x2']) {
  add(CC, `cpuset_cpus ${JSON.stringify(cpus)}`, () => ctrReq(r({ cpuset_cpus: cpus })), 'INVALID_ARGUMENT', `${RES}.cpuset_cpus`);
}
for (const mems of ['99', 'x', '0-', '1-0']) {
  add(CC, `cpuset_mems ${JSON.stringify(mems)}`, () => ctrReq(r({ cpuset_mems: mems })), 'INVALID_ARGUMENT', `${RES}.cpuset_mems`);
}
add(CC, 'hugepage size the host does not have', () => ctrReq(r({ hugepage_limits: [{ page_size: '4MB', limit: 0 }] })), 'INVALID_ARGUMENT', `${RES}.hugepage_limits[0].page_size`);
for (const size of ['bogus', '2M', '', '2 MB', '-2MB']) {
  add(CC, `hugepage size ${JSON.stringify(size)}`, () => ctrReq(r({ hugepage_limits: [{ page_size: size, limit: 0 }] })), 'INVALID_ARGUMENT', `${RES}.hugepage_limits[0].page_size`);
}
add(CC, 'unified key with ..', () => ctrReq(r({ unified: { '../../memory.max': '1' } })), 'INVALID_ARGUMENT', `${RES}.unified`);
add(CC, 'unified key with a slash', () => ctrReq(r({ unified: { 'a/memory.max': '1' } })), 'INVALID_ARGUMENT', `${RES}.unified`);
const SC = 'config.linux.security_context';
add(CC, 'run_as_user 99999999999', () => ctrReq((c) => (sc(c).run_as_user = { value: 99999999999 })), 'INVALID_ARGUMENT', `${SC}.run_as_user`);
add(CC, 'run_as_user 4294967295', () => ctrReq((c) => (sc(c).run_as_user = { value: 4294967295 })), 'INVALID_ARGUMENT', `${SC}.run_as_user`);
add(CC, 'run_as_group 99999999999', () => ctrReq((c) => ((sc(c).run_as_user = { value: 1 }), (sc(c).run_as_group = { value: 99999999999 }))), 'INVALID_ARGUMENT', `${SC}.run_as_group`);
add(CC, 'run_as_group without a user', () => ctrReq((c) => (sc(c).run_as_group = { value: 5 })), 'INVALID_ARGUMENT', 'run_as_group');
add(CC, 'supplemental group 99999999999', () => ctrReq((c) => (sc(c).supplemental_groups = [1, 99999999999])), 'INVALID_ARGUMENT', `${SC}.supplemental_groups[1]`);
add(CC, 'NUL in run_as_username', () => ctrReq((c) => (sc(c).run_as_username = 'ro\0ot')), 'INVALID_ARGUMENT', `${SC}.run_as_username`);
add(CC, 'relative masked_path', () => ctrReq((c) => (sc(c).masked_paths = ['proc/kcore'])), 'INVALID_ARGUMENT', `${SC}.masked_paths[0]`);
add(CC, 'empty masked_path', () => ctrReq((c) => (sc(c).masked_paths = ['/proc/kcore', ''])), 'INVALID_ARGUMENT', `${SC}.masked_paths[1]`);
add(CC, 'masked_path with ..', () => ctrReq((c) => (sc(c).masked_paths = ['/proc/../etc'])), 'INVALID_ARGUMENT', `${SC}.masked_paths[0]`);
add(CC, 'relative readonly_path', () => ctrReq((c) => (sc(c).readonly_paths = ['proc/sys'])), 'INVALID_ARGUMENT', `${SC}.readonly_paths[0]`);
add(CC, 'NUL in readonly_path', () => ctrReq((c) => (sc(c).readonly_paths = ['/proc/s\0ys'])), 'INVALID_ARGUMENT', `${SC}.readonly_paths[0]`);
add(CC, 'seccomp localhost_ref to a non-JSON host file', () => ctrReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: hostileFile })), 'INVALID_ARGUMENT', 'seccomp', 'TOPSECRET');
for (const name of ['bad-default.json', 'bad-action.json', 'array.json', 'bad-arch.json', 'bad-operator.json']) {
  add(CC, `seccomp profile ${name}`, () => ctrReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: path.join(logDir, name) })), 'INVALID_ARGUMENT', 'seccomp');
  add(RP, `seccomp profile ${name}`, () => podReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: path.join(logDir, name) })), 'INVALID_ARGUMENT', 'seccomp');
}
for (const ref of ['/dev/zero', 'fifo.json', 'huge.json', '/etc']) {
  const at = () => (ref.startsWith('/') ? ref : path.join(logDir, ref));
  add(CC, `seccomp profile ${ref} (not a regular file of sane size)`, () => ctrReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: at() })), 'INVALID_ARGUMENT', 'seccomp');
  add(RP, `seccomp profile ${ref} (not a regular file of sane size)`, () => podReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: at() })), 'INVALID_ARGUMENT', 'seccomp');
}
add(CC, 'relative seccomp localhost_ref', () => ctrReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: 'p.json' })), 'INVALID_ARGUMENT', 'seccomp');
add(CC, 'missing seccomp profile', () => ctrReq((c) => (sc(c).seccomp = { profile_type: 'Localhost', localhost_ref: `/nonexistent-${tag}.json` })), 'INVALID_ARGUMENT', 'seccomp');
add(CC, 'legacy seccomp path not localhost/', () => ctrReq((c) => (sc(c).seccomp_profile_path = 'file:///etc/x')), 'INVALID_ARGUMENT', 'seccomp_profile_path');
add(CC, 'unknown capability', () => ctrReq((c) => (sc(c).capabilities = { add_capabilities: ['CAP_NO_SUCH_THING'], drop_capabilities: [] })), 'INVALID_ARGUMENT', 'CAP_NO_SUCH_THING');
// Found only by runc, which gets the container at StartContainer (as containerd's CRI does): still the
// request's fault, said naming the field; the container is then EXITED with StartError (checked below).
const addStart = (title: string, req: () => any, says: string, never?: string) => cases.push({ rpc: 'StartContainer', title, req, code: 'INVALID_ARGUMENT', says, never, start: true });
addStart('command not in the image', () => ctrReq((c) => (c.command = [`/no-such-binary-${tag}`])), 'config.command[0]');
addStart('command not on PATH', () => ctrReq((c) => (c.command = [`no-such-binary-${tag}`])), 'config.command[0]');
addStart('command that is a directory', () => ctrReq((c) => (c.command = ['/etc'])), 'config.command[0]');
addStart('args without a usable entrypoint', () => ctrReq((c) => ((c.command = []), (c.args = [`/no-such-binary-${tag}`]))), 'config.args');
addStart('a file mounted over a directory', () => ctrReq(mount({ container_path: '/bin', host_path: hostileFile })), 'config.mounts[0]', 'TOPSECRET');
addStart('working_dir that is a file', () => ctrReq((c) => (c.working_dir = '/bin/sh')), 'config.working_dir');
add(CC, 'run_as_username not in the image', () => ctrReq((c) => (sc(c).run_as_username = `nosuchuser${tag}`)), 'INVALID_ARGUMENT', 'run_as_username');
add(CC, 'network namespace TARGET', () => ctrReq((c) => (sc(c).namespace_options = { network: 'TARGET', pid: 'CONTAINER', ipc: 'POD' })), 'INVALID_ARGUMENT', 'namespace_options.network');
add(CC, 'ipc namespace TARGET', () => ctrReq((c) => (sc(c).namespace_options = { network: 'POD', pid: 'CONTAINER', ipc: 'TARGET' })), 'INVALID_ARGUMENT', 'namespace_options.ipc');
add(CC, 'user namespace asked for', () => ctrReq((c) => (sc(c).namespace_options = { network: 'POD', pid: 'CONTAINER', ipc: 'POD', userns_options: { mode: 'POD', uids: [{ host_id: 100000, container_id: 0, length: 65536 }], gids: [{ host_id: 100000, container_id: 0, length: 65536 }] } })), 'INVALID_ARGUMENT', 'userns_options');
add(CC, 'pid TARGET naming a container of another pod', () => ctrReq((c, rq) => ((rq.pod_sandbox_id = podId), (sc(c).namespace_options = { network: 'POD', pid: 'TARGET', ipc: 'POD', target_id: NOID }))), 'NOT_FOUND', 'target_id');
add(CC, 'pid TARGET without a target', () => ctrReq((c) => (sc(c).namespace_options = { network: 'POD', pid: 'TARGET', ipc: 'POD', target_id: 'nope' })), 'NOT_FOUND', 'target_id');

// ---- container lifecycle on bad ids and states ----
const NOID = 'e'.repeat(64);
for (const [rpc, key] of [['StartContainer', 'container_id'], ['ContainerStatus', 'container_id'], ['ReopenContainerLog', 'container_id'], ['ContainerStats', 'container_id']] as const) {
  add(rpc, 'empty id', () => ({ [key]: '' }), 'INVALID_ARGUMENT', key);
  add(rpc, 'unknown id', () => ({ [key]: NOID }), 'NOT_FOUND');
  add(rpc, 'a pod id', () => ({ [key]: podId }), 'NOT_FOUND');
  add(rpc, 'path in id', () => ({ [key]: '../../../etc/passwd' }), 'NOT_FOUND');
}
add('StartContainer', 'already running', () => ({ container_id: runningId }), 'FAILED_PRECONDITION', 'CONTAINER_RUNNING');
add('ReopenContainerLog', 'not running', () => ({ container_id: createdId }), 'FAILED_PRECONDITION', 'not running');
for (const rpc of ['StopContainer', 'RemoveContainer']) {
  add(rpc, 'empty id', () => ({ container_id: '' }), 'INVALID_ARGUMENT', 'container_id');
  add(rpc, 'unknown id (CRI: success)', () => ({ container_id: NOID }), 'OK');
}
for (const rpc of ['StopPodSandbox', 'RemovePodSandbox']) {
  add(rpc, 'empty id', () => ({ pod_sandbox_id: '' }), 'INVALID_ARGUMENT', 'pod_sandbox_id');
  add(rpc, 'unknown id (CRI: success)', () => ({ pod_sandbox_id: NOID }), 'OK');
}
for (const rpc of ['PodSandboxStatus', 'PodSandboxStats', 'PortForward']) {
  add(rpc, 'empty id', () => ({ pod_sandbox_id: '' }), 'INVALID_ARGUMENT', 'pod_sandbox_id');
  add(rpc, 'unknown id', () => ({ pod_sandbox_id: NOID }), 'NOT_FOUND');
  add(rpc, 'a container id', () => ({ pod_sandbox_id: runningId }), 'NOT_FOUND');
}
const UCR = 'UpdateContainerResources';
const upd = (v: object) => () => ({ container_id: runningId, linux: { cpu_period: 0, cpu_quota: 0, cpu_shares: 0, memory_limit_in_bytes: 0, oom_score_adj: 0, cpuset_cpus: '', cpuset_mems: '', hugepage_limits: [], unified: {}, memory_swap_limit_in_bytes: 0, ...v } });
add(UCR, 'empty id', () => ({ container_id: '', linux: {} }), 'INVALID_ARGUMENT', 'container_id');
add(UCR, 'unknown id', () => ({ container_id: NOID, linux: {} }), 'NOT_FOUND');
add(UCR, 'memory 1 B', upd({ memory_limit_in_bytes: 1 }), 'INVALID_ARGUMENT', 'linux.memory_limit_in_bytes');
add(UCR, 'memory -1', upd({ memory_limit_in_bytes: -1 }), 'INVALID_ARGUMENT', 'linux.memory_limit_in_bytes');
add(UCR, 'cpu_quota -5', upd({ cpu_quota: -5 }), 'INVALID_ARGUMENT', 'linux.cpu_quota');
add(UCR, 'cpu_quota 9e18', upd({ cpu_quota: 9e18 }), 'INVALID_ARGUMENT', 'linux.cpu_quota');
add(UCR, 'cpu_period 9e18', upd({ cpu_period: 9e18 }), 'INVALID_ARGUMENT', 'linux.cpu_period');
add(UCR, 'cpu_shares 9e18', upd({ cpu_shares: 9e18 }), 'INVALID_ARGUMENT', 'linux.cpu_shares');
add(UCR, 'cpuset 999', upd({ cpuset_cpus: '999' }), 'INVALID_ARGUMENT', 'linux.cpuset_cpus');
add(UCR, 'cpuset malformed', upd({ cpuset_cpus: '0-' }), 'INVALID_ARGUMENT', 'linux.cpuset_cpus');
add(UCR, 'cpuset_mems 99', upd({ cpuset_mems: '99' }), 'INVALID_ARGUMENT', 'linux.cpuset_mems');
add(UCR, 'oom_score_adj 5000', upd({ oom_score_adj: 5000 }), 'INVALID_ARGUMENT', 'linux.oom_score_adj');
add(UCR, 'hugepage size bogus', upd({ hugepage_limits: [{ page_size: 'bogus', limit: 1 }] }), 'INVALID_ARGUMENT', 'linux.hugepage_limits[0].page_size');
add(UCR, 'memory below what the container uses', () => ({ container_id: hogId, linux: { memory_limit_in_bytes: 8 << 20 } }), 'FAILED_PRECONDITION', 'linux.memory_limit_in_bytes');
add(UCR, 'swap below memory', upd({ memory_limit_in_bytes: 64 << 20, memory_swap_limit_in_bytes: 1 << 20 }), 'INVALID_ARGUMENT', 'linux.memory_swap_limit_in_bytes');

// ---- exec, attach, port-forward ----
add('ExecSync', 'empty id', () => ({ container_id: '', cmd: ['true'] }), 'INVALID_ARGUMENT', 'container_id');
add('ExecSync', 'unknown id', () => ({ container_id: NOID, cmd: ['true'] }), 'NOT_FOUND');
add('ExecSync', 'no cmd', () => ({ container_id: runningId, cmd: [] }), 'INVALID_ARGUMENT', 'cmd');
add('ExecSync', 'empty command word', () => ({ container_id: runningId, cmd: [''] }), 'INVALID_ARGUMENT', 'cmd');
add('ExecSync', 'NUL in cmd', () => ({ container_id: runningId, cmd: ['echo', 'a\0b'] }), 'INVALID_ARGUMENT', 'cmd[1]');
add('ExecSync', 'container not running', () => ({ container_id: createdId, cmd: ['true'] }), 'FAILED_PRECONDITION', 'not running');
add('ExecSync', 'missing binary (OK, exit 127)', () => ({ container_id: runningId, cmd: [`/no-such-binary-${tag}`], timeout: 10 }), 'OK');
cases[cases.length - 1]!.check = (res) => (res.exit_code === 127 && /no such file|not found/.test(res.stderr.toString()) ? undefined : `exit ${res.exit_code}, stderr ${res.stderr}`);
add('ExecSync', 'timeout 9e18 (OK, as no timeout)', () => ({ container_id: runningId, cmd: ['echo', 'ran'], timeout: 9e18 }), 'OK');
cases[cases.length - 1]!.check = (res) => (res.exit_code === 0 && res.stdout.toString() === 'ran\n' ? undefined : `exit ${res.exit_code}, stdout ${res.stdout}`);
add('ExecSync', 'timeout -5 (OK, as no timeout)', () => ({ container_id: runningId, cmd: ['true'], timeout: -5 }), 'OK');
add('Exec', 'empty id', () => ({ container_id: '', cmd: ['sh'], stdout: true }), 'INVALID_ARGUMENT', 'container_id');
add('Exec', 'unknown id', () => ({ container_id: NOID, cmd: ['sh'], stdout: true }), 'NOT_FOUND');
add('Exec', 'no cmd', () => ({ container_id: runningId, cmd: [], stdout: true }), 'INVALID_ARGUMENT', 'cmd');
add('Exec', 'NUL in cmd', () => ({ container_id: runningId, cmd: ['sh', '-c', 'a\0'], stdout: true }), 'INVALID_ARGUMENT', 'cmd[2]');
add('Exec', 'no stream', () => ({ container_id: runningId, cmd: ['sh'] }), 'INVALID_ARGUMENT', 'stdout');
add('Exec', 'tty and stderr', () => ({ container_id: runningId, cmd: ['sh'], stdout: true, stderr: true, tty: true }), 'INVALID_ARGUMENT', 'tty');
add('Exec', 'container not running', () => ({ container_id: createdId, cmd: ['sh'], stdout: true }), 'FAILED_PRECONDITION', 'not running');
add('Attach', 'empty id', () => ({ container_id: '', stdout: true }), 'INVALID_ARGUMENT', 'container_id');
add('Attach', 'unknown id', () => ({ container_id: NOID, stdout: true }), 'NOT_FOUND');
add('Attach', 'no stream', () => ({ container_id: runningId }), 'INVALID_ARGUMENT', 'stdout');
add('Attach', 'tty and stderr', () => ({ container_id: runningId, stdout: true, stderr: true, tty: true }), 'INVALID_ARGUMENT', 'tty');
add('Attach', 'container not running', () => ({ container_id: createdId, stdout: true }), 'FAILED_PRECONDITION', 'not running');
add('PortForward', 'port 70000', () => ({ pod_sandbox_id: podId, port: [70000] }), 'INVALID_ARGUMENT', 'port');
add('PortForward', 'port 0', () => ({ pod_sandbox_id: podId, port: [0] }), 'INVALID_ARGUMENT', 'port');
add('PortForward', 'port -1', () => ({ pod_sandbox_id: podId, port: [80, -1] }), 'INVALID_ARGUMENT', 'port');
add('PortForward', 'stopped pod', () => ({ pod_sandbox_id: stoppedPodId, port: [80] }), 'FAILED_PRECONDITION', 'not ready');

// ---- runtime config ----
for (const cidr of ['not-a-cidr', '10.0.0.0/99', '10.0.0.0/x', '10.0.0.0', '10.0.0.0/8/9', '300.1.1.1/8', ',', '10.0.0.0/8,nope', 'fe80::/200', '10.0.0.0/8;x']) {
  add('UpdateRuntimeConfig', `pod_cidr ${JSON.stringify(cidr)}`, () => ({ runtime_config: { network_config: { pod_cidr: cidr } } }), 'INVALID_ARGUMENT', 'pod_cidr');
}

// ---- images ----
for (const ref of ['', '   ', 'UPPER/case:tag', 'busybox:', 'busybox@sha256:zz', 'bad ref with spaces', 'a\0b', `${'a'.repeat(300)}:tag`, 'busybox:tag:tag', '-leading/dash']) {
  addImage('PullImage', `reference ${JSON.stringify(ref.slice(0, 30))}`, () => ({ image: { image: ref } }), 'INVALID_ARGUMENT');
}
addImage('PullImage', 'no image spec', () => ({}), 'INVALID_ARGUMENT', 'image');
addImage('ImageStatus', 'empty reference', () => ({ image: { image: '' } }), 'INVALID_ARGUMENT', 'image');
addImage('ImageStatus', 'no image spec', () => ({}), 'INVALID_ARGUMENT', 'image');
addImage('RemoveImage', 'empty reference', () => ({ image: { image: '' } }), 'INVALID_ARGUMENT', 'image');
addImage('RemoveImage', 'no image spec', () => ({}), 'INVALID_ARGUMENT', 'image');
addImage('RemoveImage', 'image in use by containers', () => ({ image: { image: BUSYBOX } }), 'FAILED_PRECONDITION', 'in use');
addImage('RemoveImage', 'unknown image (CRI: success)', () => ({ image: { image: `${reg.plain}/nodelet-test/not-pulled-${tag}:3` } }), 'OK');
addImage('ImageStatus', 'unknown image (no image, OK)', () => ({ image: { image: `${reg.plain}/nodelet-test/not-pulled-${tag}:4` } }), 'OK');

// ---- RPCs nodelet does not offer ----
add('UpdatePodSandboxResources', 'not supported', () => ({ pod_sandbox_id: NOID }), 'UNIMPLEMENTED');
add('ListContainerStats', 'filter naming no container (empty, OK)', () => ({ filter: { id: NOID } }), 'OK');
add('ListPodSandboxStats', 'filter naming no pod (empty, OK)', () => ({ filter: { id: NOID } }), 'OK');
add('ListContainers', 'filter naming no pod (empty, OK)', () => ({ filter: { pod_sandbox_id: NOID } }), 'OK');
add('CheckpointContainer', 'not supported', () => ({ container_id: runningId, location: path.join(logDir, 'ckpt.tar') }), 'UNIMPLEMENTED');

/** Runs one case; returns the code name and message. */
async function call(c: Case): Promise<{ code: Code; message: string; res?: any }> {
  if (c.start) return callStart(c);
  try {
    const res = c.image ? await d.client.image(c.rpc, c.req(), { deadlineMs: 60_000 }) : await d.client.runtime(c.rpc, c.req(), { deadlineMs: 60_000 });
    return { code: 'OK', message: '', res };
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: grpc.status[e.code] as Code, message: e.details ?? e.message };
  }
}

/** CreateContainer (must succeed), then StartContainer, whose answer counts; the container must then be EXITED with StartError. */
async function callStart(c: Case): Promise<{ code: Code; message: string; res?: any }> {
  const req = c.req();
  const { container_id: id } = await d.client.runtime('CreateContainer', req, { deadlineMs: 60_000 });
  try {
    const started = await d.client.runtime('StartContainer', { container_id: id }, { deadlineMs: 60_000 }).then(
      () => ({ code: 'OK' as Code, message: '' }),
      (err: grpc.ServiceError) => ({ code: grpc.status[err.code] as Code, message: err.details ?? err.message }),
    );
    const { status } = await d.client.runtime('ContainerStatus', { container_id: id });
    if (started.code !== 'OK' && (status.state !== 'CONTAINER_EXITED' || status.reason !== 'StartError' || status.exit_code !== 128 || !status.message)) {
      return { code: 'INTERNAL' as Code, message: `after the failed start: ${status.state} ${status.reason} ${status.exit_code} ${status.message}` };
    }
    return started;
  } finally {
    await d.client.runtime('RemoveContainer', { container_id: id });
    await d.client.runtime('RemoveContainer', { container_id: id }); // waits for the teardown
    // The runtime made the log file at the start; removing a removed container's log is the kubelet's job.
    await fsp.rm(path.join(req.sandbox_config.log_directory, req.config.log_path), { force: true });
  }
}

// ---- what is left behind ----

function cgroupRoots(): string[] {
  try {
    return readdirSync('/sys/fs/cgroup').map((n) => path.join('/sys/fs/cgroup', n)).filter((p) => existsSync(path.join(p, 'cgroup.procs')));
  } catch {
    return [];
  }
}

async function listDir(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir).catch(() => [] as string[])).sort();
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
  }
  return out.sort();
}

/** Ids any nodelet state root on this machine knows (other tests run daemons too). */
async function knownIdsEverywhere(): Promise<Set<string>> {
  const ids = new Set<string>();
  const roots = ['/var/lib/nodelet', ...(await fsp.readdir(os.tmpdir()).catch(() => [] as string[])).filter((n) => n.startsWith('nodelet-')).map((n) => path.join(os.tmpdir(), n, 'root'))];
  for (const root of roots) for (const kind of ['sandboxes', 'containers']) for (const id of await listDir(path.join(root, kind))) ids.add(id);
  return ids;
}

async function snapshot() {
  const mine = (line: string) => line.includes(d.root) || line.includes(d.runRoot) || line.includes(logDir);
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(mine).map((l) => l.split(' ')[4]).sort();
  const conmons: string[] = [];
  for (const pid of await listDir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(d.runRoot) && /conmon|runc/.test(cmd.split('\0')[0] ?? '')) conmons.push(cmd.replace(/\0/g, ' '));
  }
  const subnetPrefix = d.subnet.split('.').slice(0, 3).join('.') + '.';
  const ipt = await run('iptables-save', [], { reject: false });
  return {
    records: {
      sandboxes: await listDir(path.join(d.root, 'sandboxes')),
      containers: await listDir(path.join(d.root, 'containers')),
      runSandboxes: await listDir(path.join(d.runRoot, 'sandboxes')),
    },
    netns: (await listDir('/run/netns')).filter((n) => n.startsWith('nodelet-')),
    mounts: mountinfo,
    nodeletCgroups: (await Promise.all(cgroupRoots().map((r) => listDir(path.join(r, 'nodelet'))))).flat(),
    escapedCgroups: cgroupRoots().filter((r) => existsSync(path.join(r, `nl-escape-${tag}`))),
    monitors: conmons.sort(),
    iptables: ipt.stdout.split('\n').filter((l) => l.includes(subnetPrefix)).sort(),
    logs: await filesUnder(logDir),
    // Addresses handed out by host-local and the attachments nodelet keeps for CNI DEL.
    ipam: await filesUnder(path.join(path.dirname(d.root), 'ipam')),
    cniCache: await listDir(path.join(d.root, 'cni-cache')),
    escapedLogs: [path.join(logDir, '..', `escape-${tag}.log`), path.join(os.tmpdir(), `abs-${tag}.log`), path.resolve(`rel-${tag}`), path.join(logDir, '..', `escape-${tag}`)].filter((p) => existsSync(p)),
    hostname: readFileSync('/etc/hostname', 'utf8'),
  };
}

test(`${cases.length} invalid requests: each answered with its code, naming the field`, { timeout: 600_000 }, async () => {
  assert.ok(cases.length >= 250, `the table has ${cases.length} cases`);
  // The builders make valid requests when nothing is changed.
  const okPod = await d.client.runtime('RunPodSandbox', podReq());
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: okPod.pod_sandbox_id });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: okPod.pod_sandbox_id });
  const okCtr = await d.client.runtime('CreateContainer', ctrReq());
  await d.client.runtime('RemoveContainer', { container_id: okCtr.container_id });
  // The teardown runs after the answer; a repeated RemoveContainer waits for it (the snapshot below counts mounts).
  await d.client.runtime('RemoveContainer', { container_id: okCtr.container_id });
  await fsp.rm(path.join(logDir, `bad-${seq - 1}`), { recursive: true, force: true });
  for (const f of await fsp.readdir(path.join(logDir, 'pod'))) if (f.startsWith('c')) await fsp.rm(path.join(logDir, 'pod', f), { force: true });

  const beforeState = await snapshot();
  // The leftover checks look where things would be: the fixtures show up there.
  assert.ok(beforeState.ipam.some((f) => f.includes('10.')), 'the ready pod holds an address');
  assert.ok(beforeState.cniCache.length >= 1 && beforeState.iptables.length >= 1 && beforeState.netns.length >= 1 && beforeState.monitors.length >= 2 && beforeState.mounts.length >= 2, JSON.stringify(beforeState).slice(0, 500));
  const idsBefore = await knownIdsEverywhere();
  const wrong: string[] = [];
  for (const c of cases) {
    const got = await call(c);
    const label = `${c.rpc} / ${c.title}`;
    if (got.code !== c.code) wrong.push(`${label}: expected ${c.code}, got ${got.code} ${got.message.slice(0, 200)} ${got.message.slice(-300)}`);
    if (got.code === 'OK' && c.rpc === 'CreateContainer') {
      await d.client.runtime('RemoveContainer', { container_id: got.res.container_id });
      await d.client.runtime('RemoveContainer', { container_id: got.res.container_id }); // waits for the teardown
    }
    const says = typeof c.says === 'function' ? c.says() : c.says;
    if (got.code !== c.code) continue;
    if (says && !got.message.includes(says)) wrong.push(`${label}: message does not name ${JSON.stringify(says)}: ${got.message.slice(0, 200)}`);
    else if (c.never && got.message.includes(c.never)) wrong.push(`${label}: message quotes ${JSON.stringify(c.never)}: ${got.message.slice(0, 200)}`);
    if (got.code === 'OK' && c.rpc.startsWith('List')) {
      const found = Object.values(got.res).filter((v) => Array.isArray(v) && v.length > 0);
      if (found.length > 0) wrong.push(`${label}: a filter naming nothing listed ${JSON.stringify(found).slice(0, 200)}`);
    }
    const problem = got.code === 'OK' ? c.check?.(got.res) : undefined;
    if (problem) wrong.push(`${label}: ${problem}`);
  }
  assert.deepEqual(wrong, [], `${wrong.length} of ${cases.length} requests answered wrongly`);

  // Nothing left behind by the whole table.
  const afterState = await snapshot();
  const idsAfter = await knownIdsEverywhere();
  // Other daemons' new pods and containers may appear meanwhile: only what no record explains counts.
  const unexplained = (names: string[], old: string[]) => names.filter((n) => !old.includes(n) && ![...idsAfter, ...idsBefore].some((id) => n.includes(id.slice(0, 56))));
  assert.deepEqual(unexplained(afterState.netns, beforeState.netns), [], 'network namespaces');
  assert.deepEqual(unexplained(afterState.nodeletCgroups, beforeState.nodeletCgroups), [], 'cgroups under /nodelet');
  const { netns: _a, nodeletCgroups: _b, ...restAfter } = afterState;
  const { netns: _c, nodeletCgroups: _d, ...restBefore } = beforeState;
  assert.deepEqual(restAfter, restBefore);
  // The fixtures are untouched.
  assert.equal((await d.client.runtime('ContainerStatus', { container_id: runningId })).status.state, 'CONTAINER_RUNNING');
  assert.equal((await d.client.runtime('ListPodSandbox', {})).items.length, 2);
});
