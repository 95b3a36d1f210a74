import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isKind } from '../../src/common/errors.js';
import type { SecurityProfile__Output } from '../../src/cri/generated/runtime/v1/SecurityProfile.js';
import { DEFAULT_CAPABILITIES } from '../../src/oci/defaults.js';
import { runtimeDefaultSeccomp, seccompChoice, seccompFor, seccompLocalhostPath } from '../../src/oci/seccomp.js';
import type { OciSeccomp } from '../../src/oci/types.js';

/** Whether a syscall is allowed without conditions on its arguments. */
const allowsPlain = (p: OciSeccomp, name: string) =>
  p.syscalls!.some((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args && s.names.includes(name));
const allowsWithArgs = (p: OciSeccomp, name: string) =>
  p.syscalls!.some((s) => s.action === 'SCMP_ACT_ALLOW' && s.args && s.names.includes(name));

const profile = (type: SecurityProfile__Output['profile_type'], ref = ''): SecurityProfile__Output => ({
  profile_type: type,
  localhost_ref: ref,
});

test('runtime default: EPERM by default, x86 family architectures', () => {
  const p = runtimeDefaultSeccomp(DEFAULT_CAPABILITIES, 'x64');
  assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(p.defaultErrnoRet, 1);
  assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  assert.deepEqual(runtimeDefaultSeccomp([], 'arm64').architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
});

const everyday = ['read', 'write', 'openat', 'execve', 'mmap', 'futex', 'epoll_wait', 'rt_sigaction', 'setuid', 'exit_group', 'chroot'];
for (const name of everyday) {
  test(`runtime default: ${name} allowed with default caps`, () => {
    assert.ok(allowsPlain(runtimeDefaultSeccomp(DEFAULT_CAPABILITIES, 'x64'), name));
  });
}

const gated: Array<{ syscall: string; cap: string }> = [
  { syscall: 'mount', cap: 'CAP_SYS_ADMIN' },
  { syscall: 'umount2', cap: 'CAP_SYS_ADMIN' },
  { syscall: 'setns', cap: 'CAP_SYS_ADMIN' },
  { syscall: 'keyctl', cap: 'CAP_SYS_ADMIN' },
  { syscall: 'add_key', cap: 'CAP_SYS_ADMIN' },
  { syscall: 'request_key', cap: 'CAP_SYS_ADMIN' },
  { syscall: 'bpf', cap: 'CAP_BPF' },
  { syscall: 'perf_event_open', cap: 'CAP_PERFMON' },
  { syscall: 'reboot', cap: 'CAP_SYS_BOOT' },
  { syscall: 'kexec_load', cap: 'CAP_SYS_BOOT' },
  { syscall: 'init_module', cap: 'CAP_SYS_MODULE' },
  { syscall: 'ptrace', cap: 'CAP_SYS_PTRACE' },
  { syscall: 'clock_settime', cap: 'CAP_SYS_TIME' },
  { syscall: 'open_by_handle_at', cap: 'CAP_DAC_READ_SEARCH' },
];
for (const g of gated) {
  test(`runtime default: ${g.syscall} only with ${g.cap}`, () => {
    assert.ok(!allowsPlain(runtimeDefaultSeccomp(DEFAULT_CAPABILITIES, 'x64'), g.syscall));
    assert.ok(allowsPlain(runtimeDefaultSeccomp([...DEFAULT_CAPABILITIES, g.cap], 'x64'), g.syscall));
  });
}

test('runtime default: chroot goes away with CAP_SYS_CHROOT', () => {
  const caps = DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_SYS_CHROOT');
  assert.ok(!allowsPlain(runtimeDefaultSeccomp(caps, 'x64'), 'chroot'));
});

test('runtime default: clone/unshare only without namespace flags, clone3 → ENOSYS', () => {
  const p = runtimeDefaultSeccomp(DEFAULT_CAPABILITIES, 'x64');
  assert.ok(!allowsPlain(p, 'clone'));
  assert.ok(!allowsPlain(p, 'unshare'));
  const rule = p.syscalls!.find((s) => s.names.includes('clone') && s.args)!;
  assert.deepEqual(rule.names, ['clone', 'unshare']);
  assert.equal(rule.args![0].op, 'SCMP_CMP_MASKED_EQ');
  assert.equal(rule.args![0].value & 0x40000000, 0x40000000); // CLONE_NEWNET is in the mask
  assert.equal(rule.args![0].value & 0x00010000, 0); // CLONE_THREAD is not
  assert.equal(rule.args![0].valueTwo, 0);
  assert.deepEqual(p.syscalls!.find((s) => s.names.includes('clone3')), { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 });
  const admin = runtimeDefaultSeccomp([...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN'], 'x64');
  assert.ok(allowsPlain(admin, 'clone') && allowsPlain(admin, 'clone3') && allowsPlain(admin, 'unshare'));
  assert.ok(!admin.syscalls!.some((s) => s.action === 'SCMP_ACT_ERRNO'));
});

test('runtime default: personality only with safe values, socket not for vsock', () => {
  const p = runtimeDefaultSeccomp(DEFAULT_CAPABILITIES, 'x64');
  assert.ok(!allowsPlain(p, 'personality'));
  assert.ok(allowsWithArgs(p, 'personality'));
  const values = p.syscalls!.filter((s) => s.names.includes('personality')).map((s) => s.args![0].value);
  assert.deepEqual(values, [0, 8, 0x20000, 0x20008, 0xffffffff]);
  const socket = p.syscalls!.find((s) => s.names.includes('socket'))!;
  assert.deepEqual(socket.args, [{ index: 0, value: 40, op: 'SCMP_CMP_NE' }]);
});

const choiceCases: Array<{ name: string; profile: SecurityProfile__Output | null; legacy: string; want: ReturnType<typeof seccompChoice> }> = [
  { name: 'nothing set', profile: null, legacy: '', want: { kind: 'unconfined' } },
  { name: 'RuntimeDefault', profile: profile('RuntimeDefault'), legacy: '', want: { kind: 'runtimeDefault' } },
  { name: 'Unconfined', profile: profile('Unconfined'), legacy: 'runtime/default', want: { kind: 'unconfined' } },
  { name: 'Localhost', profile: profile('Localhost', '/p.json'), legacy: '', want: { kind: 'localhost', path: '/p.json' } },
  { name: 'legacy runtime/default', profile: null, legacy: 'runtime/default', want: { kind: 'runtimeDefault' } },
  { name: 'legacy docker/default', profile: null, legacy: 'docker/default', want: { kind: 'runtimeDefault' } },
  { name: 'legacy unconfined', profile: null, legacy: 'unconfined', want: { kind: 'unconfined' } },
  { name: 'legacy localhost/', profile: null, legacy: 'localhost//var/lib/p.json', want: { kind: 'localhost', path: '/var/lib/p.json' } },
];
for (const c of choiceCases) {
  test(`seccomp choice: ${c.name}`, () => {
    assert.deepEqual(seccompChoice(c.profile, c.legacy), c.want);
  });
}

test('seccompFor: unconfined is no section; localhost path helper', () => {
  assert.equal(seccompFor(null, '', DEFAULT_CAPABILITIES), undefined);
  assert.equal(seccompLocalhostPath(profile('Localhost', '/x.json'), ''), '/x.json');
  assert.equal(seccompLocalhostPath(profile('RuntimeDefault'), ''), undefined);
});

test('seccompFor: bad legacy value and Localhost without ref are invalid', () => {
  assert.throws(() => seccompFor(null, 'bogus', []), (e: unknown) => isKind(e, 'InvalidArgument'));
  assert.throws(() => seccompFor(profile('Localhost'), '', []), (e: unknown) => isKind(e, 'InvalidArgument'));
});

test('seccompFor: Localhost content that is not JSON names the profile path', () => {
  assert.throws(
    () => seccompFor(profile('Localhost', '/etc/k/p.json'), '', [], '{ nope'),
    (e: unknown) => isKind(e, 'InvalidArgument') && /\/etc\/k\/p\.json/.test((e as Error).message),
  );
  assert.throws(
    () => seccompFor(profile('Localhost', '/etc/k/p.json'), '', [], '[]'),
    (e: unknown) => isKind(e, 'InvalidArgument') && /not a JSON object/.test((e as Error).message),
  );
});

test('seccompFor: a Docker-format Localhost profile becomes OCI form, honouring includes.caps', () => {
  const docker = {
    defaultAction: 'SCMP_ACT_ERRNO',
    archMap: [{ architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'] }],
    syscalls: [
      { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
      { name: 'mount', action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
      { names: ['ptrace'], action: 'SCMP_ACT_ALLOW', excludes: { caps: ['CAP_CHOWN'] } },
      { names: ['getpid'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
    ],
  };
  const p = seccompFor(profile('Localhost', '/p.json'), '', ['CAP_CHOWN'], JSON.stringify(docker))!;
  assert.deepEqual(p, {
    defaultAction: 'SCMP_ACT_ERRNO',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls: [
      { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
      { names: ['getpid'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
    ],
  });
});
