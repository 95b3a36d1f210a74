// Defaults shared by the container and sandbox spec builders: the values a Kubernetes
// container gets from containerd's CRI when the pod does not say otherwise.
import type { OciDeviceCgroupRule, OciMount, OciRlimit } from './types.js';

/** The capability set of an unprivileged container (the containerd / Docker default). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Every capability Linux defines up to 6.x, in kernel number order (0..40). */
export const ALL_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

/** Paths hidden from an unprivileged container (bind of /dev/null or an empty ro tmpfs). */
export const DEFAULT_MASKED_PATHS: readonly string[] = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
];

/** Paths an unprivileged container sees read-only. */
export const DEFAULT_READONLY_PATHS: readonly string[] = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
];

export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const DEFAULT_NOFILE = 1048576;
export const DEFAULT_RLIMITS: readonly OciRlimit[] = [{ type: 'RLIMIT_NOFILE', hard: DEFAULT_NOFILE, soft: DEFAULT_NOFILE }];

/**
 * The default rlimits capped at the daemon's own hard NOFILE limit ("Max open files" in
 * /proc/self/limits): without CAP_SYS_RESOURCE runc cannot raise a hard limit.
 */
export function rlimitsWithin(hardNofile: number): OciRlimit[] {
  const n = Math.min(DEFAULT_NOFILE, hardNofile);
  return [{ type: 'RLIMIT_NOFILE', hard: n, soft: n }];
}

export interface DefaultMountOptions {
  /** Host directory (a tmpfs the caller mounted) bound at /dev/shm; a private tmpfs when absent. */
  shmPath?: string;
  /** Privileged containers get /sys and /sys/fs/cgroup writable. */
  privileged?: boolean;
}

/** The kernel filesystems every container gets, before the CRI and sandbox mounts. */
export function defaultMounts(opts: DefaultMountOptions = {}): OciMount[] {
  const sysAccess = opts.privileged ? 'rw' : 'ro';
  const shm: OciMount = opts.shmPath
    ? { destination: '/dev/shm', type: 'bind', source: opts.shmPath, options: ['rbind', 'rprivate', 'rw'] }
    : {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      };
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    shm,
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', sysAccess] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', sysAccess],
    },
  ];
}

/** Device cgroup rules of an unprivileged container: deny everything, then the usual character devices. */
export function defaultDeviceRules(): OciDeviceCgroupRule[] {
  const allowChar = (major: number | undefined, minor: number | undefined, access: string): OciDeviceCgroupRule => {
    const rule: OciDeviceCgroupRule = { allow: true, type: 'c', access };
    if (major !== undefined) rule.major = major;
    if (minor !== undefined) rule.minor = minor;
    return rule;
  };
  return [
    { allow: false, access: 'rwm' },
    // mknod of any device node is allowed; using it is not.
    allowChar(undefined, undefined, 'm'),
    { allow: true, type: 'b', access: 'm' },
    allowChar(1, 3, 'rwm'), // /dev/null
    allowChar(1, 5, 'rwm'), // /dev/zero
    allowChar(1, 7, 'rwm'), // /dev/full
    allowChar(1, 8, 'rwm'), // /dev/random
    allowChar(1, 9, 'rwm'), // /dev/urandom
    allowChar(5, 0, 'rwm'), // /dev/tty
    allowChar(5, 1, 'rwm'), // /dev/console
    allowChar(5, 2, 'rwm'), // /dev/ptmx
    allowChar(136, undefined, 'rwm'), // /dev/pts/*
    allowChar(10, 200, 'rwm'), // /dev/net/tun
  ];
}

/** Privileged containers may use every device. */
export function allowAllDeviceRules(): OciDeviceCgroupRule[] {
  return [{ allow: true, access: 'rwm' }];
}

/** "net_admin", "CAP_NET_ADMIN" → "CAP_NET_ADMIN"; "all" → "ALL". */
export function normalizeCapability(name: string): string {
  const upper = name.trim().toUpperCase();
  if (upper === 'ALL') return 'ALL';
  return upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
}
