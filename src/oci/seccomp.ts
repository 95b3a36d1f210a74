// nodelet's RuntimeDefault seccomp profile (OCI format) and the choice of profile per
// security context. The allowlist is comparable to Docker's default: everything a
// normal program needs, while the syscalls that act on the whole host (mounts, modules,
// namespaces, keyrings, clocks, tracing) are allowed only when the capability that
// guards them in the kernel was granted to the container.
import { invalidArgument } from '../common/errors.js';
import type { SecurityProfile__Output } from '../cri/generated/runtime/v1/SecurityProfile.js';
import type { OciSeccomp, SeccompArg, SeccompSyscall } from './types.js';

const EPERM = 1;
const ENOSYS = 38;

/** Namespace-creating clone/unshare flags: NEWTIME|NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET. */
const NAMESPACE_FLAGS = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

const AF_VSOCK = 40;

// Safe personality(2) arguments: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query value.
const SAFE_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

/** Syscalls every container may use, grouped by what they are for. */
const ALWAYS_ALLOWED: Record<string, readonly string[]> = {
  fileIo: [
    'read', 'write', 'readv', 'writev', 'pread64', 'pwrite64', 'preadv', 'pwritev', 'preadv2', 'pwritev2',
    'lseek', '_llseek', 'sendfile', 'sendfile64', 'splice', 'tee', 'vmsplice', 'copy_file_range',
    'fsync', 'fdatasync', 'sync', 'syncfs', 'sync_file_range', 'sync_file_range2', 'arm_sync_file_range',
    'fallocate', 'ftruncate', 'ftruncate64', 'truncate', 'truncate64',
    'fadvise64', 'fadvise64_64', 'arm_fadvise64_64', 'readahead',
    'close', 'close_range', 'dup', 'dup2', 'dup3', 'fcntl', 'fcntl64', 'flock', 'ioctl', 'pipe', 'pipe2',
  ],
  pathsAndMetadata: [
    'open', 'openat', 'openat2', 'creat', 'access', 'faccessat', 'faccessat2',
    'stat', 'stat64', 'lstat', 'lstat64', 'fstat', 'fstat64', 'fstatat64', 'newfstatat', 'statx',
    'statfs', 'statfs64', 'fstatfs', 'fstatfs64', 'getcwd', 'chdir', 'fchdir',
    'mkdir', 'mkdirat', 'rmdir', 'rename', 'renameat', 'renameat2', 'link', 'linkat', 'unlink', 'unlinkat',
    'symlink', 'symlinkat', 'readlink', 'readlinkat', 'mknod', 'mknodat',
    'chmod', 'fchmod', 'fchmodat', 'fchmodat2', 'chown', 'chown32', 'fchown', 'fchown32', 'fchownat', 'lchown', 'lchown32',
    'utime', 'utimes', 'utimensat', 'utimensat_time64', 'futimesat', 'umask', 'getdents', 'getdents64', 'readdir',
  ],
  extendedAttributes: [
    'getxattr', 'lgetxattr', 'fgetxattr', 'setxattr', 'lsetxattr', 'fsetxattr',
    'listxattr', 'llistxattr', 'flistxattr', 'removexattr', 'lremovexattr', 'fremovexattr',
  ],
  memory: [
    'brk', 'mmap', 'mmap2', 'munmap', 'mremap', 'mprotect', 'pkey_mprotect', 'pkey_alloc', 'pkey_free',
    'madvise', 'mincore', 'mlock', 'mlock2', 'mlockall', 'munlock', 'munlockall', 'msync',
    'remap_file_pages', 'membarrier', 'memfd_create', 'memfd_secret',
  ],
  processesAndThreads: [
    'fork', 'vfork', 'execve', 'execveat', 'exit', 'exit_group', 'wait4', 'waitid', 'waitpid',
    'getpid', 'getppid', 'gettid', 'getpgid', 'setpgid', 'getpgrp', 'getsid', 'setsid',
    'prctl', 'arch_prctl', 'set_tid_address', 'set_robust_list', 'get_robust_list', 'rseq', 'restart_syscall',
    'futex', 'futex_time64', 'futex_waitv', 'futex_wait', 'futex_wake', 'futex_requeue',
    'getrlimit', 'setrlimit', 'ugetrlimit', 'prlimit64', 'getrusage', 'times', 'capget', 'capset',
    'uname', 'sysinfo', 'seccomp', 'getrandom', 'getcpu',
    'get_thread_area', 'set_thread_area', 'set_tls', 'breakpoint', 'cacheflush',
    'pidfd_open', 'pidfd_send_signal', 'process_mrelease', 'landlock_create_ruleset', 'landlock_add_rule',
    'landlock_restrict_self',
  ],
  scheduling: [
    'sched_yield', 'sched_getaffinity', 'sched_setaffinity', 'sched_getparam', 'sched_setparam',
    'sched_getscheduler', 'sched_setscheduler', 'sched_get_priority_max', 'sched_get_priority_min',
    'sched_rr_get_interval', 'sched_rr_get_interval_time64', 'sched_getattr', 'sched_setattr',
    'getpriority', 'setpriority', 'ioprio_get', 'ioprio_set',
  ],
  signals: [
    'kill', 'tkill', 'tgkill', 'rt_sigqueueinfo', 'rt_tgsigqueueinfo',
    'rt_sigaction', 'rt_sigprocmask', 'rt_sigreturn', 'rt_sigpending', 'rt_sigsuspend',
    'rt_sigtimedwait', 'rt_sigtimedwait_time64', 'sigaction', 'sigprocmask', 'sigreturn', 'sigsuspend',
    'sigpending', 'sigaltstack', 'signalfd', 'signalfd4', 'pause', 'alarm',
  ],
  credentials: [
    'getuid', 'getuid32', 'geteuid', 'geteuid32', 'getgid', 'getgid32', 'getegid', 'getegid32',
    'getresuid', 'getresuid32', 'getresgid', 'getresgid32', 'getgroups', 'getgroups32',
    'setuid', 'setuid32', 'setgid', 'setgid32', 'setreuid', 'setreuid32', 'setregid', 'setregid32',
    'setresuid', 'setresuid32', 'setresgid', 'setresgid32', 'setgroups', 'setgroups32',
    'setfsuid', 'setfsuid32', 'setfsgid', 'setfsgid32',
  ],
  timeAndTimers: [
    'clock_gettime', 'clock_gettime64', 'clock_getres', 'clock_getres_time64', 'clock_nanosleep',
    'clock_nanosleep_time64', 'gettimeofday', 'time', 'nanosleep',
    'timer_create', 'timer_delete', 'timer_gettime', 'timer_gettime64', 'timer_settime', 'timer_settime64',
    'timer_getoverrun', 'timerfd_create', 'timerfd_gettime', 'timerfd_gettime64', 'timerfd_settime',
    'timerfd_settime64', 'getitimer', 'setitimer',
  ],
  pollingAndEvents: [
    'select', '_newselect', 'pselect6', 'pselect6_time64', 'poll', 'ppoll', 'ppoll_time64',
    'epoll_create', 'epoll_create1', 'epoll_ctl', 'epoll_ctl_old', 'epoll_wait', 'epoll_wait_old',
    'epoll_pwait', 'epoll_pwait2', 'eventfd', 'eventfd2',
    'inotify_init', 'inotify_init1', 'inotify_add_watch', 'inotify_rm_watch',
  ],
  asyncIo: ['io_setup', 'io_destroy', 'io_submit', 'io_cancel', 'io_getevents', 'io_pgetevents', 'io_pgetevents_time64'],
  sockets: [
    'socketpair', 'bind', 'listen', 'accept', 'accept4', 'connect', 'getsockname', 'getpeername',
    'getsockopt', 'setsockopt', 'send', 'sendto', 'sendmsg', 'sendmmsg', 'recv', 'recvfrom', 'recvmsg',
    'recvmmsg', 'recvmmsg_time64', 'shutdown', 'socketcall',
  ],
  interProcess: [
    'shmget', 'shmat', 'shmdt', 'shmctl', 'semget', 'semop', 'semtimedop', 'semtimedop_time64', 'semctl',
    'msgget', 'msgsnd', 'msgrcv', 'msgctl', 'ipc',
    'mq_open', 'mq_unlink', 'mq_timedsend', 'mq_timedsend_time64', 'mq_timedreceive', 'mq_timedreceive_time64',
    'mq_notify', 'mq_getsetattr',
  ],
};

