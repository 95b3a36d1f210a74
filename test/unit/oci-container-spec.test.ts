import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ContainerConfig__Output } from '../../src/cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../../src/cri/generated/runtime/v1/LinuxContainerResources.js';
import type { LinuxContainerSecurityContext__Output } from '../../src/cri/generated/runtime/v1/LinuxContainerSecurityContext.js';
import type { Mount__Output } from '../../src/cri/generated/runtime/v1/Mount.js';
import type { NamespaceOption__Output } from '../../src/cri/generated/runtime/v1/NamespaceOption.js';
import type { PodSandboxConfig__Output } from '../../src/cri/generated/runtime/v1/PodSandboxConfig.js';
import { isKind } from '../../src/common/errors.js';
import {
  buildContainerSpec,
  cgroupsPathFor,
  processArgs,
  type ContainerSpecInput,
  type ImageConfig,
} from '../../src/oci/container-spec.js';
import { capabilitiesFromMask } from '../../src/oci/capabilities.js';
import {
  ALL_CAPABILITIES,
  DEFAULT_CAPABILITIES,
  DEFAULT_MASKED_PATHS,
  DEFAULT_READONLY_PATHS,
  rlimitsWithin,
} from '../../src/oci/defaults.js';
import type { OciSpec } from '../../src/oci/types.js';

// ---- fixtures: complete __Output messages as the gRPC layer hands them over ----

function securityContext(over: Partial<LinuxContainerSecurityContext__Output> = {}): LinuxContainerSecurityContext__Output {
  return {
    capabilities: null,
    privileged: false,
    namespace_options: null,
    selinux_options: null,
    run_as_user: null,
    run_as_username: '',
    readonly_rootfs: false,
    supplemental_groups: [],
    apparmor_profile: '',
    seccomp_profile_path: '',
    no_new_privs: false,
    run_as_group: null,
    masked_paths: [],
    readonly_paths: [],
    seccomp: null,
    apparmor: null,
    supplemental_groups_policy: 'Merge',
    ...over,
  };
}

function resources(over: Partial<LinuxContainerResources__Output> = {}): LinuxContainerResources__Output {
  return {
    cpu_period: 0,
    cpu_quota: 0,
    cpu_shares: 0,
    memory_limit_in_bytes: 0,
    oom_score_adj: 0,
    cpuset_cpus: '',
    cpuset_mems: '',
    hugepage_limits: [],
    unified: {},
    memory_swap_limit_in_bytes: 0,
    ...over,
  };
}

function nsOptions(over: Partial<NamespaceOption__Output> = {}): NamespaceOption__Output {
  return { network: 'POD', pid: 'CONTAINER', ipc: 'POD', target_id: '', userns_options: null, ...over };
}

function mount(over: Partial<Mount__Output>): Mount__Output {
  return {
    container_path: '',
    host_path: '',
    readonly: false,
    selinux_relabel: false,
    propagation: 'PROPAGATION_PRIVATE',
    uidMappings: [],
    gidMappings: [],
    recursive_read_only: false,
    image: null,
    image_sub_path: '',
    ...over,
  };
}

interface ConfigOverrides extends Partial<ContainerConfig__Output> {
  sc?: Partial<LinuxContainerSecurityContext__Output>;
  res?: Partial<LinuxContainerResources__Output>;
}

function containerConfig(over: ConfigOverrides = {}): ContainerConfig__Output {
  const { sc, res, ...rest } = over;
  return {
    metadata: { name: 'app', attempt: 0 },
    image: { image: 'registry.local/app:1', annotations: {}, user_specified_image: '', runtime_handler: '', image_ref: '' },
    command: [],
    args: [],
    working_dir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    log_path: 'app/0.log',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: { resources: res ? resources(res) : null, security_context: securityContext(sc) },
    windows: null,
    CDI_devices: [],
    stop_signal: 'RUNTIME_DEFAULT',
    ...rest,
  } as ContainerConfig__Output;
}

function sandboxConfig(over: Partial<PodSandboxConfig__Output> = {}): PodSandboxConfig__Output {
  return {
    metadata: { name: 'web', uid: 'uid-1', namespace: 'default', attempt: 0 },
    hostname: 'web-host',
    log_directory: '/var/log/pods/x',
    dns_config: null,
    port_mappings: [],
    labels: {},
    annotations: {},
    linux: null,
    windows: null,
    ...over,
  };
}

