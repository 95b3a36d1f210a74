// Requests in the exact shape the real kubelet (v1.36) and critest send, replayed against a real
// nodelet-cri (runc, conmon, CNI): each test here is a finding from running those clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { containerConfig, runContainer, sandboxConfig, waitFor } from '../helpers/pods.js';
import { run } from '../../src/common/exec.js';

let d: TestDaemon;
let reg: Registries;
let logDir: string;
let BUSYBOX: string;
const cgroupDirsToRemove: string[] = [];

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-kubelet-req-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
  await d.client.image('PullImage', { image: { image: BUSYBOX } });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logDir) await fsp.rm(logDir, { recursive: true, force: true });
  // Deepest first; a directory still in use (another runtime's pods) refuses rmdir and stays.
  for (const dir of cgroupDirsToRemove.sort((a, b) => b.length - a.length)) await fsp.rmdir(dir).catch(() => undefined);
});

async function exec(id: string, cmd: string[]) {
  const res = await d.client.runtime('ExecSync', { container_id: id, cmd, timeout: 10 });
  return { stdout: res.stdout.toString(), stderr: res.stderr.toString(), code: res.exit_code as number };
}

/** The kubelet's page size names for what the kernel lists: hugepages-2048kB → 2MB, hugepages-1048576kB → 1GB. */
function kernelHugepageSizes(): string[] {
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let names: string[];
  try {
    names = readdirSync('/sys/kernel/mm/hugepages');
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const m = /^hugepages-(\d+)kB$/.exec(name);
    if (!m) return [];
    let size = Number(m[1]) * 1024;
    let unit = 0;
    while (size % 1024 === 0 && unit < units.length - 1) {
      size /= 1024;
      unit++;
    }
    return [`${size}${units[unit]}`];
  });
}

/** Every v1 hierarchy (or the v2 root) gets the pod's parent directories; remember them for removal. */
function rememberCgroupParent(parent: string) {
  const roots = ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((n) => path.join('/sys/fs/cgroup', n))];
  const parts = parent.split('/').filter(Boolean);
  for (const root of roots) {
    for (let i = 1; i <= parts.length; i++) cgroupDirsToRemove.push(path.join(root, ...parts.slice(0, i)));
  }
}

/** linux.resources as the kubelet fills them for a BestEffort container (cpu_shares 2, no limits, hugepages 0). */
function kubeletResources(oomScoreAdj: number) {
  return {
    cpu_period: 100000,
    cpu_quota: 0,
    cpu_shares: 2,
    memory_limit_in_bytes: 0,
    oom_score_adj: oomScoreAdj,
    cpuset_cpus: '',
    cpuset_mems: '',
    hugepage_limits: kernelHugepageSizes().map((page_size) => ({ page_size, limit: 0 })),
    unified: {},
    memory_swap_limit_in_bytes: 0,
  };
}

test('a BestEffort pod as the kubelet creates it runs, hugepage limits for every kernel page size included', async () => {
  const uid = randomUUID();
  const cgroupParent = `/kubepods/besteffort/pod${uid}`;
  rememberCgroupParent(cgroupParent);
  const config = sandboxConfig('kubelet-shaped', path.join(logDir, 'kubelet-shaped'), {
    metadata: { name: 'kubelet-shaped', namespace: 'default', uid, attempt: 0 },
    linux: {
      cgroup_parent: cgroupParent,
      security_context: {
        namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' },
        seccomp: { profile_type: 'RuntimeDefault' },
      },
      // The kubelet sends the pod's resources on the sandbox too (PodLevelResources / overhead).
      resources: kubeletResources(-998),
    },
  });
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const container = containerConfig('app', BUSYBOX, ['sleep', '3600'], {
    envs: [{ key: 'KUBERNETES_SERVICE_HOST', value: '10.96.0.1' }],
    annotations: { 'io.kubernetes.container.hash': 'abc123', 'io.kubernetes.container.restartCount': '0' },
    linux: {
      resources: kubeletResources(1000),
      security_context: {
        namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' },
        run_as_user: { value: 0 },
        seccomp: { profile_type: 'RuntimeDefault' },
        masked_paths: ['/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys'],
        readonly_paths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys'],
      },
    },
  });
  const id = await runContainer(d.client, podId, config, container);
  const status = await waitFor('the container to run', async () => {
    const { status } = await d.client.runtime('ContainerStatus', { container_id: id });
    return status.state === 'CONTAINER_RUNNING' ? status : undefined;
  });
  assert.equal(status.state, 'CONTAINER_RUNNING');
  const ps = await exec(id, ['cat', '/proc/self/cgroup']);
  assert.equal(ps.code, 0, ps.stderr);
  assert.match(ps.stdout, new RegExp(`/kubepods/besteffort/pod${uid}/`), 'the container lives under the kubelet-given cgroup parent');
  assert.equal((await exec(id, ['cat', '/proc/1/oom_score_adj'])).stdout.trim(), '1000');
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
});

