// Proves runc 1.1 accepts the JSON the builders emit, including our seccomp profile:
// a busybox rootfs, a built spec, `runc run`, and the process's own view of its uid and caps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/common/exec.js';
import type { ContainerConfig__Output } from '../../src/cri/generated/runtime/v1/ContainerConfig.js';
import type { PodSandboxConfig__Output } from '../../src/cri/generated/runtime/v1/PodSandboxConfig.js';
import { capabilitiesFromMask } from '../../src/oci/capabilities.js';
import { buildContainerSpec } from '../../src/oci/container-spec.js';
import { rlimitsWithin } from '../../src/oci/defaults.js';
import { buildSandboxSpec } from '../../src/oci/sandbox-spec.js';
import type { OciSpec } from '../../src/oci/types.js';

/** What this process may hand on to runc: its own capabilities and hard NOFILE limit. */
async function daemonLimits() {
  const status = await readFile('/proc/self/status', 'utf8');
  const limits = await readFile('/proc/self/limits', 'utf8');
  const capEff = /^CapEff:\s+([0-9a-f]+)/m.exec(status)![1];
  const nofile = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)![1];
  return {
    capEff,
    availableCapabilities: capabilitiesFromMask(capEff),
    rlimits: rlimitsWithin(nofile === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(nofile)),
  };
}

const APPLETS = ['sh', 'id', 'cat', 'grep', 'unshare'];
const CGROUP_ROOT = '/sys/fs/cgroup';

async function makeBundle(dir: string): Promise<string> {
  const rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
  for (const applet of APPLETS) await symlink('busybox', join(rootfs, 'bin', applet));
  return rootfs;
}

/** Removes the cgroup directories runc left under `parent` in every v1 hierarchy (and the v2 one). */
async function removeCgroupParent(parent: string): Promise<void> {
  const rmTree = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await rmTree(join(dir, e.name));
    await rmdir(dir).catch(() => {});
  };
  for (const hierarchy of await readdir(CGROUP_ROOT)) await rmTree(join(CGROUP_ROOT, hierarchy, parent));
}

function containerConfig(): ContainerConfig__Output {
  return {
    metadata: { name: 'probe', attempt: 0 },
    image: { image: 'local/busybox', annotations: {}, user_specified_image: '', runtime_handler: '', image_ref: '' },
    command: ['/bin/sh', '-c'],
    // A user namespace needs no capability, so only the seccomp filter can refuse it.
    args: ['id; grep -E "^(CapEff|Seccomp):" /proc/self/status; unshare -U true 2>/dev/null && echo userns=allowed || echo userns=refused'],
    working_dir: '',
    envs: [{ key: 'GREETING', value: 'hi' }],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    log_path: '',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: {
      resources: {
        cpu_period: 100000,
        cpu_quota: 50000,
        cpu_shares: 256,
        memory_limit_in_bytes: 64 * 1024 * 1024,
        oom_score_adj: 500,
        cpuset_cpus: '',
        cpuset_mems: '',
        hugepage_limits: [],
        unified: {},
        memory_swap_limit_in_bytes: 0,
      },
      security_context: {
        capabilities: { add_capabilities: [], drop_capabilities: ['NET_RAW', 'MKNOD'], add_ambient_capabilities: [] },
        privileged: false,
        // host network keeps the test free of sandbox namespace files; ipc and pid are the container's own
        namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'CONTAINER', target_id: '', userns_options: null },
        selinux_options: null,
        run_as_user: { value: 1000 },
        run_as_username: '',
        readonly_rootfs: true,
        supplemental_groups: [3000],
        apparmor_profile: '',
        seccomp_profile_path: '',
        no_new_privs: true,
        run_as_group: { value: 1000 },
        masked_paths: [],
        readonly_paths: [],
        seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' },
        apparmor: null,
        supplemental_groups_policy: 'Merge',
      },
    },
    windows: null,
    CDI_devices: [],
    stop_signal: 'RUNTIME_DEFAULT',
  };
}

function sandboxConfig(): PodSandboxConfig__Output {
  return {
    metadata: { name: 'probe-pod', uid: 'u1', namespace: 'test', attempt: 0 },
    hostname: 'probe-pod',
    log_directory: '',
    dns_config: null,
    port_mappings: [],
    labels: {},
    annotations: {},
    linux: {
      cgroup_parent: '',
      security_context: {
        namespace_options: null,
        selinux_options: null,
        run_as_user: { value: 65535 },
        readonly_rootfs: true,
        supplemental_groups: [],
        privileged: false,
        seccomp_profile_path: '',
        run_as_group: null,
        seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' },
        apparmor: null,
        supplemental_groups_policy: 'Merge',
      },
      sysctls: {},
      overhead: null,
      resources: null,
    },
    windows: null,
  };
}

