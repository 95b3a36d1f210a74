// Fault injection: the daemon is SIGKILLed at named steps (NODELET_TEST_CRASH_AT) of the pull, sandbox and
// container life cycles and inside their undo. After a restart, what it lists must be what is there (runc,
// conmon, mounts, netns, cgroups, iptables, IPAM, records), and Stop+Remove of all it lists must leave nothing.
// Two lanes (each its own daemon, root, bridge, subnet and cgroup parent) run side by side to fit the time budget.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { containerConfig, sandboxConfig, waitFor } from '../helpers/pods.js';
import { run } from '../../src/common/exec.js';
import { masqueradeChainName } from '../../src/network/cni.js';

const CRASH_ENV = 'NODELET_TEST_CRASH_AT';

// A CNI plugin that refuses every ADD (DEL succeeds). Chained after bridge + portmap while a test wants an ADD to
// fail after the real plugins did their part (the runtime must then DEL them).
const REFUSING_PLUGIN = `#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","code":999,"msg":"nodelet-test: ADD refused"}'; exit 1;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}';;
esac
exit 0
`;

let reg: Registries;
let BUSYBOX: string;

before(async () => {
  reg = await useRegistries();
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
});

after(async () => {
  await reg?.stop();
});

async function readdirOrEmpty(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
}

async function cgroupHierarchies(): Promise<string[]> {
  const found = new Set<string>();
  for (const name of await readdirOrEmpty('/sys/fs/cgroup')) found.add(await fsp.realpath(path.join('/sys/fs/cgroup', name)).catch(() => ''));
  found.delete('');
  return [...found];
}

function strays(what: string, found: Iterable<string>, allowed: Set<string>): string[] {
  return [...found].filter((x) => !allowed.has(x)).map((x) => `${what} ${x}`);
}

interface Reality {
  /** runc's containers in the daemon's runtime root, by id. */
  runc: Map<string, string>;
  /** conmon processes of this daemon (by their --exit-dir), by container id. */
  conmon: Set<string>;
  /** Mount points under --root and --run-root. */
  mounts: string[];
  /** Seen sandbox ids with a network namespace. */
  netns: Set<string>;
  /** Ids with a cgroup under the lane's cgroup parent, in any hierarchy. */
  cgroups: Set<string>;
  /** iptables-save lines that mention the lane's network, bridge, subnet or the chain of a seen sandbox. */
  iptables: string[];
  /** Sandbox ids holding an address in host-local IPAM. */
  ipam: Set<string>;
  records: { sandboxes: string[]; containers: string[] };
  /** Per-id files and directories the daemon keeps beside the records. */
  files: Record<string, string[]>;
}

interface ImageState {
  listed: string[];
  records: string[];
  blobs: string[];
  layers: string[];
  scratch: string[];
}

interface Pod {
  id: string;
  config: any;
}

interface KillPoint {
  /** The step the daemon is killed at (NODELET_TEST_CRASH_AT). */
  step: string;
  title: string;
  /** Set-up on the armed daemon (must not pass the step). */
  prepare?: (lane: Lane) => Promise<any>;
  /** The call that reaches the step; it gets no answer. */
  trigger: (lane: Lane, prepared: any) => Promise<unknown>;
  /** The restarted daemon is killed once more while its start-up recovery is at this step. */
  recoveryStep?: string;
  /** Checked on the restarted daemon before everything is compared with reality. */
  afterRestart?: (lane: Lane, prepared: any) => Promise<void>;
  /** Paths a crashed creation must not leave (log directories and files it made). */
  leftovers?: (lane: Lane, prepared: any) => string[];
  /** A pull: the image store must hold exactly what the listed images need. */
  images?: { pullAgain: boolean };
}

