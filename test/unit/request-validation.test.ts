// The up-front request checks: what the kubelet and critest send passes, what would break the host or
// end as runc's INTERNAL error is refused naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkCgroupParent, checkCpuset, checkLogPath, checkResources, checkSysctls, type HostLimits } from '../../src/runtime/validation.js';
import { hugepageSizeName, parseIdList } from '../../src/runtime/host-limits.js';
import { commandNotRunnable } from '../../src/runtime/runc/backend.js';
import { fitExecOutput, imageStopSignal } from '../../src/runtime/containers.js';
import { NodeletError } from '../../src/common/errors.js';
import { sysctlFault } from '../../src/runtime/validation.js';

const host: HostLimits = {
  cpus: new Set([0, 1, 2, 3]),
  mems: new Set([0]),
  sysctlExists: (name) => ['net.ipv4.ip_forward', 'net.core.somaxconn', 'net.ipv4.ip_unprivileged_port_start', 'kernel.shm_rmid_forced', 'kernel.shmmax', 'fs.mqueue.msg_max', 'net.ipv4.ping_group_range'].includes(name),
};

const refused = (fn: () => void, field: string) =>
  assert.throws(fn, (err: unknown) => err instanceof NodeletError && err.kind === 'InvalidArgument' && err.message.includes(field), `refused naming ${field}`);

const resources = (r: object) => ({ cpu_period: 0, cpu_quota: 0, cpu_shares: 0, memory_limit_in_bytes: 0, oom_score_adj: 0, cpuset_cpus: '', cpuset_mems: '', hugepage_limits: [], unified: {}, memory_swap_limit_in_bytes: 0, ...r }) as any;

test('cgroup_parent: the kubelet forms pass; climbing, relative and odd paths are refused', () => {
  for (const ok of ['', '/kubepods/burstable/pod1234', '/kubepods', 'kubepods-besteffort-pod12_34.slice', '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice', 'system.slice']) {
    assert.doesNotThrow(() => checkCgroupParent(ok, 'p'), ok);
  }
  for (const bad of ['../../../../x', '/a/../../b', 'relative/path', 'x', '/a/./b', '/a:b:c', '/a\0b', '../x.slice', 'a/../b.slice']) refused(() => checkCgroupParent(bad, 'p'), 'p');
});

test('sysctls: namespaced ones pass (either separator); others, host-namespace ones and unknown ones are refused', () => {
  const pod = { hostNetwork: false, hostIpc: false };
  assert.doesNotThrow(() => checkSysctls({ 'net.ipv4.ip_unprivileged_port_start': '80', 'kernel.shm_rmid_forced': '1', 'net/ipv4/ip_forward': '1', 'fs.mqueue.msg_max': '20', 'net.ipv4.conf.eth0.rp_filter': '0', 'net.ipv4.ping_group_range': '0 2147483647' }, 's', pod, host));
  for (const key of ['vm.swappiness', 'kernel.panic', 'kernel.hostname', 'net..x', 'net/../../vm/x', 'net.ipv4.nope', '.net.core.somaxconn', '']) refused(() => checkSysctls({ [key]: '1' }, 's', pod, host), 's');
  refused(() => checkSysctls({ 'net.core.somaxconn': '1' }, 's', { hostNetwork: true, hostIpc: false }, host), 'host network');
  refused(() => checkSysctls({ 'kernel.shmmax': '1' }, 's', { hostNetwork: false, hostIpc: true }, host), 'host IPC');
  refused(() => checkSysctls({ 'net.core.somaxconn': '1\n2' }, 's', pod, host), 's');
});

test('resources: the kubelet values pass; values the kernel or runc refuse are refused naming the field', () => {
  for (const ok of [
    { cpu_period: 100000, cpu_quota: 0, cpu_shares: 2, oom_score_adj: 1000 },
    { cpu_period: 100000, cpu_quota: -1, cpu_shares: 1024, memory_limit_in_bytes: 128 << 20, oom_score_adj: -997 },
    { cpu_period: 100000, cpu_quota: 50000, memory_limit_in_bytes: 64 << 20, memory_swap_limit_in_bytes: 64 << 20 },
    { cpuset_cpus: '0-3', cpuset_mems: '0' },
    { cpuset_cpus: '0,2-3' },
    { hugepage_limits: [{ page_size: '2MB', limit: 0 }, { page_size: '1GB', limit: 0 }] },
    { unified: { 'memory.high': '1000000' } },
  ]) {
    assert.doesNotThrow(() => checkResources(resources(ok), 'r', host), JSON.stringify(ok));
  }
  const cases: [object, string][] = [
    [{ cpu_quota: -5 }, 'r.cpu_quota'],
    [{ cpu_quota: 9e18 }, 'r.cpu_quota'],
    [{ cpu_quota: 999 }, 'r.cpu_quota'],
    [{ cpu_period: 9e18 }, 'r.cpu_period'],
    [{ cpu_period: 500 }, 'r.cpu_period'],
    [{ cpu_shares: 9e18 }, 'r.cpu_shares'],
    [{ memory_limit_in_bytes: 1 }, 'r.memory_limit_in_bytes'],
    [{ memory_limit_in_bytes: -2 }, 'r.memory_limit_in_bytes'],
    [{ memory_limit_in_bytes: 64 << 20, memory_swap_limit_in_bytes: 1 << 20 }, 'r.memory_swap_limit_in_bytes'],
    [{ oom_score_adj: 5000 }, 'r.oom_score_adj'],
    [{ cpuset_cpus: '999' }, 'r.cpuset_cpus'],
    [{ cpuset_cpus: '3-1' }, 'r.cpuset_cpus'],
    [{ cpuset_cpus: '0,' }, 'r.cpuset_cpus'],
    [{ cpuset_mems: '1' }, 'r.cpuset_mems'],
    [{ hugepage_limits: [{ page_size: 'bogus', limit: 1 }] }, 'r.hugepage_limits[0].page_size'],
    [{ unified: { '../cpu.max': '1' } }, 'r.unified'],
  ];
  for (const [r, field] of cases) refused(() => checkResources(resources(r), 'r', host), field);
});

