// Real registries for the tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
// serving our fixture images without auth, with htpasswd basic auth and with token auth
// (our own token server), plus a proxy that corrupts blobs. All three registries share one
// filesystem storage; only the plain one is pushed to.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { run } from '../../src/common/exec.js';
import { spawnChild } from './spawn.js';
import { pathExists } from '../../src/common/fsutil.js';
import { hasCode } from '../../src/common/errors.js';
import { fixtureCacheDir, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST } from '../../scripts/build-test-images.js';
import { loadFixtureLayouts, loadFixtures, type FixtureImage } from './fixtures.js';
import { startTokenServer, type TokenServer } from './token-server.js';
import { startTamperProxy, type TamperProxy } from './tamper-proxy.js';

export const REGISTRY_BINARY = '/usr/bin/docker-registry';
export const REGISTRIES_ENV = 'NODELET_TEST_REGISTRIES';
export const BASIC_USERNAME = 'nodelet-basic';
export const BASIC_PASSWORD = 'basic-secret-2c9d';

export interface Registries {
  /** host:port of the registry without auth. */
  plain: string;
  basic: { host: string; username: string; password: string };
  bearer: { host: string; username: string; password: string; realm: string; service: string };
  /** host:port of the blob-corrupting proxy in front of `plain`. */
  tamper: string;
  stop(): Promise<void>;
}

/** The JSON written for NODELET_TEST_REGISTRIES: everything but stop(), plus the pids. */
export type RegistriesDescription = Omit<Registries, 'stop'> & { pids: number[] };

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const MANIFEST_ACCEPT = [MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');

type Child = ReturnType<typeof spawnChild>;

const registryPids = new WeakMap<Registries, number[]>();

export interface RegistryProcess {
  host: string;
  child: Child;
  logPath: string;
}

/** A TCP port free on `host` right now (tests bind their own servers to it next). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the child has exited. */
export async function stopChild(child: Child, timeoutMs = STOP_TIMEOUT_MS): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = child.then(() => undefined, () => undefined);
  child.kill('SIGTERM');
  const timer = new AbortController();
  const timedOut = await Promise.race([
    exited.then(() => false),
    sleep(timeoutMs, true, { signal: timer.signal }).catch(() => false),
  ]);
  timer.abort();
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

async function logTail(logPath: string): Promise<string> {
  const text = await fsp.readFile(logPath, 'utf8').catch(() => '');
  return text.split('\n').slice(-15).join('\n');
}

async function waitReady(host: string, child: Child, logPath: string): Promise<void> {
  let exited = false;
  void child.then(() => (exited = true), () => (exited = true));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`registry on ${host} exited early:\n${await logTail(logPath)}`);
    try {
      const res = await fetch(`http://${host}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`registry on ${host} not ready after ${READY_TIMEOUT_MS} ms:\n${await logTail(logPath)}`);
}

export async function startRegistryProcess(
  dir: string,
  name: string,
  storage: string,
  extra: { auth?: Record<string, unknown>; readOnly?: boolean },
): Promise<RegistryProcess> {
  let lastError: unknown;
  // The free port can be taken between our probe and the registry's bind; retry then.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const config = {
      version: 0.1,
      log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: storage },
        delete: { enabled: true },
        maintenance: {
          uploadpurging: { enabled: false },
          ...(extra.readOnly ? { readonly: { enabled: true } } : {}),
        },
      },
      http: { addr: host, secret: 'nodelet-test-shared-secret' },
      health: { storagedriver: { enabled: false } },
      ...(extra.auth ? { auth: extra.auth } : {}),
    };
    const configPath = path.join(dir, `${name}.yml`);
    const logPath = path.join(dir, `${name}.log`);
    await fsp.writeFile(configPath, YAML.stringify(config));
    const log = { file: logPath, append: true } as const;
    const child = spawnChild(REGISTRY_BINARY, ['serve', configPath], { stdin: 'ignore', stdout: log, stderr: log, buffer: false });
    try {
      await waitReady(host, child, logPath);
      return { host, child, logPath };
    } catch (err) {
      lastError = err;
      await stopChild(child);
    }
  }
  throw lastError;
}

/** The digest each tag resolves to in the registry, or undefined when absent. */
async function registryDigest(host: string, repository: string, tag: string): Promise<string | undefined> {
  const res = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: MANIFEST_ACCEPT },
  });
  await res.arrayBuffer();
  return res.status === 200 ? (res.headers.get('docker-content-digest') ?? undefined) : undefined;
}

async function missingTags(host: string, fixtures: FixtureImage[]): Promise<{ fixture: FixtureImage; tag: string }[]> {
  const missing: { fixture: FixtureImage; tag: string }[] = [];
  for (const fixture of fixtures) {
    for (const tag of fixture.tags) {
      if ((await registryDigest(host, fixture.repository, tag)) !== fixture.digest) missing.push({ fixture, tag });
    }
  }
  return missing;
}

/** Pushes fixture images into a registry with skopeo (two at a time). */
export async function pushFixtures(host: string, wanted?: { fixture: FixtureImage; tag: string }[]): Promise<void> {
  const layouts = await loadFixtureLayouts();
  const fixtures = Object.values(await loadFixtures());
  const jobs = wanted ?? fixtures.flatMap((fixture) => fixture.tags.map((tag) => ({ fixture, tag })));
  const queue = [...jobs];
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      const layout = layouts.find((l) => l.repository === job.fixture.repository)!;
      const args = ['copy', '--insecure-policy', '--dest-tls-verify=false', '--retry-times', '2'];
      if (layout.isIndex) args.push('--all');
      if (layout.pushFormat) args.push('--format', layout.pushFormat);
      args.push(`oci:${layout.dir}:${job.tag}`, `docker://${host}/${layout.repository}:${job.tag}`);
      await run('skopeo', args, { timeoutMs: 180_000 });
    }
  };
  await Promise.all([worker(), worker()]);
}