/** One daemon with its own root, run root, bridge, subnet, IPAM directory and cgroup parent. */
class Lane {
  d!: TestDaemon;
  base!: string;
  logDir!: string;
  confFile!: string;
  conf: any;
  networkName!: string;
  ipamDir!: string;
  readonly cgroupParent = `/nodelet-killpoints-${randomBytes(4).toString('hex')}`;
  /** Every sandbox and container id seen, so that what they leave behind can be found. */
  readonly seen = new Set<string>();

  async start(): Promise<void> {
    this.base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-killpoints-'));
    this.logDir = path.join(this.base, 'logs');
    const pluginDir = path.join(this.base, 'cni-bin');
    await fsp.mkdir(pluginDir);
    await fsp.writeFile(path.join(pluginDir, 'nodelet-test-refuse'), REFUSING_PLUGIN, { mode: 0o755 });
    this.d = await startTestDaemon({ network: true, args: ['--cni-bin-dir', '/usr/lib/cni', '--cni-bin-dir', pluginDir] });
    this.confFile = path.join(this.d.cniConfDir, (await fsp.readdir(this.d.cniConfDir))[0]!);
    this.conf = JSON.parse(await fsp.readFile(this.confFile, 'utf8'));
    this.networkName = this.conf.name;
    this.ipamDir = path.join(this.conf.plugins[0].ipam.dataDir, this.networkName);
  }

  async stop(): Promise<void> {
    if (this.d && !this.running()) await this.d.restart().catch(() => undefined);
    await this.d?.cleanup();
    for (const hierarchy of await cgroupHierarchies()) await fsp.rmdir(path.join(hierarchy, this.cgroupParent)).catch(() => undefined);
    if (this.base) await fsp.rm(this.base, { recursive: true, force: true });
  }

  running(): boolean {
    return this.d.proc.exitCode === null && this.d.proc.signalCode === null;
  }

  /** Chains the refusing plugin after the real ones, or takes it out (the runtime reloads a changed config). */
  async refuseAdd(on: boolean): Promise<void> {
    const plugins = on ? [...this.conf.plugins, { type: 'nodelet-test-refuse' }] : this.conf.plugins;
    await fsp.writeFile(`${this.confFile}.tmp`, JSON.stringify({ ...this.conf, plugins }));
    await fsp.rename(`${this.confFile}.tmp`, this.confFile);
  }

  // ---- pods and containers ----