test('cpusets and host CPU lists', () => {
  assert.deepEqual([...parseIdList('0-2,5\n')], [0, 1, 2, 5]);
  assert.deepEqual([...parseIdList('')], []);
  assert.doesNotThrow(() => checkCpuset('7', 'c', new Set()), 'an unreadable host list refuses nothing by range');
  refused(() => checkCpuset('a', 'c', new Set()), 'c');
});

test('hugepage sizes: the kernel names as the kubelet spells them; other sizes refused where the host lists its own', () => {
  assert.deepEqual(['hugepages-2048kB', 'hugepages-1048576kB', 'hugepages-64kB', 'other'].map(hugepageSizeName), ['2MB', '1GB', '64KB', undefined]);
  const withSizes = { ...host, hugepageSizes: new Set(['2MB', '1GB']) };
  assert.doesNotThrow(() => checkResources(resources({ hugepage_limits: [{ page_size: '2MB', limit: 0 }] }), 'r', withSizes));
  refused(() => checkResources(resources({ hugepage_limits: [{ page_size: '4MB', limit: 0 }] }), 'r', withSizes), 'r.hugepage_limits[0].page_size');
});

test('a sysctl value the kernel refused names the key it came from', () => {
  const err = new Error('runc create failed: error during container init: write /proc/sys/net/ipv4/ip_forward: invalid argument"');
  assert.match(sysctlFault(err, { 'net/ipv4/ip_forward': 'abc' }, 'c.sysctls')!.message, /^c\.sysctls\["net\/ipv4\/ip_forward"\]: the kernel refused the value "abc": invalid argument$/);
  assert.equal(sysctlFault(new Error('something else'), {}, 'c'), undefined);
});

test('log_path stays inside the log directory', () => {
  for (const ok of ['c.log', 'c/0.log', 'a/b/c.log', './c.log']) assert.doesNotThrow(() => checkLogPath(ok, 'l'), ok);
  for (const bad of ['../x.log', 'a/../../x', '/etc/x', 'dir/', '.', 'a\0b']) refused(() => checkLogPath(bad, 'l'), 'l');
});

test('ExecSync: runc failing to start the command is its exit code (127 / 126), not an error', () => {
  const missing = 'time="2026-01-01T00:00:00Z" level=error msg="exec failed: unable to start container process: exec: \\"nope\\": executable file not found in $PATH"';
  assert.deepEqual(commandNotRunnable(missing), { exitCode: 127, message: 'exec failed: unable to start container process: exec: "nope": executable file not found in $PATH' });
  assert.equal(commandNotRunnable('msg="exec failed: unable to start container process: exec: \\"/etc\\": is a directory"')?.exitCode, 126);
  assert.equal(commandNotRunnable('msg="exec failed: unable to start container process: exec: \\"/x\\": permission denied"')?.exitCode, 126);
  assert.equal(commandNotRunnable('msg="open /run/runc/x/state.json: no such file or directory"'), undefined, 'the runtime\'s own files are not the command');
});

test('ExecSync output: kept whole when it fits, cut with a note when not', () => {
  const small = fitExecOutput(Buffer.from('out'), Buffer.from('err'), 100);
  assert.equal(small.stdout.toString(), 'out');
  const cut = fitExecOutput(Buffer.alloc(2000, 'a'), Buffer.from('err'), 1000);
  assert.equal(cut.stderr.toString(), 'err');
  assert.ok(cut.stdout.length + cut.stderr.length <= 1000);
  assert.match(cut.stdout.toString(), /output cut to its first \d+ bytes/);
});

test("an image's StopSignal runc cannot send falls back to SIGTERM", () => {
  for (const ok of ['SIGQUIT', 'QUIT', 'sigint', '9', 'SIGRTMIN+3', 'RTMAX-2']) assert.equal(imageStopSignal(ok), ok);
  for (const bad of ['SIGBOGUS', '999', '0', 'TERM;rm', undefined, '']) assert.equal(imageStopSignal(bad), 'SIGTERM', String(bad));
});