/** Copies a pushed registry storage into the cache so the next run skips the pushes. */
async function snapshotStorage(storage: string, cached: string): Promise<void> {
  const tmp = `${cached}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await run('cp', ['-a', storage, tmp], { timeoutMs: 120_000 });
    await fsp.rename(tmp, cached);
  } catch (err) {
    if (!(hasCode(err, 'ENOTEMPTY') || hasCode(err, 'EEXIST'))) throw err;
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/** Starts the plain, basic-auth and token-auth registries, the token server and the tamper proxy. */
export async function startRegistries(): Promise<Registries> {
  const fixtures = Object.values(await loadFixtures());
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-registries-'));
  const processes: RegistryProcess[] = [];
  let tokenServer: TokenServer | undefined;
  let tamperProxy: TamperProxy | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await Promise.all(processes.map((p) => stopChild(p.child)));
    await tamperProxy?.stop();
    await tokenServer?.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  };

  try {
    const storage = path.join(dir, 'storage');
    const cachedStorage = path.join(await fixtureCacheDir(), 'registry-storage');
    const fromCache = await pathExists(cachedStorage);
    if (fromCache) await run('cp', ['-a', cachedStorage, storage], { timeoutMs: 120_000 });
    else await fsp.mkdir(storage);

    const plain = await startRegistryProcess(dir, 'plain', storage, {});
    processes.push(plain);
    const missing = await missingTags(plain.host, fixtures);
    if (missing.length > 0) {
      await pushFixtures(plain.host, missing);
      const stillMissing = await missingTags(plain.host, fixtures);
      if (stillMissing.length > 0) {
        const what = stillMissing.map((m) => `${m.fixture.repository}:${m.tag} (want ${m.fixture.digest})`).join(', ');
        throw new Error(`fixtures not in the registry after push: ${what}`);
      }
      if (!fromCache) await snapshotStorage(storage, cachedStorage);
    }

    const htpasswdLine = (await run('htpasswd', ['-Bbn', BASIC_USERNAME, BASIC_PASSWORD])).stdout.trim();
    const htpasswdPath = path.join(dir, 'htpasswd');
    await fsp.writeFile(htpasswdPath, htpasswdLine + '\n');
    const basic = await startRegistryProcess(dir, 'basic', storage, {
      auth: { htpasswd: { realm: 'nodelet-test-basic', path: htpasswdPath } },
      readOnly: true,
    });
    processes.push(basic);

    tokenServer = await startTokenServer({ dir });
    const bearer = await startRegistryProcess(dir, 'bearer', storage, {
      auth: {
        token: {
          realm: tokenServer.realm,
          service: tokenServer.service,
          issuer: tokenServer.issuer,
          rootcertbundle: tokenServer.certPath,
        },
      },
      readOnly: true,
    });
    processes.push(bearer);

    tamperProxy = await startTamperProxy(plain.host);

    const registries: Registries = {
      plain: plain.host,
      basic: { host: basic.host, username: BASIC_USERNAME, password: BASIC_PASSWORD },
      bearer: {
        host: bearer.host,
        username: tokenServer.username,
        password: tokenServer.password,
        realm: tokenServer.realm,
        service: tokenServer.service,
      },
      tamper: tamperProxy.host,
      stop,
    };
    registryPids.set(registries, processes.map((p) => p.child.pid).filter((pid): pid is number => pid !== undefined));
    return registries;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The serializable description of running registries (for NODELET_TEST_REGISTRIES). */
export function describeRegistries(registries: Registries): RegistriesDescription {
  const { stop: _stop, ...rest } = registries;
  return { ...rest, pids: registryPids.get(registries) ?? [] };
}

/**
 * Registries for a test file: the run-wide ones when NODELET_TEST_REGISTRIES names their
 * description (stop() is then a no-op), else freshly started ones the caller must stop().
 */
export async function useRegistries(): Promise<Registries> {
  const file = process.env[REGISTRIES_ENV];
  if (!file) return startRegistries();
  const description = JSON.parse(await fsp.readFile(file, 'utf8')) as RegistriesDescription;
  return { ...description, stop: async () => {} };
}