  podConfig(name: string): any {
    return sandboxConfig(name, path.join(this.logDir, name, 'pod'), {
      linux: { cgroup_parent: this.cgroupParent, security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    });
  }

  async runPod(name: string): Promise<Pod> {
    const config = this.podConfig(name);
    const { pod_sandbox_id: id } = await this.d.client.runtime('RunPodSandbox', { config });
    this.seen.add(id);
    return { id, config };
  }

  async createCtr(pod: Pod, name: string, extra: Record<string, any> = {}): Promise<string> {
    const { container_id: id } = await this.d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: ctrConfig(name, extra), sandbox_config: pod.config });
    this.seen.add(id);
    return id;
  }

  async runCtr(pod: Pod, name: string): Promise<string> {
    const id = await this.createCtr(pod, name);
    await this.d.client.runtime('StartContainer', { container_id: id });
    return id;
  }

  async ensureImage(): Promise<void> {
    const { images } = await this.d.client.image('ListImages', {});
    if (!images.some((i: any) => i.repo_tags.includes(BUSYBOX))) await this.d.client.image('PullImage', { image: { image: BUSYBOX } });
  }

  async removeImages(): Promise<void> {
    for (const i of (await this.d.client.image('ListImages', {})).images) await this.d.client.image('RemoveImage', { image: { image: i.id } });
  }

  // ---- what is there ----

  private async conmonIds(): Promise<Set<string>> {
    const exits = path.join(this.d.runRoot, 'exits');
    const ids = new Set<string>();
    for (const pid of await readdirOrEmpty('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const argv = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
      if (!argv[0]?.endsWith('conmon') || argv[argv.indexOf('--exit-dir') + 1] !== exits) continue;
      const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      if (!stat || stat[stat.lastIndexOf(')') + 2] === 'Z') continue;
      ids.add(argv[argv.indexOf('-c') + 1]!);
    }
    return ids;
  }

  /** The sandbox an iptables rule was made for: its comment (`id: "<id>"`, quotes escaped by iptables-save) or its chain. */
  sandboxOfRule(line: string): string | undefined {
    const commented = /id: \\?"([0-9a-f]{64})/.exec(line)?.[1];
    if (commented) return commented;
    return [...this.seen].find((id) => line.includes(masqueradeChainName(this.networkName, id)));
  }

  async reality(): Promise<Reality> {
    const { d } = this;
    const runcRoot = path.join(d.runRoot, 'runtime', 'runc');
    const [runcOut, conmon, mountinfo, netnsNames, hierarchies, iptablesOut, ipamFiles] = await Promise.all([
      existsSync(runcRoot) ? run('runc', ['--root', runcRoot, 'list', '--format', 'json']).then((r) => r.stdout) : Promise.resolve('null'),
      this.conmonIds(),
      fsp.readFile('/proc/self/mountinfo', 'utf8'),
      readdirOrEmpty('/run/netns'),
      cgroupHierarchies(),
      run('iptables-save', []).then((r) => r.stdout),
      readdirOrEmpty(this.ipamDir),
    ]);
    const runc = new Map<string, string>(((JSON.parse(runcOut || 'null') ?? []) as Array<{ id: string; status: string }>).map((c) => [c.id, c.status]));
    const mounts = mountinfo
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(`${d.root}/`) || m.startsWith(`${d.runRoot}/`));
    const netns = new Set([...this.seen].filter((id) => netnsNames.includes(`nodelet-${id.slice(0, 56)}`)));
    const cgroups = new Set<string>();
    for (const h of hierarchies) for (const id of await readdirOrEmpty(path.join(h, this.cgroupParent))) if (/^[0-9a-f]{64}$/.test(id)) cgroups.add(id);
    const subnetPrefix = d.subnet.replace(/0\/24$/, '');
    const chains = [...this.seen].map((id) => masqueradeChainName(this.networkName, id));
    const iptables = iptablesOut
      .split('\n')
      .filter((l) => l.includes(this.networkName) || l.includes(d.bridge) || l.includes(subnetPrefix) || chains.some((c) => l.includes(c)));
    const ipam = new Set<string>();
    for (const name of ipamFiles) {
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(name)) continue;
      ipam.add((await fsp.readFile(path.join(this.ipamDir, name), 'utf8').catch(() => '')).split(/\s/)[0]!);
    }
    const files: Record<string, string[]> = {};
    for (const dir of [
      path.join(d.runRoot, 'sandboxes'),
      path.join(d.runRoot, 'conmon'),
      path.join(d.runRoot, 'exits'),
      path.join(d.runRoot, 's'),
      path.join(d.root, 'cni-cache'),
    ]) {
      files[dir] = (await readdirOrEmpty(dir)).map((n) => n.replace(/\.json$/, ''));
    }
    return {
      runc,
      conmon,
      mounts,
      netns,
      cgroups,
      iptables,
      ipam,
      records: { sandboxes: await readdirOrEmpty(path.join(d.root, 'sandboxes')), containers: await readdirOrEmpty(path.join(d.root, 'containers')) },
      files,
    };
  }

  /** Ids that have a record on disk now (a crashed call never returned them). */
  async noteIdsOnDisk(): Promise<void> {
    for (const kind of ['sandboxes', 'containers']) for (const id of await readdirOrEmpty(path.join(this.d.root, kind))) this.seen.add(id);
  }

  /** What ListPodSandbox / ListContainers say equals what runc, conmon, the kernel and the disk hold. */
  async assertListedIsReal(step: string): Promise<void> {
    const pods: any[] = (await this.d.client.runtime('ListPodSandbox', {})).items;
    const containers: any[] = (await this.d.client.runtime('ListContainers', {})).containers;
    for (const x of [...pods, ...containers]) this.seen.add(x.id);
    const r = await this.reality();
    const podIds = new Set(pods.map((p) => p.id));
    const ctrIds = new Set(containers.map((c) => c.id));
    const listed = new Set([...podIds, ...ctrIds]);
    const problems: string[] = [
      ...strays('sandbox record not listed:', r.records.sandboxes, podIds),
      ...strays('container record not listed:', r.records.containers, ctrIds),
      ...strays('runc container not listed:', r.runc.keys(), listed),
      ...strays('conmon of an unlisted id:', r.conmon, listed),
      ...r.mounts.filter((m) => ![...listed].some((id) => m.includes(id))).map((m) => `mount of nothing listed: ${m}`),
      ...strays('netns of an unlisted sandbox:', r.netns, podIds),
      ...strays('cgroup runc does not know:', r.cgroups, new Set(r.runc.keys())),
      ...strays('IPAM address of an unlisted sandbox:', r.ipam, podIds),
      ...r.iptables.filter((l) => !podIds.has(this.sandboxOfRule(l) ?? '')).map((l) => `iptables rule of nothing listed: ${l}`),
      ...Object.entries(r.files).flatMap(([dir, ids]) => strays(`${dir}/ entry of nothing listed:`, ids, listed)),
    ];
    for (const p of pods) {
      const runtime = r.runc.get(p.id);
      if (p.state === 'SANDBOX_READY') {
        if (runtime !== 'running') problems.push(`sandbox ${p.id} is READY but runc says ${runtime ?? 'nothing'}`);
        if (!r.conmon.has(p.id)) problems.push(`sandbox ${p.id} is READY but has no conmon`);
        if (!r.netns.has(p.id)) problems.push(`sandbox ${p.id} is READY but has no netns`);
        if (!r.ipam.has(p.id)) problems.push(`sandbox ${p.id} is READY but holds no address`);
        if (!r.iptables.some((l) => this.sandboxOfRule(l) === p.id)) problems.push(`sandbox ${p.id} is READY but has no masquerade rule`);
        if (!r.mounts.some((m) => m.includes(p.id) && m.endsWith('/shm'))) problems.push(`sandbox ${p.id} is READY but has no /dev/shm mount`);
      } else if (runtime === 'running') {
        problems.push(`sandbox ${p.id} is ${p.state} but runc says running`);
      }
    }
    for (const c of containers) {
      const runtime = r.runc.get(c.id);
      // A created container is not in the runtime yet (StartContainer creates it there, as containerd's does).
      const want = c.state === 'CONTAINER_RUNNING' ? 'running' : undefined;
      if (want && runtime !== want) problems.push(`container ${c.id} is ${c.state} but runc says ${runtime ?? 'nothing'}`);
      if (!want && runtime && (c.state === 'CONTAINER_CREATED' || runtime === 'running' || runtime === 'created')) problems.push(`container ${c.id} is ${c.state} but runc says ${runtime}`);
      if (want && !r.conmon.has(c.id)) problems.push(`container ${c.id} is ${c.state} but has no conmon`);
      if (!want && c.state === 'CONTAINER_CREATED' && r.conmon.has(c.id)) problems.push(`container ${c.id} is ${c.state} but has a conmon`);
      if (want && !r.mounts.some((m) => m.includes(c.id) && m.endsWith('/rootfs'))) problems.push(`container ${c.id} is ${c.state} but its rootfs is not mounted`);
      if (!podIds.has(c.pod_sandbox_id)) problems.push(`container ${c.id} belongs to sandbox ${c.pod_sandbox_id}, which is not listed`);
    }
    assert.deepEqual(problems, [], `after a kill at ${step}, what is listed is not what is there`);
  }

  /** Stop+Remove of everything listed. */
  async removeEverything(): Promise<void> {
    const { client } = this.d;
    for (const c of (await client.runtime('ListContainers', {})).containers) {
      await client.runtime('StopContainer', { container_id: c.id, timeout: 0 });
      await client.runtime('RemoveContainer', { container_id: c.id });
    }
    for (const p of (await client.runtime('ListPodSandbox', {})).items) {
      await client.runtime('StopPodSandbox', { pod_sandbox_id: p.id });
      await client.runtime('RemovePodSandbox', { pod_sandbox_id: p.id });
    }
  }

  async assertNothingLeft(step: string, extra: string[] = []): Promise<void> {
    assert.deepEqual((await this.d.client.runtime('ListPodSandbox', {})).items, [], 'no sandbox listed');
    assert.deepEqual((await this.d.client.runtime('ListContainers', {})).containers, [], 'no container listed');
    const r = await this.reality();
    const left = [
      ...r.records.sandboxes.map((x) => `sandbox record ${x}`),
      ...r.records.containers.map((x) => `container record ${x}`),
      ...[...r.runc].map(([id, s]) => `runc container ${id} (${s})`),
      ...[...r.conmon].map((x) => `conmon of ${x}`),
      ...r.mounts.map((x) => `mount ${x}`),
      ...[...r.netns].map((x) => `netns of ${x}`),
      ...[...r.cgroups].map((x) => `cgroup ${this.cgroupParent}/${x}`),
      ...r.iptables.map((x) => `iptables: ${x}`),
      ...[...r.ipam].map((x) => `IPAM address held by ${x}`),
      ...Object.entries(r.files).flatMap(([dir, ids]) => ids.map((x) => `${dir}/${x}`)),
      ...extra.filter((p) => existsSync(p)).map((p) => `left behind: ${p}`),
    ];
    assert.deepEqual(left, [], `after a kill at ${step} and Stop+Remove of all listed`);
  }

  // ---- images ----

  async imageState(): Promise<ImageState> {
    const root = path.join(this.d.root, 'images');
    const { images } = await this.d.client.image('ListImages', {});
    return {
      listed: images.map((i: any) => i.id.replace(/^sha256:/, '')).sort(),
      records: (await readdirOrEmpty(path.join(root, 'images'))).map((n) => n.replace(/\.json$/, '')).sort(),
      blobs: (await readdirOrEmpty(path.join(root, 'blobs', 'sha256'))).sort(),
      layers: (await readdirOrEmpty(path.join(root, 'layers'))).filter((n) => n !== 'tmp').sort(),
      scratch: [...(await readdirOrEmpty(path.join(root, 'layers', 'tmp'))), ...(await readdirOrEmpty(path.join(root, 'ingest')))],
    };
  }

  /** Listed images are the records on disk; blobs and layers are exactly what they need; no scratch is left. */
  async assertImagesReal(step: string): Promise<void> {
    const s = await this.imageState();
    assert.deepEqual(s.listed, s.records, `after a kill at ${step}: listed images are the records on disk`);
    const blobs = new Set<string>();
    const layers = new Set<string>();
    for (const id of s.records) {
      const rec = JSON.parse(await fsp.readFile(path.join(this.d.root, 'images', 'images', `${id}.json`), 'utf8'));
      blobs.add(id);
      for (const l of rec.layers) {
        blobs.add(l.digest.replace(/^sha256:/, ''));
        layers.add(l.diffId.replace(/^sha256:/, ''));
      }
    }
    assert.deepEqual(s.blobs, [...blobs].sort(), `after a kill at ${step}: the blobs are those of the listed images`);
    assert.deepEqual(s.layers, [...layers].sort(), `after a kill at ${step}: the unpacked layers are those of the listed images`);
    assert.deepEqual(s.scratch, [], `after a kill at ${step}: no partial download or unpack is left`);
  }

  // ---- the kill ----

  async killAt(kp: KillPoint): Promise<void> {
    const { d } = this;
    if (this.running()) await d.kill();
    await d.restart({ env: { [CRASH_ENV]: kp.step } });
    let passed = false;
    try {
      const prepared = await kp.prepare?.(this);
      const answer = await kp.trigger(this, prepared).then(
        () => 'an answer',
        (err: grpc.ServiceError) => `${grpc.status[err.code] ?? ''} ${err.details ?? err.message}`,
      );
      // The call ends when the connection drops; the exit is seen a moment later.
      await waitFor('the daemon to exit', () => !this.running(), 10_000).catch(() => undefined);
      assert.equal(d.proc.signalCode, 'SIGKILL', `the daemon was killed at ${kp.step} (the call got ${answer})`);
      d.client.close();
      await this.noteIdsOnDisk();
      if (kp.recoveryStep) {
        await assert.rejects(d.restart({ env: { [CRASH_ENV]: kp.recoveryStep } }), /did not start \(exit SIGKILL\)/, `the restarted daemon was killed at ${kp.recoveryStep} while recovering`);
      }
      await d.restart();
      if (kp.images) {
        await this.assertImagesReal(kp.step);
        if (kp.images.pullAgain) {
          await this.ensureImage();
          await this.assertImagesReal(`${kp.step} (pulled again)`);
        }
        await this.removeImages();
        // A removed layer's tree is deleted in the background (from layers/tmp): wait for it, bounded.
        const empty = { listed: [], records: [], blobs: [], layers: [], scratch: [] };
        await waitFor('the removed images to be gone', async () => JSON.stringify(await this.imageState()) === JSON.stringify(empty), 10_000).catch(() => undefined);
        assert.deepEqual(await this.imageState(), empty, `after a kill at ${kp.step}, removing every image leaves nothing`);
      }
      await kp.afterRestart?.(this, prepared);
      await this.assertListedIsReal(kp.step);
      await this.removeEverything();
      await this.assertNothingLeft(kp.step, kp.leftovers?.(this, prepared));
      passed = true;
    } finally {
      if (!passed) {
        // Leave an unarmed daemon and as little as possible for the next kill point.
        if (!this.running()) await d.restart().catch(() => undefined);
        await this.removeEverything().catch(() => undefined);
      }
    }
  }
}