const PASSWD = ['root:x:0:0:root:/root:/bin/sh', 'app:x:1000:1000::/home/app:/bin/sh', 'www:x:33:33::/var/www:/bin/sh'].join('\n');
const GROUP = ['root:x:0:', 'app:x:1000:', 'www:x:33:', 'audio:x:29:app,www', 'video:x:44:app', 'staff:x:50:'].join('\n');

function input(config: ContainerConfig__Output, over: Partial<ContainerSpecInput> = {}): ContainerSpecInput {
  return {
    containerId: 'c1',
    sandboxId: 's1',
    config,
    sandboxConfig: sandboxConfig(),
    image: { Entrypoint: ['/entry'], Cmd: ['run'], Env: ['PATH=/bin', 'FOO=image'], WorkingDir: '/srv' },
    rootfsPath: '/var/lib/nodelet/c1/rootfs',
    passwd: PASSWD,
    group: GROUP,
    sandboxPaths: { hostname: '/run/s1/hostname', hosts: '/run/s1/hosts', resolvConf: '/run/s1/resolv.conf', shm: '/run/s1/shm' },
    namespacePaths: { network: '/run/netns/s1', ipc: '/proc/10/ns/ipc', uts: '/proc/10/ns/uts', pid: '/proc/10/ns/pid' },
    arch: 'x64',
    ...over,
  };
}

const build = (over: ConfigOverrides = {}, inputOver: Partial<ContainerSpecInput> = {}): OciSpec =>
  buildContainerSpec(input(containerConfig(over), inputOver));

const throwsInvalid = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (err: unknown) => isKind(err, 'InvalidArgument') && pattern.test((err as Error).message));

// ---- command and args ----

const image: ImageConfig = { Entrypoint: ['/entry', '-v'], Cmd: ['serve'] };
const argCases: Array<{ name: string; command: string[]; args: string[]; want: string[] }> = [
  { name: 'neither: Entrypoint + Cmd', command: [], args: [], want: ['/entry', '-v', 'serve'] },
  { name: 'command only: replaces Entrypoint, drops Cmd', command: ['/bin/sh'], args: [], want: ['/bin/sh'] },
  { name: 'args only: Entrypoint + args', command: [], args: ['debug'], want: ['/entry', '-v', 'debug'] },
  { name: 'command and args', command: ['/bin/sh', '-c'], args: ['echo hi'], want: ['/bin/sh', '-c', 'echo hi'] },
];
for (const c of argCases) {
  test(`process.args: ${c.name}`, () => {
    assert.deepEqual(processArgs(c.command, c.args, image), c.want);
    assert.deepEqual(build({ command: c.command, args: c.args }, { image }).process.args, c.want);
  });
}

test('process.args: nothing anywhere is an invalid argument', () => {
  throwsInvalid(() => build({}, { image: {} }), /no command specified/);
});

test('process.args: args only with an image without Entrypoint', () => {
  assert.deepEqual(processArgs([], ['/bin/true'], { Cmd: ['x'] }), ['/bin/true']);
});

// ---- env, cwd, terminal ----

test('env: CRI envs override image Env by key; HOSTNAME added; image PATH kept', () => {
  const spec = build({ envs: [{ key: 'FOO', value: 'cri' }, { key: 'BAR', value: '1' }] });
  assert.deepEqual(spec.process.env, ['PATH=/bin', 'FOO=cri', 'BAR=1', 'HOSTNAME=web-host']);
});