async function runcRun(stateRoot: string, bundle: string, id: string, spec: OciSpec) {
  await writeFile(join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
  try {
    return await run('runc', ['--root', stateRoot, 'run', '--bundle', bundle, id], { reject: false, timeoutMs: 30_000 });
  } finally {
    await run('runc', ['--root', stateRoot, 'delete', '-f', id], { reject: false });
  }
}

test('runc runs a built container spec: non-root, dropped caps, RuntimeDefault seccomp', async () => {
  const suffix = randomBytes(4).toString('hex');
  const dir = await mkdtemp(join(tmpdir(), 'nodelet-oci-runc-'));
  const cgroupParent = `/nodelet-oci-test-${suffix}`;
  try {
    const bundle = join(dir, 'bundle');
    const rootfs = await makeBundle(bundle);
    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nprobe:x:1000:1000::/:/bin/sh\n');
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nprobe:x:1000:\nextra:x:2000:probe\n');
    const spec = buildContainerSpec({
      containerId: `c-${suffix}`,
      sandboxId: `s-${suffix}`,
      config: containerConfig(),
      sandboxConfig: sandboxConfig(),
      image: { Env: ['PATH=/bin'] },
      rootfsPath: rootfs,
      passwd: 'root:x:0:0:root:/root:/bin/sh\nprobe:x:1000:1000::/:/bin/sh\n',
      group: 'root:x:0:\nprobe:x:1000:\nextra:x:2000:probe\n',
      sandboxPaths: {},
      namespacePaths: {},
      cgroupParent,
      restrictOomScoreAdj: true,
      ...(await daemonLimits()),
    });
    assert.ok(spec.linux.seccomp, 'spec carries a seccomp profile');

    const res = await runcRun(join(dir, 'runc-state'), bundle, `nodelet-oci-test-${suffix}`, spec);
    assert.equal(res.exitCode, 0, `runc failed: ${res.stderr}${res.stdout}`);
    assert.match(res.stdout, /uid=1000\(probe\) gid=1000\(probe\)/);
    assert.match(res.stdout, /groups=.*1000.*2000.*3000/);
    assert.match(res.stdout, /CapEff:\s+0000000000000000/);
    assert.match(res.stdout, /Seccomp:\s+2/);
    assert.match(res.stdout, /userns=refused/);
  } finally {
    await removeCgroupParent(cgroupParent);
    await rm(dir, { recursive: true, force: true });
  }
});

test('runc runs a built sandbox spec: own namespaces, hostname, readonly rootfs', async () => {
  const suffix = randomBytes(4).toString('hex');
  const dir = await mkdtemp(join(tmpdir(), 'nodelet-oci-runc-'));
  const cgroupParent = `/nodelet-oci-test-${suffix}`;
  try {
    const bundle = join(dir, 'bundle');
    const rootfs = await makeBundle(bundle);
    // A shell script stands in for the pause binary: it reports and exits.
    await writeFile(join(rootfs, 'probe'), '#!/bin/sh\ncat /proc/sys/kernel/hostname; id -u; cat /proc/self/oom_score_adj\n', { mode: 0o755 });
    const spec = buildSandboxSpec({
      sandboxId: `s-${suffix}`,
      config: sandboxConfig(),
      rootfsPath: rootfs,
      pausePath: '/probe',
      cgroupParent,
      restrictOomScoreAdj: true,
      ...(await daemonLimits()),
    });
    const res = await runcRun(join(dir, 'runc-state'), bundle, `nodelet-oci-sbx-${suffix}`, spec);
    assert.equal(res.exitCode, 0, `runc failed: ${res.stderr}${res.stdout}`);
    assert.deepEqual(res.stdout.trim().split('\n'), ['probe-pod', '65535', '0']);
  } finally {
    await removeCgroupParent(cgroupParent);
    await rm(dir, { recursive: true, force: true });
  }
});

test('runc runs a privileged container spec with every capability the daemon holds', async () => {
  const suffix = randomBytes(4).toString('hex');
  const dir = await mkdtemp(join(tmpdir(), 'nodelet-oci-runc-'));
  const cgroupParent = `/nodelet-oci-test-${suffix}`;
  try {
    const bundle = join(dir, 'bundle');
    const rootfs = await makeBundle(bundle);
    const config = containerConfig();
    const sc = config.linux!.security_context!;
    sc.privileged = true;
    sc.run_as_user = { value: 0 };
    sc.run_as_group = null;
    sc.readonly_rootfs = false;
    config.args = ['grep -E "^(CapEff|Seccomp):" /proc/self/status'];
    const limits = await daemonLimits();
    const spec = buildContainerSpec({
      containerId: `c-${suffix}`,
      sandboxId: `s-${suffix}`,
      config,
      sandboxConfig: sandboxConfig(),
      image: {},
      rootfsPath: rootfs,
      passwd: '',
      group: '',
      sandboxPaths: {},
      namespacePaths: {},
      cgroupParent,
      restrictOomScoreAdj: true,
      ...limits,
    });
    const res = await runcRun(join(dir, 'runc-state'), bundle, `nodelet-oci-priv-${suffix}`, spec);
    assert.equal(res.exitCode, 0, `runc failed: ${res.stderr}${res.stdout}`);
    assert.match(res.stdout, new RegExp(`CapEff:\\s+${limits.capEff}`));
    assert.match(res.stdout, /Seccomp:\s+0/);
  } finally {
    await removeCgroupParent(cgroupParent);
    await rm(dir, { recursive: true, force: true });
  }
});