function ctrConfig(name: string, extra: Record<string, any> = {}): any {
  return containerConfig(name, BUSYBOX, ['sleep', '600'], { log_path: `${name}/0.log`, ...extra });
}

// ---- the kill points ----

const pulls: KillPoint[] = ['pull.blob-fetched', 'pull.mid-unpack', 'pull.before-record'].map((step, i, all) => ({
  step,
  title: `PullImage killed at ${step}: no partial image is listed or kept${i === all.length - 1 ? ', and the pull works again' : ''}`,
  images: { pullAgain: i === all.length - 1 },
  // Not there yet (a pull that finds its layers complete skips these steps).
  prepare: (lane) => lane.removeImages(),
  trigger: (lane) => lane.d.client.image('PullImage', { image: { image: BUSYBOX } }),
}));

// runc.create.conmon-launched: the infra's conmon was just started and goes on creating it while the daemon is dead.
const runPodSandbox: KillPoint[] = ['sandbox.run.record-written', 'sandbox.run.netns-created', 'runc.create.conmon-launched', 'sandbox.run.cni-added', 'sandbox.run.infra-created', 'sandbox.run.before-ready'].map((step) => ({
  step,
  title: `RunPodSandbox killed at ${step}: the half-made sandbox is undone at restart`,
  trigger: (lane) => lane.d.client.runtime('RunPodSandbox', { config: lane.podConfig(step.replace(/\./g, '-')) }),
  leftovers: (lane) => [path.join(lane.logDir, step.replace(/\./g, '-'))],
}));