/** Syscalls allowed only when the container holds the capability the kernel checks for them. */
const ALLOWED_WITH_CAPABILITY: Record<string, readonly string[]> = {
  CAP_SYS_ADMIN: [
    // mounts and namespaces
    'mount', 'umount', 'umount2', 'pivot_root', 'setns', 'unshare', 'clone', 'clone3',
    'fsopen', 'fsconfig', 'fsmount', 'fspick', 'move_mount', 'open_tree', 'mount_setattr',
    'sethostname', 'setdomainname', 'quotactl', 'quotactl_fd', 'swapon', 'swapoff',
    'fanotify_init', 'fanotify_mark', 'lookup_dcookie', 'name_to_handle_at',
    // kernel keyrings are not namespaced
    'keyctl', 'add_key', 'request_key',
    // bpf and perf also open to CAP_BPF / CAP_PERFMON below
    'bpf', 'perf_event_open',
    'iopl', 'ioperm',
  ],
  CAP_BPF: ['bpf'],
  CAP_PERFMON: ['perf_event_open'],
  CAP_SYS_BOOT: ['reboot', 'kexec_load', 'kexec_file_load'],
  CAP_SYS_MODULE: ['init_module', 'finit_module', 'delete_module'],
  CAP_SYS_RAWIO: ['iopl', 'ioperm'],
  CAP_SYS_TIME: ['settimeofday', 'stime', 'clock_settime', 'clock_settime64', 'adjtimex', 'clock_adjtime', 'clock_adjtime64'],
  CAP_SYS_PTRACE: ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'userfaultfd'],
  CAP_SYS_NICE: ['get_mempolicy', 'mbind', 'set_mempolicy', 'set_mempolicy_home_node', 'move_pages', 'migrate_pages'],
  CAP_SYS_PACCT: ['acct'],
  CAP_SYS_TTY_CONFIG: ['vhangup'],
  CAP_SYSLOG: ['syslog'],
  CAP_SYS_CHROOT: ['chroot'],
  CAP_DAC_READ_SEARCH: ['open_by_handle_at', 'name_to_handle_at'],
};