test('env: PATH default when the image has none; explicit HOSTNAME kept', () => {
  const spec = build({ envs: [{ key: 'HOSTNAME', value: 'mine' }] }, { image: { Cmd: ['x'] } });
  assert.deepEqual(spec.process.env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOSTNAME=mine']);
});

test('cwd: config working_dir, else image WorkingDir, else /; terminal from tty', () => {
  assert.equal(build({ working_dir: '/data', tty: true }).process.cwd, '/data');
  assert.equal(build({ tty: true }).process.terminal, true);
  assert.equal(build().process.cwd, '/srv');
  assert.equal(build({}, { image: { Cmd: ['x'] } }).process.cwd, '/');
});

// ---- user ----

const userCases: Array<{ name: string; imageUser?: string; sc?: Partial<LinuxContainerSecurityContext__Output>; want: { uid: number; gid: number; additionalGids: number[] } }> = [
  { name: 'image User empty → root', imageUser: '', want: { uid: 0, gid: 0, additionalGids: [0] } },
  { name: 'image User uid in passwd', imageUser: '1000', want: { uid: 1000, gid: 1000, additionalGids: [29, 44, 1000] } },
  { name: 'image User uid not in passwd → gid 0', imageUser: '4242', want: { uid: 4242, gid: 0, additionalGids: [0] } },
  { name: 'image User name', imageUser: 'www', want: { uid: 33, gid: 33, additionalGids: [29, 33] } },
  { name: 'image User uid:gid', imageUser: '1000:50', want: { uid: 1000, gid: 50, additionalGids: [29, 44, 50] } },
  { name: 'image User name:group', imageUser: 'app:staff', want: { uid: 1000, gid: 50, additionalGids: [29, 44, 50] } },
  { name: 'run_as_user wins over image User', imageUser: 'www', sc: { run_as_user: { value: 1000 } }, want: { uid: 1000, gid: 1000, additionalGids: [29, 44, 1000] } },
  { name: 'run_as_user 0', imageUser: 'app', sc: { run_as_user: { value: 0 } }, want: { uid: 0, gid: 0, additionalGids: [0] } },
  { name: 'run_as_username', sc: { run_as_username: 'www' }, want: { uid: 33, gid: 33, additionalGids: [29, 33] } },
  { name: 'run_as_group overrides gid', sc: { run_as_user: { value: 5000 }, run_as_group: { value: 3000 } }, want: { uid: 5000, gid: 3000, additionalGids: [3000] } },
  {
    name: 'supplemental_groups merged with memberships',
    sc: { run_as_user: { value: 1000 }, supplemental_groups: [2000, 29] },
    want: { uid: 1000, gid: 1000, additionalGids: [29, 44, 1000, 2000] },
  },
  {
    name: 'Strict policy ignores /etc/group memberships',
    sc: { run_as_user: { value: 1000 }, supplemental_groups: [2000], supplemental_groups_policy: 'Strict' },
    want: { uid: 1000, gid: 1000, additionalGids: [1000, 2000] },
  },
];
for (const c of userCases) {
  test(`user: ${c.name}`, () => {
    const spec = build({ sc: c.sc }, { image: { Cmd: ['x'], User: c.imageUser } });
    assert.deepEqual(spec.process.user, c.want);
  });
}

test('user: unknown names are invalid arguments naming them', () => {
  throwsInvalid(() => build({}, { image: { Cmd: ['x'], User: 'nobody' } }), /"nobody"/);
  throwsInvalid(() => build({ sc: { run_as_username: 'ghost' } }), /run_as_username.*"ghost"/);
  throwsInvalid(() => build({}, { image: { Cmd: ['x'], User: 'app:wheel' } }), /group "wheel"/);
});

test('user: run_as_group without run_as_user or run_as_username is refused, naming the field (critest)', () => {
  throwsInvalid(() => build({ sc: { run_as_group: { value: 1002 } } }), /run_as_group.*without run_as_user/);
  throwsInvalid(() => build({ sc: { run_as_group: { value: 0 } } }, { image: { Cmd: ['x'], User: 'app' } }), /run_as_group/);
  assert.deepEqual(build({ sc: { run_as_username: 'www', run_as_group: { value: 1002 } } }).process.user, { uid: 33, gid: 1002, additionalGids: [29, 1002] });
});

test('user: empty passwd and group files still resolve numeric users', () => {
  const spec = build({}, { image: { Cmd: ['x'], User: '65534:65534' }, passwd: '', group: '' });
  assert.deepEqual(spec.process.user, { uid: 65534, gid: 65534, additionalGids: [65534] });
});

// ---- capabilities ----

const capCases: Array<{ name: string; sc: Partial<LinuxContainerSecurityContext__Output>; has: string[]; lacks: string[]; count?: number }> = [
  { name: 'defaults', sc: {}, has: [...DEFAULT_CAPABILITIES], lacks: ['CAP_SYS_ADMIN', 'CAP_NET_ADMIN'], count: DEFAULT_CAPABILITIES.length },
  {
    name: 'add with and without CAP_ prefix',
    sc: { capabilities: { add_capabilities: ['NET_ADMIN', 'CAP_SYS_TIME'], drop_capabilities: [], add_ambient_capabilities: [] } },
    has: ['CAP_NET_ADMIN', 'CAP_SYS_TIME', 'CAP_CHOWN'],
    lacks: ['CAP_SYS_ADMIN'],
  },
  {
    name: 'drop',
    sc: { capabilities: { add_capabilities: [], drop_capabilities: ['NET_RAW', 'cap_mknod'], add_ambient_capabilities: [] } },
    has: ['CAP_CHOWN'],
    lacks: ['CAP_NET_RAW', 'CAP_MKNOD'],
    count: DEFAULT_CAPABILITIES.length - 2,
  },
  {
    name: 'add ALL',
    sc: { capabilities: { add_capabilities: ['ALL'], drop_capabilities: ['SYS_BOOT'], add_ambient_capabilities: [] } },
    has: ['CAP_SYS_ADMIN', 'CAP_BPF'],
    lacks: ['CAP_SYS_BOOT'],
    count: ALL_CAPABILITIES.length - 1,
  },
  {
    name: 'drop ALL then add',
    sc: { capabilities: { add_capabilities: ['NET_BIND_SERVICE'], drop_capabilities: ['ALL'], add_ambient_capabilities: [] } },
    has: ['CAP_NET_BIND_SERVICE'],
    lacks: ['CAP_CHOWN'],
    count: 1,
  },
  {
    name: 'privileged gets everything',
    sc: { privileged: true, capabilities: { add_capabilities: [], drop_capabilities: ['ALL'], add_ambient_capabilities: [] } },
    has: ['CAP_SYS_ADMIN', 'CAP_SYS_MODULE'],
    lacks: [],
    count: ALL_CAPABILITIES.length,
  },
];
for (const c of capCases) {
  test(`capabilities: ${c.name}`, () => {
    const caps = build({ sc: c.sc }).process.capabilities!;
    for (const set of [caps.bounding, caps.effective, caps.permitted]) {
      for (const h of c.has) assert.ok(set.includes(h), `${h} expected`);
      for (const l of c.lacks) assert.ok(!set.includes(l), `${l} not expected`);
      if (c.count !== undefined) assert.equal(set.length, c.count);
    }
    assert.deepEqual(caps.inheritable, []);
    assert.deepEqual(caps.ambient, []);
  });
}

test('capabilities: privileged and ADD ALL mean the available set', () => {
  const available = ['CAP_CHOWN', 'CAP_SYS_ADMIN'];
  assert.deepEqual(build({ sc: { privileged: true } }, { availableCapabilities: available }).process.capabilities!.bounding, available);
  const addAll = { capabilities: { add_capabilities: ['ALL'], drop_capabilities: ['CHOWN'], add_ambient_capabilities: [] } };
  assert.deepEqual(build({ sc: addAll }, { availableCapabilities: available }).process.capabilities!.bounding, ['CAP_SYS_ADMIN']);
});

test('capabilities: decoding a /proc status mask', () => {
  assert.deepEqual(capabilitiesFromMask('0000000000000003'), ['CAP_CHOWN', 'CAP_DAC_OVERRIDE']);
  const all = capabilitiesFromMask('000001fffeffffff');
  assert.equal(all.length, ALL_CAPABILITIES.length - 1);
  assert.ok(!all.includes('CAP_SYS_RESOURCE'));
});

test('rlimits: default NOFILE, capped by the daemon limit, or given', () => {
  assert.deepEqual(build().process.rlimits, [{ type: 'RLIMIT_NOFILE', hard: 1048576, soft: 1048576 }]);
  assert.deepEqual(rlimitsWithin(20000), [{ type: 'RLIMIT_NOFILE', hard: 20000, soft: 20000 }]);
  assert.deepEqual(build({}, { rlimits: rlimitsWithin(4096) }).process.rlimits, [{ type: 'RLIMIT_NOFILE', hard: 4096, soft: 4096 }]);
});

test('capabilities: unknown name is an invalid argument', () => {
  throwsInvalid(
    () => build({ sc: { capabilities: { add_capabilities: ['FLY'], drop_capabilities: [], add_ambient_capabilities: [] } } }),
    /add_capabilities.*"FLY"/,
  );
});

test('capabilities: ambient ones are inheritable and permitted too', () => {
  const caps = build({ sc: { capabilities: { add_capabilities: [], drop_capabilities: [], add_ambient_capabilities: ['NET_ADMIN'] } } })
    .process.capabilities!;
  assert.deepEqual(caps.ambient, ['CAP_NET_ADMIN']);
  assert.deepEqual(caps.inheritable, ['CAP_NET_ADMIN']);
  assert.ok(caps.permitted.includes('CAP_NET_ADMIN'));
});

test('no_new_privs and readonly rootfs', () => {
  const spec = build({ sc: { no_new_privs: true, readonly_rootfs: true } });
  assert.equal(spec.process.noNewPrivileges, true);
  assert.deepEqual(spec.root, { path: '/var/lib/nodelet/c1/rootfs', readonly: true });
  // the sandbox's files follow the rootfs
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/etc/hosts')!.options, ['rbind', 'rprivate', 'ro']);
  assert.equal(build().root.readonly, false);
});

// ---- masked and readonly paths ----

test('masked/readonly paths: defaults, given, privileged', () => {
  const def = build();
  assert.deepEqual(def.linux.maskedPaths, [...DEFAULT_MASKED_PATHS]);
  assert.deepEqual(def.linux.readonlyPaths, [...DEFAULT_READONLY_PATHS]);
  const given = build({ sc: { masked_paths: ['/proc/kcore'], readonly_paths: ['/proc/sys'] } });
  assert.deepEqual(given.linux.maskedPaths, ['/proc/kcore']);
  assert.deepEqual(given.linux.readonlyPaths, ['/proc/sys']);
  const priv = build({ sc: { privileged: true, masked_paths: ['/proc/kcore'] } });
  assert.equal(priv.linux.maskedPaths, undefined);
  assert.equal(priv.linux.readonlyPaths, undefined);
});

// ---- mounts ----

test('mounts: defaults, sandbox files, shm bind, /sys read-only', () => {
  const spec = build();
  const dests = spec.mounts.map((m) => m.destination);
  for (const d of ['/proc', '/dev', '/dev/pts', '/dev/shm', '/dev/mqueue', '/sys', '/sys/fs/cgroup', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf']) {
    assert.ok(dests.includes(d), d);
  }
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/dev/shm'), {
    destination: '/dev/shm',
    type: 'bind',
    source: '/run/s1/shm',
    options: ['rbind', 'rprivate', 'rw'],
  });
  assert.ok(spec.mounts.find((m) => m.destination === '/sys')!.options!.includes('ro'));
  assert.ok(spec.mounts.find((m) => m.destination === '/sys/fs/cgroup')!.options!.includes('ro'));
  const priv = build({ sc: { privileged: true } });
  assert.ok(priv.mounts.find((m) => m.destination === '/sys/fs/cgroup')!.options!.includes('rw'));
});