// No rootfs mount here: CreateContainer reads the image's /etc files from its layers; StartContainer mounts.
const createContainer: KillPoint[] = ['container.create.record-written', 'container.create.before-ready'].map((step) => ({
  step,
  title: `CreateContainer killed at ${step}: the half-made container is undone at restart`,
  prepare: async (lane) => {
    await lane.ensureImage();
    return lane.runPod('create');
  },
  trigger: (lane, pod: Pod) => lane.d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: ctrConfig('interrupted'), sandbox_config: pod.config }),
  leftovers: (_lane, pod: Pod) => [path.join(pod.config.log_directory, 'interrupted')],
}));

const podWithRunningContainer = async (lane: Lane): Promise<Pod> => {
  await lane.ensureImage();
  const pod = await lane.runPod('pod');
  await lane.runCtr(pod, 'app');
  return pod;
};

/** After a StartContainer cut short: created-not-started (and then it starts) or started, never half. */
async function startedOrStartable(lane: Lane, id: string): Promise<void> {
  const { status } = await lane.d.client.runtime('ContainerStatus', { container_id: id });
  assert.ok(['CONTAINER_CREATED', 'CONTAINER_RUNNING'].includes(status.state), `after the restart the container is ${status.state}`);
  if (status.state === 'CONTAINER_CREATED') await lane.d.client.runtime('StartContainer', { container_id: id });
  const after = await lane.d.client.runtime('ContainerStatus', { container_id: id });
  assert.equal(after.status.state, 'CONTAINER_RUNNING');
}

