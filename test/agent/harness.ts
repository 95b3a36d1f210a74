// The set-up every agent test shares: the test registries, a CRI runtime (nodelet-cri or containerd) with
// busybox pulled, optionally our test apiserver, a temp base dir and a started Agent — and the reverse.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent } from '../../src/agent/agent.js';
import { defaultAgentConfig, type AgentConfig } from '../../src/agent/config.js';
import { unmountAllUnder } from '../../src/agent/volumes/tmpfs.js';
import { PodCgroups } from '../../src/agent/pod-cgroups.js';
import { parseEvictionHard } from '../../src/agent/eviction.js';
import { logger } from '../../src/common/log.js';
import { randomBytes } from 'node:crypto';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { startTestContainerd, type TestContainerd } from '../helpers/containerd.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { waitFor } from '../helpers/pods.js';
import type { CriClient } from '../helpers/cri-client.js';
import { startTestApiServer, type TestApiServer } from './apiserver.js';

/** A shell loop for PID 1 that exits on SIGTERM (PID 1 has no default action), so a stop is quick. */
export const LOOP_SCRIPT = 'trap "exit 0" TERM; while true; do sleep 0.2; done';

export interface AgentHarnessContext {
  reg: Registries;
  base: string;
  api?: TestApiServer;
  /** The CRI runtime's socket path (no unix:// scheme). */
  criSocket: string;
}

export interface AgentHarnessOptions {
  /** Prefix of the temp base dir under os.tmpdir(). */
  name: string;
  nodeName: string;
  /** Start the test apiserver and point the agent at it (default true); false is standalone mode. */
  api?: boolean;
  /** nodelet-cri (default, busybox pulled before the agent starts) or containerd on the plain registry. */
  runtime?: 'nodelet' | 'containerd';
  /** Pull busybox into nodelet-cri before the agent starts (default true). */
  pullBusybox?: boolean;
  /** Watch `<base>/manifests` for static pods (polled every 300 ms); the dir is in `manifests`. */
  staticPods?: boolean;
  /** Runs once the apiserver and base dir exist, before the agent starts; its result overrides the config. */
  configure?: (ctx: AgentHarnessContext) => Partial<AgentConfig> | void | Promise<Partial<AgentConfig> | void>;
}

export interface AgentHarness {
  reg: Registries;
  daemon?: TestDaemon;
  containerd?: TestContainerd;
  api?: TestApiServer;
  base: string;
  /** The static pod manifest dir, with `staticPods`. */
  manifests?: string;
  busybox: string;
  nodeName: string;
  config: AgentConfig;
  agent: Agent;
  /** Stops the agent and starts a new one on the same config; returns it (also in `agent`). */
  restartAgent(): Promise<Agent>;
  close(): Promise<void>;
}

export async function startAgentHarness(opts: AgentHarnessOptions): Promise<AgentHarness> {
  const withApi = opts.api ?? true;
  let reg: Registries | undefined;
  let daemon: TestDaemon | undefined;
  let containerd: TestContainerd | undefined;
  let api: TestApiServer | undefined;
  let base: string | undefined;
  let agent: Agent | undefined;

  // Pod cgroups of this run under a root of its own, removed at the end.
  const cgroupRoot = `/nodelet-agent-test-${randomBytes(3).toString('hex')}`;
  const close = async (): Promise<void> => {
    await agent?.stop();
    await daemon?.cleanup();
    await containerd?.cleanup();
    await (await PodCgroups.detect(logger({ component: 'test' }))).remove(cgroupRoot).catch(() => undefined);
    await api?.close();
    await reg?.stop();
    if (base) {
      await unmountAllUnder(base);
      await fsp.rm(base, { recursive: true, force: true });
    }
  };

  try {
    reg = await useRegistries();
    const busybox = `${reg.plain}/nodelet-test/busybox:latest`;
    let criSocket: string;
    if (opts.runtime === 'containerd') {
      containerd = await startTestContainerd(reg.plain);
      criSocket = containerd.socket;
    } else {
      daemon = await startTestDaemon();
      if (opts.pullBusybox ?? true) await daemon.client.image('PullImage', { image: { image: busybox } });
      criSocket = daemon.socket;
    }
    if (withApi) api = await startTestApiServer({ bookmarkIntervalMs: 500 });
    base = await fsp.mkdtemp(path.join(os.tmpdir(), opts.name));
    const manifests = opts.staticPods ? path.join(base, 'manifests') : undefined;
    if (manifests) await fsp.mkdir(manifests);
    const overrides = (await opts.configure?.({ reg, base, api, criSocket })) ?? {};
    const config: AgentConfig = {
      ...defaultAgentConfig(),
      nodeName: opts.nodeName,
      criEndpoint: `unix://${criSocket}`,
      root: path.join(base, 'root'),
      podLogsDir: path.join(base, 'pods'),
      kubeletApiAddress: '127.0.0.1:0', // its own free port: parallel runs must not collide on 10250
      // Workers are woken by the PLEG (relist every 300 ms, or the runtime's events), not by their resync.
      podResyncMs: 5000,
      plegRelistMs: 300,
      cgroupRoot,
      // A shared test disk must not make the node evict pods or collect images (tests that want them set their own).
      evictionHard: parseEvictionHard('memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%'),
      imageGcHighThresholdPercent: 100,
      imageGcLowThresholdPercent: 99,
      ...(manifests ? { podManifestPath: manifests, manifestPollMs: 300 } : {}),
      ...(api ? { kubeconfig: api.kubeconfigPath, leaseRenewSeconds: 1, nodeStatusReportSeconds: 5 } : {}),
      ...overrides,
    };
    agent = new Agent(config);
    await agent.start();
    const harness: AgentHarness = {
      reg,
      daemon,
      containerd,
      api,
      base,
      manifests,
      busybox,
      nodeName: opts.nodeName,
      config,
      agent,
      async restartAgent() {
        await agent!.stop();
        agent = new Agent(config);
        harness.agent = agent;
        await agent.start();
        return agent;
      },
      close,
    };
    return harness;
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** Waits until the pod exists and `pred` holds; the failure names the pod's last status. */
export async function waitPod(api: TestApiServer, ns: string, name: string, what: string, pred: (pod: any) => boolean, timeoutMs = 20_000): Promise<any> {
  return waitFor(`${name}: ${what}`, async () => {
    const pod = api.get('pods', ns, name);
    return pod && pred(pod) ? pod : undefined;
  }, timeoutMs).catch((err) => {
    throw new Error(`${err.message}\nlast pod: ${JSON.stringify(api.get('pods', ns, name)?.status, null, 1)}`);
  });
}

/** ExecSync in a container: the exit code and stdout followed by stderr. */
export async function execCapture(client: CriClient, containerId: string, cmd: string[]): Promise<{ code: number; out: string }> {
  const res = await client.runtime('ExecSync', { container_id: containerId, cmd, timeout: 10 });
  return { code: res.exit_code, out: `${res.stdout.toString()}${res.stderr.toString()}` };
}
