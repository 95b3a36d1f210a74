// The node checks: one node (the real kubelet or nodelet-agent) on a nodelet-cri of its own, joined to
// a control plane of our own, must do what a node does — Ready, a 10-replica Deployment, logs, exec,
// port-forward through the apiserver, liveness restarts, static/mirror pods, and clean teardown of
// scaled-down pods and deleted namespaces (checked in the runtime through crictl).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { spawnChild } from '../helpers/spawn.js';
import type { Tools } from './tools.js';
import type { ConformanceReport } from './report.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { Cleanup } from './cleanup.js';
import { addNodeAddress, prepareCgroupRoot, prepareKubeletHost, startAgent, startKubelet, startNodeRuntime, type NodeRuntime, type NodeUnderTest } from './node-host.js';
import { useRegistries, type Registries } from '../helpers/registries.js';

export type NodeAgentKind = 'kubelet' | 'nodelet-agent';

/** What the node phases share: one control plane and one registry, started on first use. */
export class SharedCluster {
  private cp?: Promise<ControlPlane>;
  private registries?: Promise<Registries>;
  constructor(private readonly tools: Tools, private readonly cleanup: Cleanup) {}

  controlPlane(): Promise<ControlPlane> {
    if (!this.cp) {
      this.cp = startControlPlane({ tools: this.tools, log: (l) => process.stdout.write(`   ${l}\n`) });
      const cp = this.cp;
      this.cleanup.add('stop the control plane', async () => (await cp).stop());
    }
    return this.cp;
  }

  registry(): Promise<Registries> {
    if (!this.registries) {
      this.registries = useRegistries();
      const r = this.registries;
      this.cleanup.add('stop the registries', async () => (await r).stop());
    }
    return this.registries;
  }
}

const IMAGE = 'docker.io/nodelet-test/busybox:1.0';
const REPLICAS = 10;

class CheckFailure extends Error {}
/** Thrown by a probe when waiting longer is pointless (the node exited). */
class Hopeless extends Error {}

interface Ctx {
  cp: ControlPlane;
  node: NodeUnderTest;
  runtime: NodeRuntime;
  ns: string;
  tag: string;
}

/** Polls `probe` every half second until it returns a value, bounded; the error carries `detail()`. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false>, detail: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      if (err instanceof Hopeless) throw new CheckFailure(`${what}: ${err.message}\n${await detail()}`);
      lastError = (err as Error).message;
    }
    await sleep(500);
  }
  throw new CheckFailure(`${what}: not within ${timeoutMs / 1000} s${lastError ? ` (last error: ${lastError})` : ''}\n${await detail()}`);
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

async function listPods(cp: ControlPlane, ns: string, selector?: string): Promise<any[]> {
  const q = selector ? `?labelSelector=${encodeURIComponent(selector)}` : '';
  const res = await cp.request('GET', `/api/v1/namespaces/${ns}/pods${q}`);
  if (res.status !== 200) throw new Error(`list pods in ${ns}: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  return res.body.items;
}

function podLine(p: any): string {
  const cs = (p.status?.containerStatuses ?? []).map((c: any) => {
    const state = Object.keys(c.state ?? {})[0] ?? '?';
    const why = c.state?.waiting?.reason ?? c.state?.terminated?.reason ?? '';
    return `${c.name}=${state}${why ? `(${why})` : ''} restarts=${c.restartCount}`;
  }).join(', ');
  return `${p.metadata.name}: ${p.status?.phase ?? '?'}${p.spec?.nodeName ? ` on ${p.spec.nodeName}` : ' unscheduled'}${cs ? ` [${cs}]` : ''}`;
}

/** Pods, recent events and the node's log tail: what to read when a check fails. */
async function describe(ctx: Ctx, ns = ctx.ns, selector?: string): Promise<string> {
  const parts: string[] = [];
  try {
    const pods = await listPods(ctx.cp, ns, selector);
    parts.push(`pods in ${ns}${selector ? ` (${selector})` : ''}:\n${pods.slice(0, 12).map((p) => `  ${podLine(p)}`).join('\n') || '  none'}`);
  } catch (err) {
    parts.push(`pods: ${(err as Error).message}`);
  }
  const ev = await ctx.cp.request('GET', `/api/v1/namespaces/${ns}/events`).catch(() => undefined);
  if (ev?.status === 200) {
    const items = (ev.body.items as any[]).sort((a, b) => String(a.lastTimestamp ?? a.eventTime).localeCompare(String(b.lastTimestamp ?? b.eventTime)));
    parts.push(`events:\n${items.slice(-8).map((e) => `  ${e.involvedObject?.name}: ${e.reason}: ${String(e.message).slice(0, 200)}`).join('\n') || '  none'}`);
  }
  const exited = ctx.node.exited();
  parts.push(`${ctx.node.kind}${exited ? ` ${exited}` : ''} log tail:\n${await ctx.node.logTail(15)}`);
  return parts.join('\n');
}