const containerLife: KillPoint[] = [
  // (runc.create.conmon-launched is RunPodSandbox's kill point above: the pod this needs would pass it first.)
  ...['container.start.rootfs-mounted', 'container.start.backend-created'].map(
    (step): KillPoint => ({
      step,
      title: `StartContainer killed at ${step}: the container is created-not-started again at restart, and starts`,
      prepare: async (lane) => {
        await lane.ensureImage();
        return lane.createCtr(await lane.runPod('start'), 'started');
      },
      trigger: (lane, id: string) => lane.d.client.runtime('StartContainer', { container_id: id }),
      afterRestart: async (lane, id: string) => {
        const { status } = await lane.d.client.runtime('ContainerStatus', { container_id: id });
        assert.equal(status.state, 'CONTAINER_CREATED', 'a start cut short before the runtime started it is undone');
        await startedOrStartable(lane, id);
      },
    }),
  ),
  {
    step: 'container.start.backend-started',
    title: 'StartContainer killed at container.start.backend-started: the container the backend started is listed RUNNING',
    prepare: async (lane) => {
      await lane.ensureImage();
      return lane.createCtr(await lane.runPod('start'), 'started');
    },
    trigger: (lane, id: string) => lane.d.client.runtime('StartContainer', { container_id: id }),
    afterRestart: startedOrStartable,
  },
  {
    step: 'container.stop.killed',
    title: 'StopContainer killed at container.stop.killed (process dead, exit not recorded): listed EXITED at restart',
    prepare: async (lane) => {
      await lane.ensureImage();
      return lane.runCtr(await lane.runPod('stop'), 'stopped');
    },
    trigger: (lane, id: string) => lane.d.client.runtime('StopContainer', { container_id: id, timeout: 0 }),
  },
  // RemoveContainer answers once the record is marked removed ("remove.marked"); the runtime's delete and the
  // unmount then run side by side in the background: "rootfs" is before either is done, "delete.done" after runc's.
  ...['container.remove.marked', 'container.undo.rootfs', 'container.undo.delete.done', 'container.undo.record'].map(
    (step): KillPoint => ({
      step,
      title: `RemoveContainer killed at ${step}: the container is listed or gone, never half`,
      prepare: async (lane) => {
        await lane.ensureImage();
        const id = await lane.runCtr(await lane.runPod('remove'), 'removed');
        await lane.d.client.runtime('StopContainer', { container_id: id, timeout: 0 });
        return id;
      },
      trigger: (lane, id: string) => lane.d.client.runtime('RemoveContainer', { container_id: id }),
    }),
  ),
];