test('critest: RunAsGroup without RunAsUser is INVALID_ARGUMENT and leaves nothing; with RunAsUser it applies', async () => {
  const config = sandboxConfig('run-as-group', path.join(logDir, 'run-as-group'));
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const command = ['sh', '-c', 'echo $(id -u):$(id -g); sleep 3600'];
  await assert.rejects(
    d.client.runtime('CreateContainer', {
      pod_sandbox_id: podId,
      config: containerConfig('group-only', BUSYBOX, command, { linux: { security_context: { run_as_group: { value: 1002 } } } }),
      sandbox_config: config,
    }),
    (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.details);
      assert.match(err.details, /run_as_group/);
      return true;
    },
  );
  const left = await d.client.runtime('ListContainers', { filter: { pod_sandbox_id: podId } });
  assert.equal(left.containers.length, 0, 'the refused creation left no container behind');
  const id = await runContainer(d.client, podId, config, containerConfig('user-and-group', BUSYBOX, command, {
    linux: { security_context: { run_as_user: { value: 1001 }, run_as_group: { value: 1002 } } },
  }));
  assert.equal((await exec(id, ['sh', '-c', 'echo $(id -u):$(id -g)'])).stdout, '1001:1002\n');
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
});

// critest's profile: everything allowed but chmod (EPERM, the default errno).
const BLOCK_CHMOD = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO' }] };
// A profile with an explicit errno, to see errnoRet honoured.
const BLOCK_MKDIR = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 }] };

async function writeProfile(name: string, profile: object): Promise<string> {
  const file = path.join(logDir, 'seccomp', name);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await fsp.writeFile(file, JSON.stringify(profile));
  return file;
}

test('critest: Localhost seccomp profile by host path, on sandbox and container, blocks the syscall', async () => {
  const chmodProfile = await writeProfile('block-chmod.json', BLOCK_CHMOD);
  const seccomp = { profile_type: 'Localhost', localhost_ref: chmodProfile };
  // As critest's seccompTestContainer: the same profile on the sandbox and on the container.
  const config = sandboxConfig('seccomp-localhost', path.join(logDir, 'seccomp-localhost'), {
    linux: { security_context: { seccomp } },
  });
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const confined = await runContainer(d.client, podId, config, containerConfig('confined', BUSYBOX, ['sleep', '3600'], {
    linux: { security_context: { seccomp } },
  }));
  const denied = await exec(confined, ['chmod', '400', '/']);
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /Operation not permitted/);
  assert.match((await exec(confined, ['grep', 'Seccomp:', '/proc/self/status'])).stdout, /Seccomp:\s+2/);
  const free = await runContainer(d.client, podId, config, containerConfig('free', BUSYBOX, ['sleep', '3600'], {
    linux: { security_context: { seccomp: { profile_type: 'Unconfined' } } },
  }));
  assert.equal((await exec(free, ['chmod', '400', '/tmp'])).code, 0, 'the same pod without the profile may chmod');
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
});

test('deprecated seccomp_profile_path "localhost/<path>" works on sandbox and container; an unreadable profile is INVALID_ARGUMENT', async () => {
  const mkdirProfile = await writeProfile('block-mkdir.json', BLOCK_MKDIR);
  const legacy = `localhost/${mkdirProfile}`;
  const config = sandboxConfig('seccomp-legacy', path.join(logDir, 'seccomp-legacy'), {
    linux: { security_context: { seccomp_profile_path: legacy } },
  });
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const id = await runContainer(d.client, podId, config, containerConfig('legacy', BUSYBOX, ['sleep', '3600'], {
    linux: { security_context: { seccomp_profile_path: legacy } },
  }));
  const denied = await exec(id, ['mkdir', '/tmp/newdir']);
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /Permission denied/, 'errnoRet 13 (EACCES) from the profile');
  assert.equal((await exec(id, ['touch', '/tmp/newfile'])).code, 0, 'other syscalls are allowed');

  const missing = path.join(logDir, 'seccomp', 'no-such-profile.json');
  for (const sc of [{ seccomp: { profile_type: 'Localhost', localhost_ref: missing } }, { seccomp_profile_path: `localhost/${missing}` }]) {
    await assert.rejects(
      d.client.runtime('CreateContainer', {
        pod_sandbox_id: podId,
        config: containerConfig('missing-profile', BUSYBOX, ['true'], { linux: { security_context: sc } }),
        sandbox_config: config,
      }),
      (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.details);
        assert.match(err.details, /(localhost_ref|seccomp_profile_path).*no-such-profile\.json/);
        return true;
      },
    );
  }
  await assert.rejects(
    d.client.runtime('RunPodSandbox', {
      config: sandboxConfig('seccomp-missing', path.join(logDir, 'seccomp-missing'), {
        linux: { security_context: { seccomp: { profile_type: 'Localhost', localhost_ref: missing } } },
      }),
    }),
    (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && /localhost_ref/.test(err.details),
  );
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
});