async function create(cp: ControlPlane, apiPath: string, obj: unknown): Promise<void> {
  const res = await cp.request('POST', apiPath, obj);
  if (res.status !== 201 && res.status !== 200) throw new Error(`POST ${apiPath}: HTTP ${res.status} ${res.body?.message ?? JSON.stringify(res.body).slice(0, 300)}`);
}

function podSpec(ctx: Ctx, containers: any[], extra: Record<string, unknown> = {}): any {
  return {
    nodeSelector: { 'kubernetes.io/hostname': ctx.node.name },
    // Busybox as PID 1 ignores SIGTERM: keep deletions short.
    terminationGracePeriodSeconds: 2,
    containers: containers.map((c) => ({ image: IMAGE, imagePullPolicy: 'IfNotPresent', ...c })),
    ...extra,
  };
}

function allRunning(pods: any[], n: number): boolean {
  return pods.length === n && pods.every((p) => p.status?.phase === 'Running' && !p.metadata.deletionTimestamp);
}

/** Sandboxes and containers the runtime still holds for pods matching `match` (by CRI labels). */
async function leftovers(runtime: NodeRuntime, ns: string, podNamePrefix?: string): Promise<string[]> {
  const match = (labels: Record<string, string> = {}) =>
    labels['io.kubernetes.pod.namespace'] === ns && (!podNamePrefix || (labels['io.kubernetes.pod.name'] ?? '').startsWith(podNamePrefix));
  const sandboxes = JSON.parse(await runtime.crictl(['pods', '-o', 'json'])).items ?? [];
  const containers = JSON.parse(await runtime.crictl(['ps', '-a', '-o', 'json'])).containers ?? [];
  return [
    ...sandboxes.filter((s: any) => match(s.labels)).map((s: any) => `sandbox ${s.metadata?.name} ${s.state}`),
    ...containers.filter((c: any) => match(c.labels)).map((c: any) => `container ${c.labels?.['io.kubernetes.pod.name']}/${c.metadata?.name} ${c.state}`),
  ];
}