const podLife: KillPoint[] = [
  ...['sandbox.stop.containers-stopped', 'sandbox.stop.cni-deleted'].map(
    (step): KillPoint => ({
      step,
      title: `StopPodSandbox killed at ${step}: the sandbox is stopped again and removed fully`,
      prepare: podWithRunningContainer,
      trigger: (lane, pod: Pod) => lane.d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod.id }),
    }),
  ),
  {
    step: 'sandbox.undo.network-namespace',
    title: 'RemovePodSandbox of a ready pod killed at sandbox.undo.network-namespace (infra deleted, CNI DEL done): listed NOTREADY, then removed fully',
    prepare: podWithRunningContainer,
    trigger: (lane, pod: Pod) => lane.d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod.id }),
  },
];

const insideUndo: KillPoint[] = [
  ...['sandbox.undo.delete-infra', 'sandbox.undo.network-namespace'].map(
    (step): KillPoint => ({
      step,
      title: `RunPodSandbox whose CNI ADD fails, killed in its undo at ${step}`,
      prepare: (lane) => lane.refuseAdd(true),
      trigger: async (lane) => {
        try {
          return await lane.d.client.runtime('RunPodSandbox', { config: lane.podConfig(`cni-${step.replace(/\./g, '-')}`) });
        } finally {
          await lane.refuseAdd(false);
        }
      },
      leftovers: (lane) => [path.join(lane.logDir, `cni-${step.replace(/\./g, '-')}`)],
    }),
  ),
  {
    step: 'container.undo.log-file',
    title: 'CreateContainer refused (a device that is not there), killed in its undo at container.undo.log-file',
    prepare: async (lane) => {
      await lane.ensureImage();
      return { pod: await lane.runPod('refused') };
    },
    // A device that is not there: the creation fails after it made the log directory.
    trigger: (lane, { pod }: { pod: Pod }) =>
      lane.d.client.runtime('CreateContainer', { pod_sandbox_id: pod.id, config: ctrConfig('refused', { devices: [{ container_path: '/dev/none', host_path: path.join(lane.base, 'no-such-device'), permissions: 'rwm' }] }), sandbox_config: pod.config }),
    leftovers: (_lane, { pod }: { pod: Pod }) => [path.join(pod.config.log_directory, 'refused')],
  },
  {
    step: 'sandbox.run.before-ready',
    recoveryStep: 'sandbox.undo.shm',
    title: 'RunPodSandbox killed at sandbox.run.before-ready, then the recovery undoing it killed at sandbox.undo.shm',
    trigger: (lane) => lane.d.client.runtime('RunPodSandbox', { config: lane.podConfig('twice') }),
    leftovers: (lane) => [path.join(lane.logDir, 'twice')],
  },
];

// Two lanes of about equal length, side by side; in each, one kill point after the other.
const lanes: Array<{ name: string; points: KillPoint[] }> = [
  { name: 'PullImage, RunPodSandbox, RemovePodSandbox, undo', points: [...pulls, ...runPodSandbox, ...insideUndo, podLife[2]!] },
  { name: 'CreateContainer, Start/Stop/RemoveContainer, StopPodSandbox', points: [...createContainer, ...containerLife, podLife[0]!, podLife[1]!] },
];

describe('kill points', { concurrency: lanes.length }, () => {
  for (const { name, points } of lanes) {
    describe(name, { concurrency: 1 }, () => {
      const lane = new Lane();
      before(() => lane.start());
      after(() => lane.stop());
      for (const kp of points) test(kp.title, { timeout: 90_000 }, () => lane.killAt(kp));
    });
  }
});
