// A throwaway Kubernetes control plane on 127.0.0.1 for conformance runs and tests: etcd, the real
// kube-apiserver, kube-scheduler and kube-controller-manager, each on a free port, with a PKI made by
// openssl in a temp dir. Usable from node:test (no report dependency): start, use, stop().
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../helpers/spawn.js';
import { freePort, stopChild } from '../helpers/registries.js';
import { findTools, type Tools } from './tools.js';

export interface ControlPlaneOptions {
  /** The binaries (default: findTools()). */
  tools?: Pick<Tools, 'etcd' | 'kube-apiserver' | 'kube-scheduler' | 'kube-controller-manager' | 'kubectl'>;
  /** Start kube-scheduler and kube-controller-manager too (default true). */
  controllers?: boolean;
  /** Service IPs (default 10.250.0.0/16: outside the test pod subnets). */
  serviceClusterIpRange?: string;
  /** Where the temp dir goes (default os.tmpdir()). */
  baseDir?: string;
  /** Bound on reaching ready (default 120 s). */
  readyTimeoutMs?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** The controller-manager's --cluster-signing-duration (default: its own, a year): short to test rotation. */
  clusterSigningDuration?: string;
}

export interface IssuedCert {
  certPath: string;
  keyPath: string;
}

export interface KubectlOptions {
  input?: string;
  timeoutMs?: number;
  kubeconfig?: string;
}

export type Component = 'etcd' | 'kube-apiserver' | 'kube-scheduler' | 'kube-controller-manager';

export interface ControlPlane {
  /** https://127.0.0.1:PORT */
  server: string;
  /** The cluster CA (signs every serving and client cert here, and the CSRs the controller-manager approves). */
  caPath: string;
  caKeyPath: string;
  /** Kubeconfig of a system:masters user. */
  adminKubeconfig: string;
  /** The cert the apiserver presents to kubelets (CN=kube-apiserver-kubelet-client, O=system:masters). */
  kubeletClientCert: IssuedCert;
  /** The temp dir holding PKI, kubeconfigs, etcd data and logs. */
  dir: string;
  serviceClusterIpRange: string;
  /** Kubeconfig (embedded client cert CN=system:node:<name>, O=system:nodes) for a node. */
  nodeCredentials(nodeName: string): Promise<string>;
  /** A client cert for any user and groups, signed by the cluster CA. */
  issueClientCert(commonName: string, organizations?: string[]): Promise<IssuedCert>;
  /** A serving cert signed by the cluster CA for these IPs and DNS names. */
  issueServingCert(name: string, ips: string[], dnsNames?: string[]): Promise<IssuedCert>;
  /** A kubeconfig for a client cert (embedded). */
  kubeconfigFor(user: string, cert: IssuedCert): Promise<string>;
  /** A bootstrap token (id.secret) the apiserver accepts, with the RBAC kubeadm sets up for TLS bootstrap. */
  bootstrapToken(): Promise<string>;
  /** Runs kubectl (as admin unless `kubeconfig` says otherwise); resolves stdout, rejects with stderr. */
  kubectl(args: string[], opts?: KubectlOptions): Promise<string>;
  /** One admin request to the apiserver (JSON in and out); never throws on a status code. */
  request(method: string, apiPath: string, body?: unknown): Promise<{ status: number; body: any }>;
  /**
   * An admin watch (`?watch=true` added to `apiPath`): calls `onEvent` for each event as it arrives.
   * Resolves once the apiserver answered 200 (events from then on are seen); `stop()` closes it.
   */
  watch(apiPath: string, onEvent: (type: string, object: any) => void): Promise<{ stop(): void }>;
  /** Whether every component is still running (a Ctrl-C reaches them too). */
  alive(): boolean;
  /** The last lines of a component's log. */
  logTail(component: Component, lines?: number): Promise<string>;
  /** Stops every process (SIGTERM, then SIGKILL) and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

const DAYS = '3';
const STOP_TIMEOUT_MS = 10_000;

type Child = ReturnType<typeof spawnChild>;



function ecKeyArgs(): string[] {
  return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
}

class Pki {
  constructor(readonly dir: string) {}
  get caCert(): string { return path.join(this.dir, 'ca.crt'); }
  get caKey(): string { return path.join(this.dir, 'ca.key'); }

  async makeCa(): Promise<void> {
    await run('openssl', [
      'req', '-x509', ...ecKeyArgs(), '-keyout', this.caKey, '-out', this.caCert, '-days', DAYS,
      '-subj', '/CN=nodelet-conformance-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,digitalSignature,keyCertSign,cRLSign',
    ]);
  }

  /** A key and a cert signed by the CA; `ext` lines go into the cert's extensions. */
  async issue(name: string, subject: string, ext: string[]): Promise<IssuedCert> {
    const keyPath = path.join(this.dir, `${name}.key`);
    const certPath = path.join(this.dir, `${name}.crt`);
    const csr = path.join(this.dir, `${name}.csr`);
    const extFile = path.join(this.dir, `${name}.ext`);
    await run('openssl', ['req', '-new', ...ecKeyArgs(), '-keyout', keyPath, '-out', csr, '-subj', subject]);
    await fsp.writeFile(extFile, `${['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...ext].join('\n')}\n`);
    await run('openssl', [
      'x509', '-req', '-in', csr, '-CA', this.caCert, '-CAkey', this.caKey,
      '-set_serial', `0x${randomBytes(12).toString('hex')}`, '-days', DAYS, '-extfile', extFile, '-out', certPath,
    ]);
    await fsp.rm(csr, { force: true });
    await fsp.rm(extFile, { force: true });
    return { certPath, keyPath };
  }