test('mounts: without a sandbox shm dir /dev/shm is a private tmpfs', () => {
  const spec = build({}, { sandboxPaths: {} });
  assert.equal(spec.mounts.find((m) => m.destination === '/dev/shm')!.type, 'tmpfs');
  assert.equal(spec.mounts.find((m) => m.destination === '/etc/hosts'), undefined);
});

const propagationCases = [
  { propagation: 'PROPAGATION_PRIVATE' as const, option: 'rprivate', rootfs: undefined },
  { propagation: 'PROPAGATION_HOST_TO_CONTAINER' as const, option: 'rslave', rootfs: 'rslave' },
  { propagation: 'PROPAGATION_BIDIRECTIONAL' as const, option: 'rshared', rootfs: 'rshared' },
];
for (const c of propagationCases) {
  test(`mounts: ${c.propagation} → ${c.option}`, () => {
    const spec = build({ mounts: [mount({ container_path: '/data', host_path: '/srv/data', readonly: true, propagation: c.propagation })] });
    assert.deepEqual(spec.mounts.find((m) => m.destination === '/data'), {
      destination: '/data',
      type: 'bind',
      source: '/srv/data',
      options: ['rbind', c.option, 'ro'],
    });
    assert.equal(spec.linux.rootfsPropagation, c.rootfs);
  });
}

