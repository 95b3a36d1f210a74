// Stand-ins for every image critest 1.36 pulls, built offline as OCI layouts (deterministic, cached
// like the test fixtures) and named by their upstream repository paths, so one local registry behind
// the runtime's registry mirrors answers for registry.k8s.io, gcr.io, k8s.gcr.io and public.ecr.aws.
//
// The busybox base is Debian's dynamic `busybox` (fetched with `apt-get download`): unlike
// busybox-static it runs commands from PATH instead of its own applets, which critest's MaskedPaths
// spec relies on ("/bin/sh: ls: Permission denied"). Applets are hard links, as in the upstream image.
// util-linux's ipcs comes from the host (busybox has none). Without the package, busybox-static stands in.
// nginx, nonewprivs and pause are tiny static C programs (gcc -static), see stand-ins/.
//
// test-image-digest@sha256:9700f9… pins an upstream digest that cannot be rebuilt offline: not built.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/common/exec.js';
import { pathExists } from '../../src/common/fsutil.js';
import { hasCode } from '../../src/common/errors.js';
import type { Descriptor } from '../../src/image/media-types.js';
import {
  BUSYBOX_PATH,
  buildLayer,
  busyboxApplets,
  cacheRoot,
  dir,
  file,
  hardlink,
  LayoutWriter,
  type BuiltLayer,
  type ImageConfigFields,
  type LayerEntry,
  type Platform,
} from '../build-test-images.js';

/** Bump when the content of any stand-in changes. */
export const CRITEST_IMAGES_VERSION = 'c2';

/** The registries critest names; each is mirrored to the one local registry. */
export const UPSTREAM_REGISTRIES = ['registry.k8s.io', 'gcr.io', 'k8s.gcr.io', 'public.ecr.aws', 'docker.io', 'quay.io'] as const;

/** The spec that needs an image we cannot build: its reference pins an upstream digest. */
export const UNBUILDABLE_DIGEST_IMAGE =
  'gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf';

/** One repository of the local registry (its path = the upstream path without the registry host). */
export interface StandInLayout {
  repository: string;
  tags: string[];
  dir: string;
  /** true when some tag points at an image index (push with --all). */
  hasIndex: boolean;
}

export interface StandInImages {
  root: string;
  layouts: StandInLayout[];
  /** How the busybox base was made ("debian busybox 1:1.35.0-…" or "busybox-static (no Debian busybox package)"). */
  busyboxSource: string;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** stand-ins/*.c sit beside this module in scripts/, and are found from dist/scripts/ too. */
const STAND_IN_SOURCES = [path.join(HERE, 'stand-ins'), path.resolve(HERE, '../../../scripts/conformance/stand-ins')];
const PAUSE_SOURCES = [path.resolve(HERE, '../../src/runtime/pause/pause.c'), path.resolve(HERE, '../../../src/runtime/pause/pause.c')];

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// The upstream busybox image's accounts (www-data for the username images, nobody for RunAsUserName).
const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'daemon:x:1:1:daemon:/usr/sbin:/bin/false',
  'bin:x:2:2:bin:/bin:/bin/false',
  'sys:x:3:3:sys:/dev:/bin/false',
  'sync:x:4:100:sync:/bin:/bin/sync',
  'mail:x:8:8:mail:/var/spool/mail:/bin/false',
  'www-data:x:33:33:www-data:/var/www:/bin/false',
  'operator:x:37:37:Operator:/var:/bin/false',
  'nobody:x:65534:65534:nobody:/home:/bin/false',
];
const GROUP = [
  'root:x:0:', 'daemon:x:1:', 'bin:x:2:', 'sys:x:3:', 'adm:x:4:', 'tty:x:5:', 'disk:x:6:', 'lp:x:7:', 'mail:x:8:',
  'kmem:x:9:', 'wheel:x:10:root', 'floppy:x:11:', 'dialout:x:18:', 'audio:x:29:', 'www-data:x:33:', 'operator:x:37:',
  'video:x:44:', 'users:x:100:', 'nogroup:x:65534:',
];
const lines = (l: string[]) => l.join('\n') + '\n';

