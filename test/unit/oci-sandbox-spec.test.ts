import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LinuxSandboxSecurityContext__Output } from '../../src/cri/generated/runtime/v1/LinuxSandboxSecurityContext.js';
import type { NamespaceOption__Output } from '../../src/cri/generated/runtime/v1/NamespaceOption.js';
import type { PodSandboxConfig__Output } from '../../src/cri/generated/runtime/v1/PodSandboxConfig.js';
import { isKind } from '../../src/common/errors.js';
import { DEFAULT_CAPABILITIES } from '../../src/oci/defaults.js';
import { buildSandboxSpec, type SandboxSpecInput } from '../../src/oci/sandbox-spec.js';
import type { OciSpec } from '../../src/oci/types.js';

function securityContext(over: Partial<LinuxSandboxSecurityContext__Output> = {}): LinuxSandboxSecurityContext__Output {
  return {
    namespace_options: null,
    selinux_options: null,
    run_as_user: null,
    readonly_rootfs: false,
    supplemental_groups: [],
    privileged: false,
    seccomp_profile_path: '',
    run_as_group: null,
    seccomp: null,
    apparmor: null,
    supplemental_groups_policy: 'Merge',
    ...over,
  };
}

const ns = (over: Partial<NamespaceOption__Output>): NamespaceOption__Output => ({
  network: 'POD',
  pid: 'CONTAINER',
  ipc: 'POD',
  target_id: '',
  userns_options: null,
  ...over,
});

function config(sc: Partial<LinuxSandboxSecurityContext__Output> = {}, over: Partial<PodSandboxConfig__Output> = {}): PodSandboxConfig__Output {
  return {
    metadata: { name: 'web', uid: 'uid-1', namespace: 'default', attempt: 0 },
    hostname: 'web-host',
    log_directory: '/var/log/pods/default_web_uid-1',
    dns_config: null,
    port_mappings: [],
    labels: {},
    annotations: { 'kubernetes.io/config.source': 'api' },
    linux: { cgroup_parent: '/kubepods/podUID', security_context: securityContext(sc), sysctls: {}, overhead: null, resources: null },
    windows: null,
    ...over,
  };
}

function build(c: PodSandboxConfig__Output = config(), over: Partial<SandboxSpecInput> = {}): OciSpec {
  return buildSandboxSpec({
    sandboxId: 's1',
    config: c,
    rootfsPath: '/var/lib/nodelet/sandboxes/s1/rootfs',
    pausePath: '/pause',
    netnsPath: '/run/netns/cni-s1',
    shmPath: '/run/nodelet/sandboxes/s1/shm',
    arch: 'x64',
    ...over,
  });
}

const nsList = (spec: OciSpec) => spec.linux.namespaces.map((n) => (n.path ? `${n.type}=${n.path}` : n.type));

const nsCases: Array<{ name: string; opts: Partial<NamespaceOption__Output> | null; netnsPath?: string; want: string[]; hostname?: string }> = [
  {
    name: 'pod network joins the CNI netns',
    opts: null,
    want: ['mount', 'network=/run/netns/cni-s1', 'uts', 'ipc', 'pid'],
    hostname: 'web-host',
  },
  {
    name: 'pod network without a netns file gets a new one',
    opts: null,
    netnsPath: '',
    want: ['mount', 'network', 'uts', 'ipc', 'pid'],
    hostname: 'web-host',
  },
  { name: 'host network: no net or uts namespace, no hostname', opts: { network: 'NODE' }, want: ['mount', 'ipc', 'pid'] },
  { name: 'host ipc', opts: { ipc: 'NODE' }, want: ['mount', 'network=/run/netns/cni-s1', 'uts', 'pid'], hostname: 'web-host' },
  { name: 'POD pid: own pid namespace', opts: { pid: 'POD' }, want: ['mount', 'network=/run/netns/cni-s1', 'uts', 'ipc', 'pid'], hostname: 'web-host' },
  { name: 'host pid', opts: { pid: 'NODE' }, want: ['mount', 'network=/run/netns/cni-s1', 'uts', 'ipc'], hostname: 'web-host' },
  { name: 'everything host', opts: { network: 'NODE', ipc: 'NODE', pid: 'NODE' }, want: ['mount'] },
];
for (const c of nsCases) {
  test(`sandbox namespaces: ${c.name}`, () => {
    const spec = build(config({ namespace_options: c.opts ? ns(c.opts) : null }), c.netnsPath !== undefined ? { netnsPath: c.netnsPath } : {});
    assert.deepEqual(nsList(spec), c.want);
    assert.equal(spec.hostname, c.hostname);
  });
}

test('sandbox: pause process, readonly rootfs, defaults', () => {
  const spec = build();
  assert.deepEqual(spec.process.args, ['/pause']);
  assert.equal(spec.root.readonly, true);
  assert.deepEqual(spec.process.user, { uid: 0, gid: 0, additionalGids: [0] });
  assert.deepEqual(spec.process.capabilities!.effective, spec.process.capabilities!.bounding);
  assert.equal(spec.process.capabilities!.bounding.length, DEFAULT_CAPABILITIES.length);
  assert.equal(spec.process.oomScoreAdj, -998);
  assert.equal(spec.linux.cgroupsPath, '/kubepods/podUID/s1');
  assert.deepEqual(spec.linux.resources!.cpu, { shares: 2 });
  assert.equal(spec.linux.seccomp, undefined);
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/dev/shm')!.source, '/run/nodelet/sandboxes/s1/shm');
  assert.equal(spec.annotations!['io.kubernetes.cri.container-type'], 'sandbox');
  assert.equal(spec.annotations!['io.kubernetes.cri.sandbox-log-directory'], '/var/log/pods/default_web_uid-1');
  assert.equal(spec.annotations!['kubernetes.io/config.source'], 'api');
});

test('sandbox: oom_score_adj clamped under restriction; cgroup parent override; systemd slice', () => {
  assert.equal(build(config(), { restrictOomScoreAdj: true }).process.oomScoreAdj, 0);
  assert.equal(build(config(), { cgroupParent: '/other' }).linux.cgroupsPath, '/other/s1');
  assert.equal(build(config(), { cgroupParent: 'kubepods.slice' }).linux.cgroupsPath, 'kubepods.slice:nodelet:s1');
});

test('sandbox: run_as_user / run_as_group, seccomp and sysctls from the security context', () => {
  const spec = build(
    config(
      { run_as_user: { value: 65535 }, run_as_group: { value: 65535 }, supplemental_groups: [10], seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } },
      {},
    ),
  );
  assert.deepEqual(spec.process.user, { uid: 65535, gid: 65535, additionalGids: [10, 65535] });
  assert.equal(spec.linux.seccomp!.defaultAction, 'SCMP_ACT_ERRNO');
  const withSysctl = config();
  withSysctl.linux!.sysctls = { 'net.core.somaxconn': '1024' };
  assert.deepEqual(build(withSysctl).linux.sysctl, { 'net.core.somaxconn': '1024' });
});

test('sandbox: privileged gets all devices and no masked paths', () => {
  const spec = build(config({ privileged: true }));
  assert.deepEqual(spec.linux.resources!.devices, [{ allow: true, access: 'rwm' }]);
  assert.equal(spec.linux.maskedPaths, undefined);
});

test('sandbox: relative pause path is invalid', () => {
  assert.throws(() => build(config(), { pausePath: 'pause' }), (e: unknown) => isKind(e, 'InvalidArgument'));
});