test('mounts: bidirectional wins over host-to-container for rootfs propagation', () => {
  const spec = build({
    mounts: [
      mount({ container_path: '/a', host_path: '/ha', propagation: 'PROPAGATION_BIDIRECTIONAL' }),
      mount({ container_path: '/b', host_path: '/hb', propagation: 'PROPAGATION_HOST_TO_CONTAINER' }),
    ],
  });
  assert.equal(spec.linux.rootfsPropagation, 'rshared');
});

test('mounts: a CRI mount replaces the default at the same destination', () => {
  const spec = build({ mounts: [mount({ container_path: '/etc/hosts/', host_path: '/kubelet/etc-hosts' })] });
  const hosts = spec.mounts.filter((m) => m.destination === '/etc/hosts');
  assert.equal(hosts.length, 1);
  assert.equal(hosts[0].source, '/kubelet/etc-hosts');
});

test('mounts: parents mount before children whatever the CRI order', () => {
  const spec = build({
    mounts: [
      mount({ container_path: '/var/lib/app/cache', host_path: '/h/cache' }),
      mount({ container_path: '/var/lib/app', host_path: '/h/app' }),
      mount({ container_path: '/var', host_path: '/h/var' }),
    ],
  });
  const order = spec.mounts.map((m) => m.destination);
  assert.ok(order.indexOf('/var') < order.indexOf('/var/lib/app'));
  assert.ok(order.indexOf('/var/lib/app') < order.indexOf('/var/lib/app/cache'));
  assert.ok(order.indexOf('/dev') < order.indexOf('/dev/pts'));
  assert.ok(order.indexOf('/sys') < order.indexOf('/sys/fs/cgroup'));
});