/** pgrep PATTERN: the pids whose process name matches (extended regexp); exit 1 when none. */
const PGREP_SCRIPT = `#!/bin/sh
status=1
for dir in /proc/[0-9]*; do
  name=$(cat "$dir/comm" 2>/dev/null) || continue
  if printf '%s\\n' "$name" | grep -qE -- "$1"; then
    echo "\${dir#/proc/}"
    status=0
  fi
done
exit $status
`;

function sha256hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

async function firstExisting(candidates: string[]): Promise<string> {
  for (const c of candidates) if (await pathExists(c)) return c;
  throw new Error(`critest-images: none of ${candidates.join(', ')} exists`);
}

/** The shared libraries (and the ELF interpreter) a host binary loads, as absolute paths. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout, exitCode } = await run('ldd', [binary], { reject: false });
  if (exitCode !== 0) return []; // static
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

/** Debian's dynamic busybox, downloaded once into the cache; undefined when apt cannot fetch it. */
async function debianBusybox(cache: string): Promise<{ binary: string; version: string } | undefined> {
  const debDir = path.join(cache, 'debs');
  await fsp.mkdir(debDir, { recursive: true });
  let deb = (await fsp.readdir(debDir)).find((f) => f.startsWith('busybox_') && f.endsWith('.deb'));
  if (!deb) {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'critest-deb-'));
    try {
      const res = await run('apt-get', ['download', 'busybox'], { cwd: tmp, timeoutMs: 120_000, reject: false });
      const got = (await fsp.readdir(tmp)).find((f) => f.endsWith('.deb'));
      if (res.exitCode !== 0 || !got) return undefined;
      await fsp.rename(path.join(tmp, got), path.join(debDir, got)).catch(async (err) => {
        if (!hasCode(err, 'EXDEV')) throw err;
        await fsp.copyFile(path.join(tmp, got), path.join(debDir, got));
      });
      deb = got;
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
  const extracted = path.join(debDir, `${deb}.d`);
  if (!(await pathExists(path.join(extracted, 'bin', 'busybox')))) {
    const tmp = `${extracted}.${randomBytes(4).toString('hex')}.tmp`;
    await run('dpkg-deb', ['-x', path.join(debDir, deb), tmp], { timeoutMs: 60_000 });
    await fsp.rename(tmp, extracted).catch(async (err) => {
      await fsp.rm(tmp, { recursive: true, force: true });
      if (!(hasCode(err, 'ENOTEMPTY') || hasCode(err, 'EEXIST'))) throw err;
    });
  }
  const version = decodeURIComponent(deb.replace(/^busybox_/, '').replace(/_[^_]+\.deb$/, ''));
  return { binary: path.join(extracted, 'bin', 'busybox'), version };
}