test('an image whose layer tar ends right after its last data (umoci insert) pulls, unpacks and runs', async () => {
  const image = `${reg.plain}/nodelet-test/unpadded:latest`;
  await d.client.image('PullImage', { image: { image } });
  const config = sandboxConfig('unpadded', path.join(logDir, 'unpadded'));
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  const id = await runContainer(d.client, podId, config, containerConfig('unpadded', image, ['sleep', '3600']));
  const last = await exec(id, ['cat', '/inserted/z']);
  assert.equal(last.stdout, 'inserted by umoci\n', last.stderr);
  assert.equal((await exec(id, ['stat', '-c', '%a', '/inserted/z'])).stdout.trim(), '600');
  assert.equal((await exec(id, ['cat', '/inserted/a'])).stdout, 'first\n');
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
});

test('SupplementalGroupsPolicy (critest): advertised; ContainerStatus.user and the process groups follow Merge and Strict', async () => {
  const { features } = await d.client.runtime('Status', {});
  assert.equal(features?.supplemental_groups_policy, true);
  // The fixture's user app (uid 1000, gid 1000) is a member of extra (2000) in the image's /etc/group.
  const config = sandboxConfig('sgp', path.join(logDir, 'sgp'));
  const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
  for (const [policy, groups] of [['Merge', [1000, 1234, 2000]], ['Strict', [1000, 1234]]] as const) {
    const id = await runContainer(
      d.client,
      podId,
      config,
      containerConfig(`sgp-${policy.toLowerCase()}`, BUSYBOX, ['sh', '-c', 'id -G; sleep 3600'], {
        linux: { security_context: { run_as_user: { value: 1000 }, supplemental_groups: [1234], supplemental_groups_policy: policy } },
      }),
    );
    const { status } = await d.client.runtime('ContainerStatus', { container_id: id });
    assert.equal(Number(status.user?.linux?.uid), 1000, policy);
    assert.equal(Number(status.user?.linux?.gid), 1000, policy);
    assert.deepEqual(status.user.linux.supplemental_groups.map(Number).sort((a: number, b: number) => a - b), groups, policy);
    assert.equal((await exec(id, ['id', '-G'])).stdout, `${groups.join(' ')}\n`, policy);
  }
  await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
  await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
});

test('recursive read-only mounts (critest): advertised; a tmpfs below a recursive_read_only mount is read-only too; bad requests refused', async () => {
  const { runtime_handlers: handlers } = await d.client.runtime('Status', {});
  assert.equal(handlers.find((h: any) => h.name === '')?.features?.recursive_read_only_mounts, true);
  const hostPath = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-rro-'));
  const tmpfs = path.join(hostPath, 'tmpfs');
  await fsp.mkdir(tmpfs);
  await run('mount', ['-t', 'tmpfs', 'none', tmpfs]);
  try {
    const config = sandboxConfig('rro', path.join(logDir, 'rro'));
    const { pod_sandbox_id: podId } = await d.client.runtime('RunPodSandbox', { config });
    const withMount = (name: string, m: object) =>
      containerConfig(name, BUSYBOX, ['sleep', '3600'], { mounts: [{ host_path: hostPath, container_path: '/mnt', readonly: true, selinux_relabel: true, ...m }] });
    const rro = await runContainer(d.client, podId, config, withMount('rro', { recursive_read_only: true }));
    const denied = await exec(rro, ['touch', '/mnt/tmpfs/foo']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Read-only file system/);
    const plain = await runContainer(d.client, podId, config, withMount('ro', {}));
    assert.equal((await exec(plain, ['touch', '/mnt/tmpfs/file'])).code, 0);
    for (const [name, m] of [
      ['rro-rw', { readonly: false, recursive_read_only: true }],
      ['rro-slave', { recursive_read_only: true, propagation: 'PROPAGATION_HOST_TO_CONTAINER' }],
      ['rro-shared', { recursive_read_only: true, propagation: 'PROPAGATION_BIDIRECTIONAL' }],
    ] as const) {
      await assert.rejects(
        d.client.runtime('CreateContainer', { pod_sandbox_id: podId, config: withMount(name, m), sandbox_config: config }),
        (err: grpc.ServiceError) => err.code === grpc.status.INVALID_ARGUMENT && /recursive_read_only/.test(err.details),
      );
    }
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: podId });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: podId });
  } finally {
    await run('umount', ['-l', tmpfs], { reject: false });
    await fsp.rm(hostPath, { recursive: true, force: true });
  }
});