  client(name: string, cn: string, orgs: string[] = []): Promise<IssuedCert> {
    const subject = `${orgs.map((o) => `/O=${o}`).join('')}/CN=${cn}`;
    return this.issue(name, subject, ['extendedKeyUsage=clientAuth']);
  }

  serving(name: string, cn: string, ips: string[], dns: string[]): Promise<IssuedCert> {
    const san = [...ips.map((i) => `IP:${i}`), ...dns.map((d) => `DNS:${d}`)].join(',');
    return this.issue(name, `/CN=${cn}`, ['extendedKeyUsage=serverAuth', `subjectAltName=${san}`]);
  }
}

/** The first usable address of a CIDR (the `kubernetes` Service's ClusterIP). */
function firstServiceIp(cidr: string): string {
  const [base] = cidr.split('/');
  const parts = base!.split('.').map(Number);
  parts[3] = parts[3]! + 1;
  return parts.join('.');
}

function kubeconfigText(server: string, caPath: string, user: string, cert: IssuedCert): string {
  const b64 = (p: string) => readFileSync(p).toString('base64');
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'nodelet-conformance', cluster: { server, 'certificate-authority-data': b64(caPath) } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(cert.certPath), 'client-key-data': b64(cert.keyPath) } }],
    contexts: [{ name: 'default', context: { cluster: 'nodelet-conformance', user } }],
    'current-context': 'default',
  });
}

interface HttpsTarget {
  ca?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
}