/** `kubectl port-forward` to a free local port; resolves the port and a stop function. */
async function portForward(cp: ControlPlane, tools: Tools, ns: string, pod: string, remotePort: number) {
  const child = spawnChild(tools.kubectl, [`--kubeconfig=${cp.adminKubeconfig}`, '-n', ns, 'port-forward', `pod/${pod}`, `:${remotePort}`, '--address', '127.0.0.1'], {
    stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', buffer: false,
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await child.then(() => undefined, () => undefined);
    }
  };
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`port-forward gave no local port within 30 s: ${output.slice(-500)}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void child.then(() => {
      clearTimeout(timer);
      reject(new Error(`port-forward exited: ${output.slice(-500)}`));
    }, () => undefined);
  }).catch(async (err) => {
    await stop();
    throw err;
  });
  return { port, stop, output: () => output };
}

export async function runNodeChecksPhase(tools: Tools, report: ConformanceReport, agent: NodeAgentKind, shared?: SharedCluster): Promise<void> {
  const cleanup = new Cleanup();
  const phaseStarted = Date.now();
  const failedBefore = report.failed.length;
  const say = (l: string) => process.stdout.write(`   ${l} (+${seconds(phaseStarted)})\n`);
  try {
    const cluster = shared ?? new SharedCluster(tools, cleanup);
    const [cp, registries] = await Promise.all([cluster.controlPlane(), cluster.registry()]);
    const tag = randomBytes(3).toString('hex');
    const nodeName = `cf-${agent === 'kubelet' ? 'kubelet' : 'agent'}-${tag}`;
    const ns = `${nodeName}`;
    const doomedNs = `${nodeName}-doomed`;
    const address = await addNodeAddress(cleanup);
    const host = agent === 'kubelet' ? await prepareKubeletHost(cleanup) : await prepareCgroupRoot(cleanup);
    const runtime = await startNodeRuntime(tools, registries.plain, cleanup);
    say(`nodelet-cri on ${runtime.endpoint}, node IP ${address.ip} on ${address.iface}`);
    // Runs after the node stops (cleanup is last-in first-out): the cluster outlives this phase.
    cleanup.add('delete the Node and force-delete its pods', async () => {
      if (!cp.alive()) return;
      for (const n of [ns, doomedNs]) {
        await cp.kubectl(['delete', 'pods', '--all', '-n', n, '--force', '--grace-period=0', '--wait=false'], { timeoutMs: 20_000 }).catch(() => undefined);
      }
      await cp.request('DELETE', `/api/v1/nodes/${nodeName}`);
    });
    const nodeStarted = Date.now();
    const node = agent === 'kubelet'
      ? await startKubelet(tools, cp, runtime, address, nodeName, host.cgroupRoot, cleanup)
      : await startAgent(cp, runtime, address, nodeName, host.cgroupRoot, cleanup);
    cleanup.add('delete the namespaces and the static pod manifest', async () => {
      await fsp.rm(path.join(node.staticPodDir, 'cf-static.yaml'), { force: true });
      if (!cp.alive()) return;
      for (const n of [ns, doomedNs]) await cp.request('DELETE', `/api/v1/namespaces/${n}`);
    });
    say(`${agent} started as node ${nodeName}; log ${node.logPath}`);
    // Runs first at cleanup: the logs outlive the temp dirs when a check failed (or when asked).
    cleanup.add('keep the logs', async () => {
      const keepDir = process.env.NODELET_CONFORMANCE_LOGS;
      if (!keepDir && report.failed.length === failedBefore) return;
      const dest = path.join(keepDir ?? os.tmpdir(), `nodelet-conformance-${nodeName}`);
      await fsp.mkdir(dest, { recursive: true });
      await fsp.copyFile(node.logPath, path.join(dest, path.basename(node.logPath)));
      await fsp.copyFile(runtime.daemon.logFile, path.join(dest, 'nodelet-cri.log'));
      for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const) {
        await fsp.writeFile(path.join(dest, `${c}.log`), await cp.logTail(c, 2000));
      }
      say(`logs kept in ${dest}`);
    });
    const ctx: Ctx = { cp, node, runtime, ns, tag };
    await create(cp, '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    await create(cp, '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: doomedNs } });

    const name = (check: string) => `${agent}: ${check}`;
    const ready = await report.check(name('node Ready'), async () => {
      const n = await until('node Ready', 120_000, async () => {
        if (node.exited()) throw new Hopeless(`${agent} ${node.exited()}`);
        const res = await cp.request('GET', `/api/v1/nodes/${nodeName}`);
        if (res.status !== 200) return undefined;
        const cond = (res.body.status?.conditions ?? []).find((c: any) => c.type === 'Ready');
        return cond?.status === 'True' ? res.body : undefined;
      }, async () => {
        const res = await cp.request('GET', `/api/v1/nodes/${nodeName}`);
        const conds = res.status === 200 ? (res.body.status?.conditions ?? []).map((c: any) => `${c.type}=${c.status} ${c.reason ?? ''} ${c.message ?? ''}`).join('; ') : `HTTP ${res.status}`;
        return `node: ${conds}\n${node.kind}${node.exited() ? ` ${node.exited()}` : ''} log tail:\n${await node.logTail(20)}`;
      });
      const ip = (n.status?.addresses ?? []).find((a: any) => a.type === 'InternalIP')?.address;
      const labels = n.metadata?.labels ?? {};
      const missing = ['kubernetes.io/hostname', 'kubernetes.io/os', 'kubernetes.io/arch'].filter((l) => !labels[l]);
      if (missing.length > 0) throw new Error(`Ready, but labels missing: ${missing.join(', ')}`);
      if (ip !== address.ip) throw new Error(`Ready, but InternalIP ${ip ?? 'none'} (want ${address.ip})`);
      return `Ready ${seconds(nodeStarted)} after start; InternalIP ${ip}`;
    });
    const checks = {
      deployment: `deployment of ${REPLICAS} replicas Running`,
      logs: 'kubectl logs',
      exec: 'kubectl exec',
      portForward: 'kubectl port-forward',
      readiness: 'httpGet readiness probe makes the pod Ready',
      liveness: 'failing exec liveness probe restarts the container; logs --previous',
      volumes: 'init container, emptyDir, configMap, secret, downward API, service account token',
      completion: 'run-to-completion pods: Succeeded with exit 0, Failed with exit 7',
      stats: 'node stats: /stats/summary and /metrics/resource (what kubectl top reads) cover a running pod',
      logRotation: 'container log rotation at 1 MiB keeps kubectl logs current',
      runtimeRestart: 'nodelet-cri killed and restarted: pods keep their containers, node stays Ready, exec works',
      staticPod: "static pod's mirror pod Running",
      scaleToZero: 'scale to 0 leaves no containers or sandboxes',
      namespace: 'deleted namespace leaves nothing in the runtime',
    };
    if (!ready) {
      for (const c of Object.values(checks)) report.skip(name(c), 'node never became Ready');
      return;
    }

    // 1. The Deployment, timed from create to all replicas Running.
    await report.check(name(checks.deployment), async () => {
      const started = Date.now();
      await create(cp, `/apis/apps/v1/namespaces/${ns}/deployments`, {
        apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'sleepers' },
        spec: {
          replicas: REPLICAS,
          selector: { matchLabels: { app: 'sleepers' } },
          template: {
            metadata: { labels: { app: 'sleepers' } },
            spec: podSpec(ctx, [{ name: 'sleep', command: ['sleep', '3600'] }]),
          },
        },
      });
      await until(`${REPLICAS} replicas Running`, 180_000, async () => allRunning(await listPods(cp, ns, 'app=sleepers'), REPLICAS),
        () => describe(ctx, ns, 'app=sleepers'));
      return `${REPLICAS}/${REPLICAS} Running in ${seconds(started)}`;
    });

    // The other workloads, created together; each check below waits for its own.
    const marker = `conformance-${tag}`;
    const setup = await Promise.allSettled([
      create(cp, `/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web' },
        spec: podSpec(ctx, [{
          name: 'httpd',
          command: ['sh', '-c', `echo log-${marker}; mkdir -p /www; echo page-${marker} > /www/index.html; exec httpd -f -p 8080 -h /www`],
          ports: [{ containerPort: 8080 }],
          readinessProbe: { httpGet: { path: '/', port: 8080 }, periodSeconds: 1 },
        }]),
      }),
      create(cp, `/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: 'unhealthy' },
        spec: podSpec(ctx, [{
          name: 'sleep',
          command: ['sh', '-c', `echo started-${marker}; exec sleep 3600`],
          livenessProbe: { exec: { command: ['cat', '/tmp/absent'] }, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 1 },
        }]),
      }),
      fsp.writeFile(path.join(node.staticPodDir, 'cf-static.yaml'), YAML.stringify({
        apiVersion: 'v1', kind: 'Pod', metadata: { name: 'cf-static', namespace: ns },
        spec: { terminationGracePeriodSeconds: 2, containers: [{ name: 'sleep', image: IMAGE, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'] }] },
      })),
      create(cp, `/api/v1/namespaces/${ns}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cf-config' }, data: { greeting: `config-${marker}` } }),
      create(cp, `/api/v1/namespaces/${ns}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'cf-secret' }, stringData: { token: `secret-${marker}` } }),
      create(cp, `/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: 'volumes', labels: { app: 'volumes', tag: marker } },
        spec: podSpec(ctx, [{
          name: 'main',
          command: ['sh', '-c', 'cat /work/init /cfg/greeting /sec/token; echo; echo "env $POD_NAME $POD_IP"; cat /podinfo/labels; echo; exec sleep 3600'],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
          ],
          volumeMounts: [
            { name: 'work', mountPath: '/work' }, { name: 'cfg', mountPath: '/cfg' },
            { name: 'sec', mountPath: '/sec' }, { name: 'podinfo', mountPath: '/podinfo' },
          ],
        }], {
          initContainers: [{ name: 'init', image: IMAGE, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', `echo init-${marker} > /work/init`], volumeMounts: [{ name: 'work', mountPath: '/work' }] }],
          volumes: [
            { name: 'work', emptyDir: {} },
            { name: 'cfg', configMap: { name: 'cf-config' } },
            { name: 'sec', secret: { secretName: 'cf-secret' } },
            { name: 'podinfo', downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }] } },
          ],
        }),
      }),
      create(cp, `/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: 'chatty' },
        spec: podSpec(ctx, [{
          name: 'main',
          // 3 MB at once (past the 1 MiB rotation size), then a numbered line every 0.2 s.
          command: ['sh', '-c', `yes filler-${marker}-0123456789abcdef0123456789abcdef0123456789abcdef | head -c 3000000; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done`],
        }]),
      }),
      ...[['succeeds', 'echo done'], ['fails', 'exit 7']].map(([pod, script]) => create(cp, `/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: pod },
        spec: podSpec(ctx, [{ name: 'main', command: ['sh', '-c', script] }], { restartPolicy: 'Never' }),
      })),
      ...['doomed-a', 'doomed-b'].map((p) => create(cp, `/api/v1/namespaces/${doomedNs}/pods`, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: p, labels: { app: 'doomed' } },
        spec: podSpec(ctx, [{ name: 'sleep', command: ['sleep', '3600'] }]),
      })),
    ]);
    const setupErrors = setup.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => String(s.reason?.message ?? s.reason));
    if (setupErrors.length > 0) say(`setup errors: ${setupErrors.join('; ')}`);

    const waitRunning = (pod: string, namespace = ns) => until(`pod ${namespace}/${pod} Running`, 90_000, async () => {
      const res = await cp.request('GET', `/api/v1/namespaces/${namespace}/pods/${pod}`);
      return res.status === 200 && res.body.status?.phase === 'Running' && (res.body.status.containerStatuses ?? []).every((c: any) => c.state?.running);
    }, () => describe(ctx, namespace));

    // 2. Logs through the apiserver → node API → CRI log file.
    await report.check(name(checks.logs), async () => {
      await waitRunning('web');
      const logs = await until('the log line', 30_000, async () => {
        const out = await ctx.cp.kubectl(['logs', '-n', ns, 'web']);
        return out.includes(`log-${marker}`) ? out : undefined;
      }, () => describe(ctx));
      return `${logs.trim().split('\n').length} line(s), marker found`;
    });

    // 3. Exec: output, stdin, exit code.
    await report.check(name(checks.exec), async () => {
      await waitRunning('web');
      const out = await cp.kubectl(['exec', '-n', ns, 'web', '--', 'sh', '-c', 'echo $((6*7)); cat /www/index.html']);
      if (out !== `42\npage-${marker}\n`) throw new Error(`exec output ${JSON.stringify(out)}`);
      const echoed = await cp.kubectl(['exec', '-i', '-n', ns, 'web', '--', 'cat'], { input: `stdin-${marker}\n` });
      if (echoed !== `stdin-${marker}\n`) throw new Error(`exec -i echoed ${JSON.stringify(echoed)}`);
      const failed = await cp.kubectl(['exec', '-n', ns, 'web', '--', 'sh', '-c', 'exit 3']).then(() => 'exit 0', (err: Error) => err.message);
      if (!/exit 3\b/.test(failed)) throw new Error(`exec of 'exit 3' gave ${failed}`);
      return 'stdout, stdin and exit code 3 carried';
    });

    // 4. Port-forward: HTTP through the apiserver's tunnel to httpd in the pod.
    await report.check(name(checks.portForward), async () => {
      await waitRunning('web');
      const pf = await portForward(cp, tools, ns, 'web', 8080);
      try {
        for (let i = 0; i < 3; i++) {
          const res = await fetch(`http://127.0.0.1:${pf.port}/`, { signal: AbortSignal.timeout(15_000) });
          const body = await res.text();
          if (res.status !== 200 || body !== `page-${marker}\n`) throw new Error(`GET #${i + 1}: HTTP ${res.status} ${JSON.stringify(body.slice(0, 200))}; port-forward said: ${pf.output().slice(-300)}`);
        }
      } finally {
        await pf.stop();
      }
      return '3 HTTP GETs through port-forward';
    });

    await report.check(name(checks.readiness), async () => {
      const pod = await until('pod web Ready', 60_000, async () => {
        const res = await cp.request('GET', `/api/v1/namespaces/${ns}/pods/web`);
        const ready = (res.body?.status?.conditions ?? []).find((c: any) => c.type === 'Ready');
        return ready?.status === 'True' ? res.body : undefined;
      }, () => describe(ctx));
      if (!pod.status.containerStatuses?.[0]?.ready) throw new Error('pod Ready, but its container not');
      return `Ready; podIP ${pod.status.podIP}`;
    });

    // 5. A failing exec liveness probe restarts the container; the previous one's log stays readable.
    await report.check(name(checks.liveness), async () => {
      const started = Date.now();
      const restarts = await until('restartCount >= 1', 90_000, async () => {
        const res = await cp.request('GET', `/api/v1/namespaces/${ns}/pods/unhealthy`);
        const n = res.body?.status?.containerStatuses?.[0]?.restartCount ?? 0;
        return n >= 1 ? n : undefined;
      }, () => describe(ctx));
      const previous = await cp.kubectl(['logs', '--previous', '-n', ns, 'unhealthy']);
      if (!previous.includes(`started-${marker}`)) throw new Error(`restartCount ${restarts}, but logs --previous gave ${JSON.stringify(previous.slice(0, 200))}`);
      return `restartCount ${restarts} (seen ${seconds(started)} after the last check); logs --previous readable`;
    });

    await report.check(name(checks.volumes), async () => {
      const pod = await until('pod volumes Running', 90_000, async () => {
        const res = await cp.request('GET', `/api/v1/namespaces/${ns}/pods/volumes`);
        return res.status === 200 && res.body.status?.phase === 'Running' ? res.body : undefined;
      }, () => describe(ctx));
      const want = [`init-${marker}`, `config-${marker}`, `secret-${marker}`, `env volumes ${pod.status.podIP}`, `tag="${marker}"`];
      const logs = await until('the pod to print its volumes', 30_000, async () => {
        const out = await cp.kubectl(['logs', '-n', ns, 'volumes']);
        return want.every((w) => out.includes(w)) ? out : undefined;
      }, async () => `want ${want.join(', ')}; logs: ${JSON.stringify(await cp.kubectl(['logs', '-n', ns, 'volumes']).catch((e) => String(e)))}`);
      const token = await cp.kubectl(['exec', '-n', ns, 'volumes', '--', 'sh', '-c',
        'cat /var/run/secrets/kubernetes.io/serviceaccount/token | wc -c; ls /var/run/secrets/kubernetes.io/serviceaccount']);
      const [bytes] = token.trim().split('\n');
      if (!(Number(bytes) > 100) || !token.includes('ca.crt') || !token.includes('namespace')) throw new Error(`service account volume: ${JSON.stringify(token)}`);
      return `${logs.trim().split('\n').length} lines as expected; token ${Number(bytes)} bytes`;
    });

    await report.check(name(checks.completion), async () => {
      const phaseOf = async (pod: string) => (await cp.request('GET', `/api/v1/namespaces/${ns}/pods/${pod}`)).body;
      const [ok, bad] = await until('both pods finished', 90_000, async () => {
        const pods = await Promise.all([phaseOf('succeeds'), phaseOf('fails')]);
        return pods.every((p) => p?.status?.phase === 'Succeeded' || p?.status?.phase === 'Failed') ? pods : undefined;
      }, () => describe(ctx));
      const code = (p: any) => p.status.containerStatuses?.[0]?.state?.terminated?.exitCode;
      if (ok.status.phase !== 'Succeeded' || code(ok) !== 0) throw new Error(`succeeds: ${ok.status.phase}, exit ${code(ok)}`);
      if (bad.status.phase !== 'Failed' || code(bad) !== 7) throw new Error(`fails: ${bad.status.phase}, exit ${code(bad)}`);
      return 'Succeeded/0 and Failed/7';
    });

    await report.check(name(checks.stats), async () => {
      await waitRunning('web');
      const proxy = `/api/v1/nodes/${nodeName}/proxy`;
      // The first samples can lack a pod that just started: poll until both views have it.
      const found = await until('stats for pod web', 60_000, async () => {
        const summary = await cp.request('GET', `${proxy}/stats/summary`);
        if (summary.status === 404) throw new Hopeless('the node does not serve /stats/summary (HTTP 404)');
        if (summary.status !== 200) throw new Error(`stats/summary: HTTP ${summary.status} ${JSON.stringify(summary.body).slice(0, 200)}`);
        const pod = (summary.body.pods ?? []).find((p: any) => p.podRef?.name === 'web' && p.podRef?.namespace === ns);
        const c = pod?.containers?.find((x: any) => x.name === 'httpd');
        if (!(c?.memory?.workingSetBytes > 0) || c?.cpu?.usageCoreNanoSeconds === undefined) return undefined;
        const metrics = await cp.request('GET', `${proxy}/metrics/resource`);
        if (metrics.status === 404) throw new Hopeless('the node does not serve /metrics/resource (HTTP 404)');
        if (metrics.status !== 200) throw new Error(`metrics/resource: HTTP ${metrics.status}`);
        const text = String(metrics.body);
        const has = (metric: string) => text.split('\n').some((l) => l.startsWith(`${metric}{`) && l.includes('container="httpd"') && l.includes(`namespace="${ns}"`) && l.includes('pod="web"'));
        if (!has('container_cpu_usage_seconds_total') || !has('container_memory_working_set_bytes')) throw new Error('metrics/resource lacks pod web');
        return { ws: c.memory.workingSetBytes as number, nodeMem: summary.body.node?.memory?.workingSetBytes as number | undefined };
      }, () => describe(ctx));
      return `httpd working set ${found.ws} bytes; node working set ${found.nodeMem ?? '?'} bytes; metrics/resource has it`;
    });

    await report.check(name(checks.logRotation), async () => {
      const pod = await until('pod chatty Running', 90_000, async () => {
        const res = await cp.request('GET', `/api/v1/namespaces/${ns}/pods/chatty`);
        return res.status === 200 && res.body.status?.phase === 'Running' ? res.body : undefined;
      }, () => describe(ctx));
      const dir = path.join(node.podLogsDir, `${ns}_chatty_${pod.metadata.uid}`, 'main');
      const listing = async () => (await fsp.readdir(dir).catch(() => [] as string[])).sort();
      const rotated = await until('a rotated log file', 60_000, async () => {
        const files = await listing();
        return files.some((f) => f !== '0.log' && f.startsWith('0.log')) ? files : undefined;
      }, async () => `files in ${dir}: ${(await listing()).join(', ') || 'none'}\n${await describe(ctx)}`);
      const tick = async () => Number(/tick-(\d+)/.exec(await cp.kubectl(['logs', '--tail=1', '-n', ns, 'chatty']))?.[1] ?? NaN);
      const first = await until('a tick line in kubectl logs', 20_000, async () => {
        const n = await tick();
        return Number.isFinite(n) ? n : undefined;
      }, () => describe(ctx));
      const later = await until('kubectl logs advancing after rotation', 20_000, async () => {
        const n = await tick();
        return n > first ? n : undefined;
      }, async () => `stuck at tick-${first}; files ${(await listing()).join(', ')}\n${await describe(ctx)}`);
      const size = (await fsp.stat(path.join(dir, '0.log'))).size;
      return `rotated (${rotated.join(', ')}); current 0.log ${size} bytes; ticks ${first} -> ${later}`;
    });

    await report.check(name(checks.runtimeRestart), async () => {
      const steady = (pods: any[]) => pods.filter((p) => p.metadata.name.startsWith('sleepers-') || p.metadata.name === 'web' || p.metadata.name === 'volumes');
      const ids = (pods: any[]) => new Map(steady(pods).map((p) => [p.metadata.name, (p.status?.containerStatuses ?? []).map((c: any) => `${c.containerID}#${c.restartCount}`).join(',')]));
      const before = ids(await listPods(cp, ns));
      const heartbeat = async () => {
        const res = await cp.request('GET', `/api/v1/nodes/${nodeName}`);
        const ready = (res.body?.status?.conditions ?? []).find((c: any) => c.type === 'Ready');
        return { ready: ready?.status === 'True', at: Date.parse(ready?.lastHeartbeatTime ?? '') || 0 };
      };
      await runtime.daemon.kill();
      const killedAt = Date.now();
      await runtime.daemon.restart();
      const restartedIn = seconds(killedAt);
      // A heartbeat after the restart means the node asked the runtime for its status again.
      await until('a Ready heartbeat after the restart', 90_000, async () => {
        const hb = await heartbeat();
        return hb.ready && hb.at >= Math.floor(killedAt / 1000) * 1000 + 1000;
      }, async () => `node: ${JSON.stringify(await heartbeat())}\n${await describe(ctx)}`);
      const out = await until('exec after the restart', 30_000, async () => cp.kubectl(['exec', '-n', ns, 'web', '--', 'cat', '/www/index.html']), () => describe(ctx));
      if (out !== `page-${marker}\n`) throw new Error(`exec after restart gave ${JSON.stringify(out)}`);
      const after = ids(await listPods(cp, ns));
      const changed = [...before].filter(([pod, v]) => after.get(pod) !== v).map(([pod, v]) => `${pod}: ${v} -> ${after.get(pod) ?? 'gone'}`);
      if (changed.length > 0) throw new Error(`containers changed: ${changed.slice(0, 4).join('; ')}`);
      return `daemon back in ${restartedIn}; ${before.size} pods kept their containers`;
    });

    // 6. The static pod runs and has a mirror pod in the API.
    await report.check(name(checks.staticPod), async () => {
      const mirror = `cf-static-${nodeName}`;
      const pod = await until(`mirror pod ${mirror} Running`, 90_000, async () => {
        const res = await cp.request('GET', `/api/v1/namespaces/${ns}/pods/${mirror}`);
        return res.status === 200 && res.body.status?.phase === 'Running' ? res.body : undefined;
      }, () => describe(ctx));
      if (!pod.metadata?.annotations?.['kubernetes.io/config.mirror']) throw new Error('Running, but without the kubernetes.io/config.mirror annotation');
      return `${mirror} Running`;
    });

    // 7 and 8 wait on the node's garbage collection; run them side by side.
    const sleepersBefore = (await leftovers(runtime, ns, 'sleepers-').catch(() => [])).filter((l) => l.startsWith('sandbox')).length;
    await Promise.all([
      report.check(name(checks.scaleToZero), async () => {
        const started = Date.now();
        await cp.kubectl(['scale', '-n', ns, 'deployment/sleepers', '--replicas=0']);
        await until('no sleepers pods in the API', 90_000, async () => (await listPods(cp, ns, 'app=sleepers')).length === 0,
          () => describe(ctx, ns, 'app=sleepers'));
        const apiGone = seconds(started);
        let left: string[] = [];
        await until('no sleepers sandboxes or containers in the runtime', 150_000, async () => {
          left = await leftovers(runtime, ns, 'sleepers-');
          return left.length === 0;
        }, async () => `still in the runtime (${left.length}): ${left.slice(0, 6).join('; ')}\n${node.kind} log tail:\n${await node.logTail(10)}`);
        return `${sleepersBefore} sandboxes before; pods gone from the API in ${apiGone}, from the runtime in ${seconds(started)}`;
      }),
      report.check(name(checks.namespace), async () => {
        await waitRunning('doomed-a', doomedNs);
        await waitRunning('doomed-b', doomedNs);
        const started = Date.now();
        const res = await cp.request('DELETE', `/api/v1/namespaces/${doomedNs}`);
        if (res.status !== 200 && res.status !== 202) throw new Error(`DELETE namespace: HTTP ${res.status}`);
        await until(`namespace ${doomedNs} gone`, 120_000, async () =>
          (await cp.request('GET', `/api/v1/namespaces/${doomedNs}`)).status === 404, () => describe(ctx, doomedNs));
        const apiGone = seconds(started);
        let left: string[] = [];
        await until('nothing of the namespace in the runtime', 150_000, async () => {
          left = await leftovers(runtime, doomedNs);
          return left.length === 0;
        }, async () => `still in the runtime (${left.length}): ${left.slice(0, 6).join('; ')}\n${node.kind} log tail:\n${await node.logTail(10)}`);
        return `namespace gone from the API in ${apiGone}, its pods from the runtime in ${seconds(started)}`;
      }),
    ]);
  } finally {
    say('cleaning up');
    await cleanup.run();
  }
}