const ARCHITECTURES: Record<string, string[]> = {
  x64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  arm64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
  ia32: ['SCMP_ARCH_X86'],
  arm: ['SCMP_ARCH_ARM'],
};

function allow(names: readonly string[], args?: SeccompArg[]): SeccompSyscall {
  const rule: SeccompSyscall = { names: [...names], action: 'SCMP_ACT_ALLOW' };
  if (args) rule.args = args;
  return rule;
}

/**
 * nodelet's RuntimeDefault profile for a container holding `capabilities` (names with CAP_ prefix).
 * `arch` is a Node.js process.arch value; it picks the architectures the filter covers.
 */
export function runtimeDefaultSeccomp(capabilities: readonly string[], arch: string = process.arch): OciSeccomp {
  const held = new Set(capabilities);
  const syscalls: SeccompSyscall[] = [];
  for (const names of Object.values(ALWAYS_ALLOWED)) syscalls.push(allow(names));

  // socket(2) for every address family but vsock, which reaches the hypervisor host.
  syscalls.push(allow(['socket'], [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_NE' }]));
  // One rule per value: conditions inside a rule are ANDed, separate rules are ORed.
  for (const persona of SAFE_PERSONALITIES) {
    syscalls.push(allow(['personality'], [{ index: 0, value: persona, op: 'SCMP_CMP_EQ' }]));
  }

  const granted = new Set<string>();
  for (const [cap, names] of Object.entries(ALLOWED_WITH_CAPABILITY)) {
    if (!held.has(cap)) continue;
    for (const name of names) granted.add(name);
  }
  if (granted.size > 0) syscalls.push(allow([...granted].sort()));

  if (!held.has('CAP_SYS_ADMIN')) {
    // Threads and processes may be created, namespaces may not.
    syscalls.push(
      allow(['clone', 'unshare'], [{ index: 0, value: NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }]),
    );
    // clone3 passes its flags in memory the filter cannot read; ENOSYS makes libc fall back to clone.
    syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
  }

  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: EPERM,
    architectures: ARCHITECTURES[arch] ?? ARCHITECTURES.x64,
    syscalls,
  };
}

export type SeccompChoice =
  | { kind: 'unconfined' }
  | { kind: 'runtimeDefault' }
  | { kind: 'localhost'; path: string };

/**
 * Which profile a security context asks for. The structured field wins over the
 * deprecated path string ("runtime/default", "docker/default", "unconfined", "localhost/<path>").
 * Nothing set means unconfined, as the kubelet's default is.
 */
export function seccompChoice(profile: SecurityProfile__Output | null | undefined, legacyPath: string): SeccompChoice {
  if (profile) {
    switch (profile.profile_type) {
      case 'RuntimeDefault':
        return { kind: 'runtimeDefault' };
      case 'Unconfined':
        return { kind: 'unconfined' };
      case 'Localhost':
        if (!profile.localhost_ref) throw invalidArgument('seccomp: Localhost profile without localhost_ref');
        return { kind: 'localhost', path: profile.localhost_ref };
      default:
        throw invalidArgument(`seccomp: unknown profile_type ${String(profile.profile_type)}`);
    }
  }
  const legacy = legacyPath.trim();
  if (legacy === '' || legacy === 'unconfined') return { kind: 'unconfined' };
  if (legacy === 'runtime/default' || legacy === 'docker/default') return { kind: 'runtimeDefault' };
  if (legacy.startsWith('localhost/')) {
    const path = legacy.slice('localhost/'.length);
    if (!path) throw invalidArgument(`seccomp_profile_path ${legacy}: no profile path`);
    return { kind: 'localhost', path };
  }
  throw invalidArgument(`seccomp_profile_path ${legacy}: not runtime/default, unconfined or localhost/<path>`);
}

/** The host file a caller must read for seccompFor, if the security context names one. */
export function seccompLocalhostPath(
  profile: SecurityProfile__Output | null | undefined,
  legacyPath: string,
): string | undefined {
  const choice = seccompChoice(profile, legacyPath);
  return choice.kind === 'localhost' ? choice.path : undefined;
}

/**
 * The seccomp section for a container: our RuntimeDefault, nothing for Unconfined
 * (or unset), or the Localhost profile whose file content the caller read.
 */
export function seccompFor(
  profile: SecurityProfile__Output | null | undefined,
  legacyPath: string,
  caps: readonly string[],
  localhostContent?: string,
  arch: string = process.arch,
): OciSeccomp | undefined {
  const choice = seccompChoice(profile, legacyPath);
  switch (choice.kind) {
    case 'unconfined':
      return undefined;
    case 'runtimeDefault':
      return runtimeDefaultSeccomp(caps, arch);
    case 'localhost':
      return parseLocalhostProfile(choice.path, localhostContent, caps);
  }
}

interface ProfileFile {
  defaultAction?: unknown;
  defaultErrnoRet?: unknown;
  architectures?: unknown;
  archMap?: unknown;
  flags?: unknown;
  syscalls?: unknown;
}

interface ProfileFileSyscall {
  name?: unknown;
  names?: unknown;
  action?: unknown;
  errnoRet?: unknown;
  args?: unknown;
  includes?: { caps?: unknown };
  excludes?: { caps?: unknown };
}

const stringList = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

const SECCOMP_ARCHES = new Set(
  ['X86', 'X86_64', 'X32', 'ARM', 'AARCH64', 'MIPS', 'MIPS64', 'MIPS64N32', 'MIPSEL', 'MIPSEL64', 'MIPSEL64N32', 'PPC', 'PPC64', 'PPC64LE', 'S390', 'S390X', 'PARISC', 'PARISC64', 'RISCV64', 'LOONGARCH64', 'M68K', 'SH', 'SHEB'].map((a) => `SCMP_ARCH_${a}`),
);
const SECCOMP_OPERATORS = new Set(['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ']);
const SECCOMP_ACTIONS = new Set(['SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG']);

/**
 * A Localhost profile in OCI form, or in Docker's form (archMap, `name`, includes/excludes
 * by capability), turned into the OCI form runc reads.
 */
function parseLocalhostProfile(path: string, content: string | undefined, caps: readonly string[]): OciSeccomp {
  if (content === undefined) throw invalidArgument(`seccomp profile ${path}: content not provided`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch (err) {
    // Never the parser's message: it quotes the file, and the file may be any host file (/etc/shadow).
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw invalidArgument(`seccomp profile ${path}: not valid JSON${at ? ` (at byte ${at})` : ''}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw invalidArgument(`seccomp profile ${path}: not a JSON object`);
  }
  const file = parsed as ProfileFile;
  if (typeof file.defaultAction !== 'string') {
    throw invalidArgument(`seccomp profile ${path}: defaultAction missing`);
  }
  // runc refuses an unknown action only when creating the container, as an INTERNAL error.
  if (!SECCOMP_ACTIONS.has(file.defaultAction)) throw invalidArgument(`seccomp profile ${path}: defaultAction ${JSON.stringify(file.defaultAction.slice(0, 40))} is not a seccomp action`);
  const held = new Set(caps);
  const profile: OciSeccomp = { defaultAction: file.defaultAction as OciSeccomp['defaultAction'] };
  if (typeof file.defaultErrnoRet === 'number') profile.defaultErrnoRet = file.defaultErrnoRet;

  let architectures = stringList(file.architectures);
  if (architectures.length === 0 && Array.isArray(file.archMap)) {
    for (const entry of file.archMap as Array<{ architecture?: unknown; subArchitectures?: unknown }>) {
      if (typeof entry?.architecture === 'string') architectures.push(entry.architecture);
      architectures.push(...stringList(entry?.subArchitectures));
    }
  }
  architectures = [...new Set(architectures)];
  const unknownArch = architectures.find((a) => !SECCOMP_ARCHES.has(a));
  if (unknownArch !== undefined) throw invalidArgument(`seccomp profile ${path}: ${JSON.stringify(unknownArch.slice(0, 40))} is not a seccomp architecture`);
  if (architectures.length > 0) profile.architectures = architectures;
  const flags = stringList(file.flags);
  if (flags.length > 0) profile.flags = flags;

  if (file.syscalls !== undefined && !Array.isArray(file.syscalls)) {
    throw invalidArgument(`seccomp profile ${path}: syscalls is not a list`);
  }
  const syscalls: SeccompSyscall[] = [];
  for (const raw of (file.syscalls ?? []) as ProfileFileSyscall[]) {
    if (typeof raw !== 'object' || raw === null) continue;
    const needed = stringList(raw.includes?.caps);
    if (needed.length > 0 && !needed.some((c) => held.has(c))) continue;
    const excluded = stringList(raw.excludes?.caps);
    if (excluded.some((c) => held.has(c))) continue;
    const names = stringList(raw.names);
    if (typeof raw.name === 'string') names.push(raw.name);
    if (names.length === 0) continue;
    if (typeof raw.action !== 'string') {
      throw invalidArgument(`seccomp profile ${path}: syscall ${names[0]} without action`);
    }
    if (!SECCOMP_ACTIONS.has(raw.action)) throw invalidArgument(`seccomp profile ${path}: action ${JSON.stringify(raw.action.slice(0, 40))} is not a seccomp action`);
    const rule: SeccompSyscall = { names, action: raw.action as SeccompSyscall['action'] };
    if (typeof raw.errnoRet === 'number') rule.errnoRet = raw.errnoRet;
    if (Array.isArray(raw.args) && raw.args.length > 0) {
      for (const arg of raw.args as Array<{ op?: unknown }>) {
        if (!SECCOMP_OPERATORS.has(String(arg?.op))) throw invalidArgument(`seccomp profile ${path}: syscall ${names[0]}: ${JSON.stringify(String(arg?.op).slice(0, 40))} is not a seccomp operator`);
      }
      rule.args = raw.args as SeccompArg[];
    }
    syscalls.push(rule);
  }
  if (syscalls.length > 0) profile.syscalls = syscalls;
  return profile;
}