test('mounts: relative container path and empty host path are invalid', () => {
  throwsInvalid(() => build({ mounts: [mount({ container_path: 'data', host_path: '/h' })] }), /mounts\[0\].*not absolute/);
  throwsInvalid(() => build({ mounts: [mount({ container_path: '/data', host_path: '' })] }), /mounts\[0\]: host_path/);
});

test('mounts: recursive_read_only (critest) is rro on a handler that has it; refused otherwise, naming why', () => {
  const rro = (over: Partial<Mount__Output> = {}) => mount({ container_path: '/mnt', host_path: '/h', readonly: true, recursive_read_only: true, ...over });
  const spec = build({ mounts: [rro()] }, { recursiveReadOnlyMounts: true });
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/mnt')!.options, ['rbind', 'rprivate', 'ro', 'rro']);
  const plain = build({ mounts: [mount({ container_path: '/mnt', host_path: '/h', readonly: true })] }, { recursiveReadOnlyMounts: true });
  assert.deepEqual(plain.mounts.find((m) => m.destination === '/mnt')!.options, ['rbind', 'rprivate', 'ro']);
  throwsInvalid(() => build({ mounts: [rro()] }), /mounts\[0\]: recursive_read_only is not supported/);
  throwsInvalid(() => build({ mounts: [rro({ readonly: false })] }, { recursiveReadOnlyMounts: true }), /mounts\[0\]: recursive_read_only needs readonly/);
  for (const propagation of ['PROPAGATION_HOST_TO_CONTAINER', 'PROPAGATION_BIDIRECTIONAL'] as const) {
    throwsInvalid(() => build({ mounts: [rro({ propagation })] }, { recursiveReadOnlyMounts: true }), new RegExp(`needs PROPAGATION_PRIVATE, not ${propagation}`));
  }
});

// ---- devices ----

test('devices: config devices become linux.devices and cgroup allow rules', () => {
  const spec = build(
    { devices: [{ container_path: '/dev/fuse', host_path: '/dev/fuse', permissions: 'rw' }] },
    { hostDevices: { '/dev/fuse': { type: 'c', major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0 } } },
  );
  assert.deepEqual(spec.linux.devices, [{ path: '/dev/fuse', type: 'c', major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0 }]);
  const rules = spec.linux.resources!.devices!;
  assert.deepEqual(rules[0], { allow: false, access: 'rwm' });
  assert.deepEqual(rules.at(-1), { allow: true, type: 'c', major: 10, minor: 229, access: 'rw' });
  throwsInvalid(() => build({ devices: [{ container_path: '/dev/x', host_path: '/dev/x', permissions: 'rwm' }] }), /\/dev\/x not found/);
});

test('devices: privileged allows every device', () => {
  assert.deepEqual(build({ sc: { privileged: true } }).linux.resources!.devices, [{ allow: true, access: 'rwm' }]);
});

// ---- resources ----