/** Compiles a C stand-in statically (cached by source and compiler). */
async function compileStatic(source: string, cache: string): Promise<Buffer> {
  const src = await fsp.readFile(source);
  const gcc = (await run('gcc', ['--version'])).stdout.split('\n')[0] ?? '';
  const out = path.join(cache, 'bin', `${path.basename(source, '.c')}-${sha256hex(Buffer.concat([src, Buffer.from(gcc)])).slice(0, 12)}`);
  if (!(await pathExists(out))) {
    await fsp.mkdir(path.dirname(out), { recursive: true });
    const tmp = `${out}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await run('gcc', ['-static', '-O2', '-s', '-o', tmp, source], { timeoutMs: 120_000 });
      await fsp.rename(tmp, out);
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }
  return fsp.readFile(out);
}

interface Inputs {
  busybox: Buffer;
  /** The binary on the host (to list its applets). */
  busyboxPath: string;
  busyboxSource: string;
  /** Host files copied verbatim: absolute path → bytes (shared libraries, ipcs). */
  hostFiles: Map<string, Buffer>;
  nginx: Buffer;
  nonewprivs: Buffer;
  pause: Buffer;
}

async function gatherInputs(cache: string): Promise<Inputs> {
  const hostFiles = new Map<string, Buffer>();
  const addWithLibs = async (binary: string, at?: string) => {
    if (at) hostFiles.set(at, await fsp.readFile(binary));
    for (const lib of await sharedLibraries(binary)) hostFiles.set(lib, await fsp.readFile(await fsp.realpath(lib)));
  };
  const debian = await debianBusybox(cache).catch(() => undefined);
  let busybox: Buffer;
  let busyboxSource: string;
  const busyboxPath = debian?.binary ?? BUSYBOX_PATH;
  if (debian) {
    busybox = await fsp.readFile(debian.binary);
    busyboxSource = `Debian busybox ${debian.version}`;
    await addWithLibs(debian.binary);
  } else {
    busybox = await fsp.readFile(BUSYBOX_PATH);
    busyboxSource = 'busybox-static (apt-get download busybox failed)';
  }
  const ipcs = '/usr/bin/ipcs';
  if (await pathExists(ipcs)) await addWithLibs(ipcs, ipcs);
  const standIns = await firstExisting(STAND_IN_SOURCES.map((d) => path.join(d, 'nginx.c')));
  return {
    busybox,
    busyboxPath,
    busyboxSource,
    hostFiles,
    nginx: await compileStatic(standIns, cache),
    nonewprivs: await compileStatic(path.join(path.dirname(standIns), 'nonewprivs.c'), cache),
    pause: await compileStatic(await firstExisting(PAUSE_SOURCES), cache),
  };
}

function inputsKey(inputs: Inputs): string {
  const h = createHash('sha256');
  h.update(CRITEST_IMAGES_VERSION).update(inputs.busybox).update(inputs.nginx).update(inputs.nonewprivs).update(inputs.pause);
  for (const [p, data] of [...inputs.hostFiles].sort(([a], [b]) => (a < b ? -1 : 1))) h.update(p).update(data);
  return h.digest('hex').slice(0, 12);
}

/** Directories (and their parents) every path in `paths` needs. */
function parentDirs(paths: string[]): LayerEntry[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].map((d) => dir(d));
}

async function busyboxBaseLayer(inputs: Inputs): Promise<BuiltLayer> {
  const entries: LayerEntry[] = [
    ...['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'usr/local', 'usr/local/bin', 'etc', 'dev', 'proc', 'sys', 'run', 'var', 'var/spool',
      'var/spool/mail', 'var/run', 'home'].map((d) => dir(d)),
    dir('var/www', 0o755, 33, 33),
    dir('tmp', 0o1777),
    dir('root', 0o700),
    file('etc/passwd', lines(PASSWD)),
    file('etc/group', lines(GROUP)),
  ];
  // Hard links must follow their target in the (name-sorted) tar: the first name gets the bytes.
  const applets = (await busyboxApplets(inputs.busyboxPath)).filter((a) => a.includes('/'));
  const unique = [...new Set(['bin/busybox', ...applets])].sort();
  // Debian builds busybox without pgrep, which critest's execSync-timeout spec runs.
  if (!unique.some((a) => a.endsWith('/pgrep'))) entries.push(file('usr/bin/pgrep', PGREP_SCRIPT, 0o755));
  const [first, ...rest] = unique;
  entries.push(file(first!, inputs.busybox, 0o755));
  for (const name of rest) entries.push(hardlink(name, first!));
  const hostPaths = [...inputs.hostFiles.keys()].map((p) => p.replace(/^\//, ''));
  const have = new Set(entries.map((e) => e.name));
  for (const d of parentDirs(hostPaths)) if (!have.has(d.name)) { entries.push(d); have.add(d.name); }
  for (const [p, data] of inputs.hostFiles) {
    const name = p.replace(/^\//, '');
    if (!have.has(name)) entries.push(file(name, data, 0o755));
    have.add(name);
  }
  return buildLayer(entries);
}

/** A layer holding one marker file: what makes test-image-1/2/3 (and the tag images) different images. */
const markerLayer = (name: string, opts: { endAfterLastData?: boolean } = {}) =>
  buildLayer([file(name, `critest stand-in ${name}\n`)], opts);

async function buildAll(root: string, inputs: Inputs): Promise<StandInLayout[]> {
  const base = await busyboxBaseLayer(inputs);
  const layouts: StandInLayout[] = [];
  type ImageFn = (layers: BuiltLayer[], fields?: ImageConfigFields, platform?: Platform) => Promise<Descriptor>;
  const imageOf = (w: LayoutWriter): ImageFn => async (layers, fields = {}, platform) =>
    w.writeImage(layers, { Env: [DEFAULT_PATH], Cmd: ['sh'], ...fields }, platform ? { platform } : {});
  const layout = async (repository: string, body: (w: LayoutWriter, image: ImageFn) => Promise<string[]>, hasIndex = false) => {
    const dirPath = path.join(root, 'layouts', repository.replace(/\//g, '_'));
    const w = new LayoutWriter(dirPath);
    await w.init();
    const tags = await body(w, imageOf(w));
    await w.finish();
    layouts.push({ repository, tags, dir: dirPath, hasIndex });
  };
  const simple = (repository: string, tags: string[], layers: () => Promise<BuiltLayer[]>, fields: ImageConfigFields = {}) =>
    layout(repository, async (w, image) => {
      w.tag(await image(await layers(), fields), tags);
      return tags;
    });

  const nginxLayer = () =>
    buildLayer([
      dir('usr'), dir('usr/sbin'), file('usr/sbin/nginx', inputs.nginx, 0o755),
      dir('usr/share'), dir('usr/share/nginx'), dir('usr/share/nginx/html'),
      file('usr/share/nginx/html/index.html', '<html><body><h1>Welcome to nginx (critest stand-in)</h1></body></html>\n'),
    ]);

  // registry.k8s.io/e2e-test-images
  await simple('e2e-test-images/busybox', ['1.29-2'], async () => [base]);
  await simple('e2e-test-images/nginx', ['1.14-2'], async () => [base, await nginxLayer()], {
    Cmd: ['nginx', '-g', 'daemon off;'], Env: [DEFAULT_PATH, 'NGINX_PORT=80'], StopSignal: 'SIGQUIT',
  });
  await simple('e2e-test-images/httpd', ['2.4.39-4'], async () => [base, await buildLayer([
    dir('usr/local'), dir('usr/local/apache2'), dir('usr/local/apache2/htdocs'),
    file('usr/local/apache2/htdocs/index.html', '<html><body><h1>It works!</h1></body></html>\n'),
    dir('usr/local/bin'),
    file('usr/local/bin/httpd-foreground', '#!/bin/sh\necho "httpd (busybox stand-in) serving /usr/local/apache2/htdocs on port 80"\nexec httpd -f -p 80 -h /usr/local/apache2/htdocs\n', 0o755),
  ])], { Cmd: ['httpd-foreground'], WorkingDir: '/usr/local/apache2' });
  await simple('e2e-test-images/nonewprivs', ['1.3'], async () => [base, await buildLayer([
    dir('usr/local'), dir('usr/local/bin'), file('usr/local/bin/nnp', inputs.nonewprivs, 0o4755),
  ])], { Cmd: ['/usr/local/bin/nnp'] });
  // registry.k8s.io/pause and k8s.gcr.io/pause: the same image from two registries.
  await simple('pause', ['3.9', '3.10', '3.10.1'], async () => [await buildLayer([file('pause', inputs.pause, 0o755)])], {
    Entrypoint: ['/pause'], Cmd: [], Env: [DEFAULT_PATH], User: '65535:65535',
  });

  // gcr.io/k8s-staging-cri-tools
  const cri = 'k8s-staging-cri-tools';
  await simple(`${cri}/hostnet-nginx-amd64`, ['latest'], async () => [base, await nginxLayer()], {
    Cmd: ['nginx', '-g', 'daemon off;'], Env: [DEFAULT_PATH, 'NGINX_PORT=12003'], StopSignal: 'SIGQUIT',
  });
  for (const n of ['test-image-1', 'test-image-2', 'test-image-3']) {
    await simple(`${cri}/${n}`, ['latest'], async () => [base, await markerLayer(n)]);
  }
  // Its marker layer ends without padding and end-of-archive blocks, as `umoci insert` writes layers.
  await simple(`${cri}/test-image-latest`, ['latest'], async () => [base, await markerLayer('test-image-latest', { endAfterLastData: true })]);
  await layout(`${cri}/test-image-tag`, async (w, image) => {
    w.tag(await image([base, await markerLayer('test')]), ['test']);
    w.tag(await image([base, await markerLayer('all')]), ['all']);
    return ['test', 'all'];
  });
  // Three tags of one multi-platform index, as upstream publishes it.
  await layout(`${cri}/test-image-tags`, async (w, image) => {
    const same = await markerLayer('same-image');
    const amd64 = await image([base, same], {}, { architecture: 'amd64', os: 'linux' });
    const arm64 = await image([base, same, await markerLayer('arm64')], {}, { architecture: 'arm64', os: 'linux', variant: 'v8' });
    w.tag(await w.writeIndex([amd64, arm64]), ['1', '2', '3']);
    return ['1', '2', '3'];
  }, true);
  const users: [string, string][] = [
    ['test-image-user-uid', '1002'],
    ['test-image-user-username', 'www-data'],
    ['test-image-user-uid-group', '1003:1004'],
    ['test-image-user-username-group', 'www-data:1004'],
  ];
  for (const [n, user] of users) await simple(`${cri}/${n}`, ['latest'], async () => [base], { User: user });
  await simple(`${cri}/test-image-predefined-group`, ['latest'], async () => [base, await buildLayer([
    dir('etc'),
    file('etc/passwd', lines([...PASSWD, 'default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh'])),
    file('etc/group', lines([...GROUP, 'default-user:x:1000:', 'group-defined-in-image:x:50000:default-user'])),
    dir('home'), dir('home/default-user', 0o755, 1000, 1000),
  ])], { User: '1000' });

  // public.ecr.aws/docker/library/busybox: the benchmark's images.
  await simple('docker/library/busybox', ['1', '1-glibc', '1-musl', '1-uclibc', '1.35.0-glibc'], async () => [base]);
  return layouts;
}

/** Returns the cached stand-in layouts, building them first when absent (safe against a concurrent build). */
export async function buildCritestImages(): Promise<StandInImages> {
  const cache = path.join(cacheRoot(), 'critest');
  const inputs = await gatherInputs(cache);
  const root = path.join(cache, `${CRITEST_IMAGES_VERSION}-${inputsKey(inputs)}`);
  const manifest = path.join(root, 'layouts.json');
  if (!(await pathExists(manifest))) {
    await fsp.mkdir(root, { recursive: true });
    const tmp = path.join(root, `.build.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const layouts = await buildAll(tmp, inputs);
      await fsp.rename(path.join(tmp, 'layouts'), path.join(root, 'layouts')).catch((err) => {
        if (!(hasCode(err, 'ENOTEMPTY') || hasCode(err, 'EEXIST'))) throw err;
      });
      const described = layouts.map((l) => ({ ...l, dir: path.join(root, 'layouts', path.basename(l.dir)) }));
      await fsp.writeFile(`${manifest}.tmp`, JSON.stringify(described, null, 2));
      await fsp.rename(`${manifest}.tmp`, manifest);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
  const layouts = JSON.parse(await fsp.readFile(manifest, 'utf8')) as StandInLayout[];
  return { root, layouts, busyboxSource: inputs.busyboxSource };
}

/** Pushes every tag of the layouts into a registry at host:port with skopeo (two at a time). */
export async function pushCritestImages(host: string, images: StandInImages): Promise<void> {
  const queue = images.layouts.flatMap((l) => l.tags.map((tag) => ({ layout: l, tag })));
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      const args = ['copy', '--insecure-policy', '--dest-tls-verify=false', '--retry-times', '2'];
      if (job.layout.hasIndex) args.push('--all');
      args.push(`oci:${job.layout.dir}:${job.tag}`, `docker://${host}/${job.layout.repository}:${job.tag}`);
      await run('skopeo', args, { timeoutMs: 180_000 });
    }
  };
  await Promise.all([worker(), worker()]);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = Date.now();
  buildCritestImages().then(
    (r) => process.stdout.write(`critest stand-ins in ${r.root} (${r.layouts.length} repositories, ${r.busyboxSource}, ${Date.now() - started} ms)\n`),
    (err: unknown) => {
      process.stderr.write(`critest-images: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