/** A watch stream: newline-delimited JSON events, no read timeout (a watch is quiet between events). */
function httpsWatch(url: string, t: HttpsTarget, onEvent: (type: string, object: any) => void): Promise<{ stop(): void }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      headers: { accept: 'application/json' },
      ca: t.ca ? readFileSync(t.ca) : undefined,
      cert: t.cert ? readFileSync(t.cert) : undefined,
      key: t.key ? readFileSync(t.key) : undefined,
    }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`watch ${url}: HTTP ${res.statusCode}`));
        return;
      }
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        pending += chunk;
        for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (!line.trim()) continue;
          const event = JSON.parse(line) as { type: string; object: unknown };
          onEvent(event.type, event.object);
        }
      });
      res.on('error', () => undefined);
      resolve({ stop: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

function httpsGet(url: string, t: HttpsTarget, method = 'GET', payload?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method,
      headers: payload === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
      ca: t.ca ? readFileSync(t.ca) : undefined,
      cert: t.cert ? readFileSync(t.cert) : undefined,
      key: t.key ? readFileSync(t.key) : undefined,
      rejectUnauthorized: !t.insecure,
      timeout: 5000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const tools = opts.tools ?? findTools();
  const log = opts.log ?? (() => undefined);
  const serviceRange = opts.serviceClusterIpRange ?? '10.250.0.0/16';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 120_000;
  const dir = await fsp.mkdtemp(path.join(opts.baseDir ?? os.tmpdir(), 'nodelet-cp-'));
  const pkiDir = path.join(dir, 'pki');
  await fsp.mkdir(pkiDir);
  const pki = new Pki(pkiDir);
  const children: { name: Component; child: Child }[] = [];
  const logPath = (c: Component) => path.join(dir, `${c}.log`);
  let stopped = false;

  const logTail = async (c: Component, lines = 30) =>
    (await fsp.readFile(logPath(c), 'utf8').catch(() => '')).trimEnd().split('\n').slice(-lines).join('\n');

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // Reverse order: controllers first, etcd last.
    for (const { child } of [...children].reverse()) await stopChild(child, STOP_TIMEOUT_MS).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  };

  const start = (name: Component, file: string, args: string[]): Child => {
    const out = { file: logPath(name), append: true } as const;
    const child = spawnChild(file, args, { stdin: 'ignore', stdout: out, stderr: out, buffer: false });
    children.push({ name, child });
    return child;
  };

  const exited = (child: Child) => child.exitCode !== null || child.signalCode !== null;

  /** Polls `probe` until it returns true, bounded; fails early when the child exits. */
  const waitFor = async (what: string, component: Component, child: Child | undefined, probe: () => Promise<boolean>, timeoutMs = readyTimeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (child && exited(child)) throw new Error(`${component} exited (${child.exitCode ?? child.signalCode}) before ${what}:\n${await logTail(component)}`);
      try {
        if (await probe()) return;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(250);
    }
    throw new Error(`${what}: not after ${timeoutMs} ms${last ? ` (last: ${last})` : ''}:\n${await logTail(component)}`);
  };

  try {
    const started = Date.now();
    // PKI: one CA for everything (kubeadm splits etcd and front-proxy CAs; one is enough here).
    await pki.makeCa();
    const serviceIp = firstServiceIp(serviceRange);
    const [apiServing, admin, kubeletClient, schedulerCert, cmCert] = await Promise.all([
      pki.serving('apiserver', 'kube-apiserver', ['127.0.0.1', serviceIp],
        ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local']),
      pki.client('admin', 'kubernetes-admin', ['system:masters']),
      pki.client('apiserver-kubelet-client', 'kube-apiserver-kubelet-client', ['system:masters']),
      pki.client('scheduler', 'system:kube-scheduler'),
      pki.client('controller-manager', 'system:kube-controller-manager'),
    ]);
    const saKey = path.join(pkiDir, 'sa.key');
    const saPub = path.join(pkiDir, 'sa.pub');
    await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', saKey]);
    await run('openssl', ['pkey', '-in', saKey, '-pubout', '-out', saPub]);
    log(`control plane: PKI in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    // etcd: plain http on loopback, its own data dir.
    const etcdClient = await freePort();
    const etcdPeer = await freePort();
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const etcd = start('etcd', tools.etcd, [
      '--name', 'nodelet-cp',
      '--data-dir', path.join(dir, 'etcd'),
      '--listen-client-urls', etcdUrl,
      '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
      '--initial-cluster', `nodelet-cp=http://127.0.0.1:${etcdPeer}`,
      '--listen-metrics-urls', `http://127.0.0.1:${await freePort()}`,
      '--unsafe-no-fsync',
      '--log-level', 'warn',
    ]);
    await waitFor('etcd healthy', 'etcd', etcd, async () => {
      const res = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(2000) });
      const body = await res.text();
      return res.status === 200 && body.includes('true');
    });
    log(`control plane: etcd on ${etcdUrl}`);

    // kube-apiserver.
    const apiPort = await freePort();
    const server = `https://127.0.0.1:${apiPort}`;
    const apiserver = start('kube-apiserver', tools['kube-apiserver'], [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      `--cert-dir=${path.join(dir, 'apiserver-certs')}`,
      `--tls-cert-file=${apiServing.certPath}`,
      `--tls-private-key-file=${apiServing.keyPath}`,
      `--client-ca-file=${pki.caCert}`,
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      '--enable-bootstrap-token-auth=true',
      '--allow-privileged=true',
      `--service-cluster-ip-range=${serviceRange}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      `--kubelet-client-certificate=${kubeletClient.certPath}`,
      `--kubelet-client-key=${kubeletClient.keyPath}`,
      '--kubelet-preferred-address-types=InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP',
      '--profiling=false',
      '--v=1',
    ]);
    const asAdmin: HttpsTarget = { ca: pki.caCert, cert: admin.certPath, key: admin.keyPath };
    await waitFor('kube-apiserver /readyz', 'kube-apiserver', apiserver, async () => {
      const res = await httpsGet(`${server}/readyz`, asAdmin);
      return res.status === 200;
    });
    log(`control plane: kube-apiserver on ${server} after ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const adminKubeconfig = path.join(dir, 'admin.kubeconfig');
    await fsp.writeFile(adminKubeconfig, kubeconfigText(server, pki.caCert, 'kubernetes-admin', admin), { mode: 0o600 });
    const kubeconfigFor = async (user: string, cert: IssuedCert) => {
      const p = path.join(dir, `${user.replace(/[^A-Za-z0-9_.-]/g, '_')}.kubeconfig`);
      await fsp.writeFile(p, kubeconfigText(server, pki.caCert, user, cert), { mode: 0o600 });
      return p;
    };

    if (opts.controllers ?? true) {
      const schedulerKc = await kubeconfigFor('system:kube-scheduler', schedulerCert);
      const cmKc = await kubeconfigFor('system:kube-controller-manager', cmCert);
      const schedPort = await freePort();
      const scheduler = start('kube-scheduler', tools['kube-scheduler'], [
        `--kubeconfig=${schedulerKc}`,
        `--authentication-kubeconfig=${schedulerKc}`,
        `--authorization-kubeconfig=${schedulerKc}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${schedPort}`,
        `--cert-dir=${path.join(dir, 'scheduler-certs')}`,
        '--leader-elect=false',
        '--v=1',
      ]);
      const cmPort = await freePort();
      const controllerManager = start('kube-controller-manager', tools['kube-controller-manager'], [
        `--kubeconfig=${cmKc}`,
        `--authentication-kubeconfig=${cmKc}`,
        `--authorization-kubeconfig=${cmKc}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${cmPort}`,
        `--cert-dir=${path.join(dir, 'controller-manager-certs')}`,
        '--leader-elect=false',
        '--use-service-account-credentials=true',
        `--root-ca-file=${pki.caCert}`,
        `--service-account-private-key-file=${saKey}`,
        `--cluster-signing-cert-file=${pki.caCert}`,
        `--cluster-signing-key-file=${pki.caKey}`,
        `--service-cluster-ip-range=${serviceRange}`,
        '--controllers=*,bootstrapsigner,tokencleaner',
        ...(opts.clusterSigningDuration ? [`--cluster-signing-duration=${opts.clusterSigningDuration}`] : []),
        // Its default is under /usr/libexec; nothing of ours goes outside the temp dir.
        `--flex-volume-plugin-dir=${path.join(dir, 'flexvolume')}`,
        '--v=1',
      ]);
      await Promise.all([
        waitFor('kube-scheduler /healthz', 'kube-scheduler', scheduler, async () =>
          (await httpsGet(`https://127.0.0.1:${schedPort}/healthz`, { insecure: true })).status === 200),
        waitFor('kube-controller-manager /healthz', 'kube-controller-manager', controllerManager, async () =>
          (await httpsGet(`https://127.0.0.1:${cmPort}/healthz`, { insecure: true })).status === 200),
      ]);
      // Pods need the default service account and the root CA config map before they can be admitted and run.
      await waitFor('default service account and kube-root-ca.crt', 'kube-controller-manager', controllerManager, async () => {
        const sa = await httpsGet(`${server}/api/v1/namespaces/default/serviceaccounts/default`, asAdmin);
        const cm = await httpsGet(`${server}/api/v1/namespaces/default/configmaps/kube-root-ca.crt`, asAdmin);
        return sa.status === 200 && cm.status === 200;
      });
      log(`control plane: scheduler and controller-manager ready after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } else {
      await waitFor('default namespace', 'kube-apiserver', apiserver, async () =>
        (await httpsGet(`${server}/api/v1/namespaces/default`, asAdmin)).status === 200);
    }

    const kubectl = async (args: string[], o: KubectlOptions = {}) => {
      const res = await run(tools.kubectl, [`--kubeconfig=${o.kubeconfig ?? adminKubeconfig}`, ...args], {
        input: o.input, timeoutMs: o.timeoutMs ?? 60_000, reject: false,
      });
      if (res.exitCode !== 0) {
        throw new Error(`kubectl ${args.join(' ')}: ${res.timedOut ? 'timed out' : `exit ${res.exitCode}`}: ${res.stderr.trim().slice(0, 2000)}`);
      }
      return res.stdout;
    };

    let issued = 0;
    const cp: ControlPlane = {
      server,
      caPath: pki.caCert,
      caKeyPath: pki.caKey,
      adminKubeconfig,
      kubeletClientCert: kubeletClient,
      dir,
      serviceClusterIpRange: serviceRange,
      async nodeCredentials(nodeName) {
        const cert = await pki.client(`node-${nodeName}-${issued++}`, `system:node:${nodeName}`, ['system:nodes']);
        return kubeconfigFor(`system:node:${nodeName}`, cert);
      },
      issueClientCert(cn, orgs = []) {
        return pki.client(`client-${issued++}`, cn, orgs);
      },
      issueServingCert(name, ips, dnsNames = []) {
        return pki.serving(`serving-${name}-${issued++}`, name, ips, dnsNames);
      },
      kubeconfigFor,
      async bootstrapToken() {
        const id = randomBytes(3).toString('hex');
        const secret = randomBytes(8).toString('hex');
        const group = 'system:bootstrappers:nodelet:default-node-token';
        await kubectl(['apply', '-f', '-'], {
          input: YAML.stringify({
            apiVersion: 'v1',
            kind: 'List',
            items: [
              {
                apiVersion: 'v1', kind: 'Secret', type: 'bootstrap.kubernetes.io/token',
                metadata: { name: `bootstrap-token-${id}`, namespace: 'kube-system' },
                stringData: {
                  'token-id': id, 'token-secret': secret,
                  'usage-bootstrap-authentication': 'true', 'usage-bootstrap-signing': 'true',
                  'auth-extra-groups': group,
                  expiration: new Date(Date.now() + 24 * 3600_000).toISOString().replace(/\.\d+Z$/, 'Z'),
                },
              },
              // What kubeadm binds: bootstrappers may create CSRs, and theirs (and renewals) are auto-approved.
              {
                apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding',
                metadata: { name: 'nodelet:kubelet-bootstrap' },
                roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:node-bootstrapper' },
                subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: group }],
              },
              {
                apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding',
                metadata: { name: 'nodelet:node-autoapprove-bootstrap' },
                roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:certificates.k8s.io:certificatesigningrequests:nodeclient' },
                subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: group }],
              },
              {
                apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding',
                metadata: { name: 'nodelet:node-autoapprove-certificate-rotation' },
                roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient' },
                subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:nodes' }],
              },
            ],
          }),
        });
        return `${id}.${secret}`;
      },
      kubectl,
      async request(method, apiPath, body) {
        const res = await httpsGet(`${server}${apiPath}`, asAdmin, method, body === undefined ? undefined : JSON.stringify(body));
        let parsed: any = res.body;
        try {
          parsed = JSON.parse(res.body);
        } catch {
          // not JSON (e.g. /readyz): the text
        }
        return { status: res.status, body: parsed };
      },
      watch(apiPath, onEvent) {
        return httpsWatch(`${server}${apiPath}${apiPath.includes('?') ? '&' : '?'}watch=true`, asAdmin, onEvent);
      },
      logTail,
      alive: () => !stopped && children.every(({ child }) => !exited(child)),
      stop,
    };
    return cp;
  } catch (err) {
    await stop();
    throw err;
  }
}