test('resources: cpu, memory, hugepages', () => {
  const spec = build({
    res: {
      cpu_shares: 512,
      cpu_quota: 50000,
      cpu_period: 100000,
      cpuset_cpus: '0-1',
      memory_limit_in_bytes: 64 << 20,
      memory_swap_limit_in_bytes: 128 << 20,
      hugepage_limits: [{ page_size: '2MB', limit: 0 }],
      oom_score_adj: 900,
    },
  });
  const r = spec.linux.resources!;
  assert.deepEqual(r.cpu, { shares: 512, quota: 50000, period: 100000, cpus: '0-1' });
  assert.deepEqual(r.memory, { limit: 64 << 20, swap: 128 << 20 });
  assert.deepEqual(r.hugepageLimits, [{ pageSize: '2MB', limit: 0 }]);
  assert.equal(spec.process.oomScoreAdj, 900);
});

// The kubelet's request: limit 0 for every page size the kernel lists.
const kubeletHugepages = [{ page_size: '2MB', limit: 0 }, { page_size: '1GB', limit: 0 }];
const hugetlbCases = [
  { name: 'controller present → limits kept', hugetlbController: true, want: [{ pageSize: '2MB', limit: 0 }, { pageSize: '1GB', limit: 0 }] },
  { name: 'not known (default) → limits kept', hugetlbController: undefined, want: [{ pageSize: '2MB', limit: 0 }, { pageSize: '1GB', limit: 0 }] },
  { name: 'controller missing → limits dropped', hugetlbController: false, want: undefined },
];
for (const c of hugetlbCases) {
  test(`resources: hugepage limits, ${c.name}`, () => {
    const spec = build({ res: { hugepage_limits: kubeletHugepages, cpu_shares: 2 } }, { hugetlbController: c.hugetlbController });
    assert.deepEqual(spec.linux.resources!.hugepageLimits, c.want);
    assert.deepEqual(spec.linux.resources!.cpu, { shares: 2 }, 'the rest of the resources stays');
  });
}

test('resources: none given → no cpu/memory and no oomScoreAdj', () => {
  const spec = build();
  assert.equal(spec.linux.resources!.cpu, undefined);
  assert.equal(spec.linux.resources!.memory, undefined);
  assert.equal(spec.process.oomScoreAdj, undefined);
});

const oomCases = [
  { value: -997, restrict: false, want: -997 },
  { value: -997, restrict: true, want: 0 },
  { value: 1000, restrict: true, want: 1000 },
];
for (const c of oomCases) {
  test(`resources: oom_score_adj ${c.value} restrict=${c.restrict} → ${c.want}`, () => {
    assert.equal(build({ res: { oom_score_adj: c.value } }, { restrictOomScoreAdj: c.restrict }).process.oomScoreAdj, c.want);
  });
}

test('resources: unified only on cgroup v2', () => {
  const res = { unified: { 'memory.high': '1000000' } };
  assert.equal(build({ res }).linux.resources!.unified, undefined);
  assert.deepEqual(build({ res }, { cgroupV2: true }).linux.resources!.unified, { 'memory.high': '1000000' });
});

// ---- namespaces ----

const nsCases: Array<{ name: string; opts: Partial<NamespaceOption__Output>; want: Array<[string, string | undefined]> }> = [
  {
    name: 'pod network/ipc, CONTAINER pid',
    opts: {},
    want: [['mount', undefined], ['network', '/run/netns/s1'], ['uts', '/proc/10/ns/uts'], ['ipc', '/proc/10/ns/ipc'], ['pid', undefined]],
  },
  {
    name: 'POD pid joins the sandbox',
    opts: { pid: 'POD' },
    want: [['mount', undefined], ['network', '/run/netns/s1'], ['uts', '/proc/10/ns/uts'], ['ipc', '/proc/10/ns/ipc'], ['pid', '/proc/10/ns/pid']],
  },
  {
    name: 'NODE everything: only mount',
    opts: { network: 'NODE', ipc: 'NODE', pid: 'NODE' },
    want: [['mount', undefined]],
  },
  {
    name: 'TARGET pid joins the given path',
    opts: { pid: 'TARGET', target_id: 'c0' },
    want: [['mount', undefined], ['network', '/run/netns/s1'], ['uts', '/proc/10/ns/uts'], ['ipc', '/proc/10/ns/ipc'], ['pid', '/proc/10/ns/pid']],
  },
  {
    name: 'CONTAINER ipc gets its own',
    opts: { ipc: 'CONTAINER', network: 'NODE' },
    want: [['mount', undefined], ['ipc', undefined], ['pid', undefined]],
  },
];
for (const c of nsCases) {
  test(`namespaces: ${c.name}`, () => {
    const spec = build({ sc: { namespace_options: nsOptions(c.opts) } });
    assert.deepEqual(spec.linux.namespaces.map((n) => [n.type, n.path]), c.want);
  });
}

test('namespaces: cgroup namespace on v2 only; hostname only with pod UTS', () => {
  assert.ok(build({}, { cgroupV2: true }).linux.namespaces.some((n) => n.type === 'cgroup'));
  assert.ok(!build().linux.namespaces.some((n) => n.type === 'cgroup'));
  assert.equal(build().hostname, 'web-host');
  assert.equal(build({ sc: { namespace_options: nsOptions({ network: 'NODE' }) } }).hostname, undefined);
});

test('namespaces: missing sandbox path is an internal error', () => {
  assert.throws(() => build({}, { namespacePaths: {} }), (err: unknown) => isKind(err, 'Internal'));
});

// ---- seccomp, apparmor ----

test('seccomp: unset → none, RuntimeDefault → ours, privileged → none', () => {
  assert.equal(build().linux.seccomp, undefined);
  const rd = build({ sc: { seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } } }).linux.seccomp!;
  assert.equal(rd.defaultAction, 'SCMP_ACT_ERRNO');
  assert.ok(rd.syscalls!.some((s) => s.names.includes('read')));
  assert.equal(
    build({ sc: { privileged: true, seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } } }).linux.seccomp,
    undefined,
  );
});

test('seccomp: Localhost uses the passed content', () => {
  const spec = build(
    { sc: { seccomp: { profile_type: 'Localhost', localhost_ref: '/etc/seccomp/p.json' } } },
    { seccompLocalhostProfile: JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW' }) },
  );
  assert.deepEqual(spec.linux.seccomp, { defaultAction: 'SCMP_ACT_ALLOW' });
});

test('apparmor: only when the host has it', () => {
  assert.equal(build().process.apparmorProfile, undefined);
  const host = { appArmor: { defaultProfile: 'nodelet-default' } };
  assert.equal(build({}, host).process.apparmorProfile, 'nodelet-default');
  assert.equal(build({ sc: { apparmor: { profile_type: 'Unconfined', localhost_ref: '' } } }, host).process.apparmorProfile, undefined);
  assert.equal(build({ sc: { apparmor: { profile_type: 'Localhost', localhost_ref: 'my-prof' } } }, host).process.apparmorProfile, 'my-prof');
  assert.equal(build({ sc: { privileged: true } }, host).process.apparmorProfile, undefined);
});

// ---- cgroups path, annotations, sysctls ----

const cgroupCases = [
  { parent: undefined, want: '/nodelet/c1' },
  { parent: '/kubepods/burstable/pod123', want: '/kubepods/burstable/pod123/c1' },
  { parent: 'kubepods/besteffort', want: '/kubepods/besteffort/c1' },
  { parent: 'kubepods-burstable-pod123.slice', want: 'kubepods-burstable-pod123.slice:nodelet:c1' },
];
for (const c of cgroupCases) {
  test(`cgroupsPath: parent ${c.parent ?? '(none)'} → ${c.want}`, () => {
    assert.equal(cgroupsPathFor(c.parent, 'c1'), c.want);
    assert.equal(build({}, { cgroupParent: c.parent }).linux.cgroupsPath, c.want);
  });
}

test('annotations: containerd names plus config annotations; sysctls from the sandbox', () => {
  const spec = build(
    { annotations: { 'team': 'a', 'io.kubernetes.cri.container-type': 'spoofed' } },
    { sandboxConfig: sandboxConfig({ linux: { cgroup_parent: '', security_context: null, sysctls: { 'net.ipv4.ip_forward': '1' }, overhead: null, resources: null } }) },
  );
  assert.deepEqual(spec.annotations, {
    team: 'a',
    'io.kubernetes.cri.container-type': 'container',
    'io.kubernetes.cri.sandbox-id': 's1',
    'io.kubernetes.cri.sandbox-name': 'web',
    'io.kubernetes.cri.sandbox-namespace': 'default',
    'io.kubernetes.cri.sandbox-uid': 'uid-1',
    'io.kubernetes.cri.container-name': 'app',
    'io.kubernetes.cri.image-name': 'registry.local/app:1',
  });
  assert.deepEqual(spec.linux.sysctl, { 'net.ipv4.ip_forward': '1' });
  assert.equal(spec.ociVersion, '1.0.2');
});
