// Builds the test fixture images from the host's busybox-static as OCI image layouts,
// deterministically (fixed mtimes, sorted entries, fixed owners) so digests are stable.
// Layouts are cached under NODELET_TEST_CACHE (default /var/cache/nodelet-test/images),
// keyed by FIXTURE_VERSION and the busybox binary's digest, so later runs skip the build.
import { createHash, createCipheriv, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Descriptor } from '../src/image/media-types.js';
import { gzipSync, createGzip, constants as zlibConstants } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import tar from 'tar-stream';
import { run } from '../src/common/exec.js';
import { pathExists } from '../src/common/fsutil.js';
import { hasCode } from '../src/common/errors.js';

/** Bump when the content of any fixture changes. */
export const FIXTURE_VERSION = 'v3';
export const BUSYBOX_PATH = '/bin/busybox';
export const DEFAULT_CACHE_DIR = '/var/cache/nodelet-test/images';

export const MT_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MT_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MT_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MT_OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MT_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MT_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MT_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

const FIXED_MTIME = new Date('2024-01-01T00:00:00Z');
const CREATED = '2024-01-01T00:00:00Z';
const DEFAULT_PATH = 'PATH=/usr/sbin:/usr/bin:/sbin:/bin';
const BIG_LAYER_FILES = 4;
const BIG_LAYER_FILE_BYTES = 10 * 1024 * 1024;

/** What the build produced, one layout directory per repository. */
export interface BuiltLayout {
  /** Repository name under the registry, e.g. "nodelet-test/busybox". */
  repository: string;
  tags: string[];
  dir: string;
  /** skopeo --format for the push; undefined keeps the layout's own format. */
  pushFormat?: 'v2s2' | 'oci';
  /** true when the tag points at an image index (push with --all). */
  isIndex: boolean;
}

export interface BuildResult {
  root: string;
  layouts: BuiltLayout[];
}

export interface LayerEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device';
  mode: number;
  devmajor?: number;
  devminor?: number;
  uid?: number;
  gid?: number;
  data?: Buffer;
  linkname?: string;
}

export interface BuiltLayer {
  gz: Buffer;
  digest: string;
  diffId: string;
}

export function sha256(data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

/**
 * A gzipped tar of the entries, sorted by name.
 * endAfterLastData: the tar stops right after the last member's data, with neither its padding
 * nor the end-of-archive blocks (what `umoci insert` writes; Go's archive/tar reads it).
 */
export async function buildLayer(entries: LayerEntry[], opts: { endAfterLastData?: boolean; truncateBy?: number } = {}): Promise<BuiltLayer> {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const e of sorted) {
    const header = {
      name: e.type === 'directory' ? `${e.name}/` : e.name,
      mode: e.mode,
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      uname: '',
      gname: '',
      mtime: FIXED_MTIME,
      type: e.type,
      linkname: e.linkname,
      size: e.type === 'file' ? (e.data?.length ?? 0) : 0,
      ...(e.type === 'character-device' ? { devmajor: e.devmajor ?? 0, devminor: e.devminor ?? 0 } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (e.type === 'file') pack.entry(header, e.data ?? Buffer.alloc(0), cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await collected;
  let tarBytes = Buffer.concat(chunks);
  if (opts.endAfterLastData) {
    const lastSize = sorted.at(-1)?.data?.length ?? 0;
    const trailer = 2 * 512 + ((512 - (lastSize % 512)) % 512);
    if (lastSize % 512 === 0 || !tarBytes.subarray(-trailer).every((b) => b === 0)) throw new Error('endAfterLastData: last entry must be a file whose size is not a multiple of 512');
    tarBytes = tarBytes.subarray(0, tarBytes.length - trailer);
  }
  // A stream cut off inside its last member (a broken upload, a hostile layer).
  if (opts.truncateBy) tarBytes = tarBytes.subarray(0, tarBytes.length - opts.truncateBy);
  const gz = gzipSync(tarBytes, { level: 6 });
  return { gz, digest: sha256(gz), diffId: sha256(tarBytes) };
}

export const dir = (name: string, mode = 0o755, uid = 0, gid = 0): LayerEntry => ({ name, type: 'directory', mode, uid, gid });
export const file = (name: string, data: Buffer | string, mode = 0o644, uid = 0, gid = 0): LayerEntry => ({
  name,
  type: 'file',
  mode,
  uid,
  gid,
  data: Buffer.isBuffer(data) ? data : Buffer.from(data),
});
export const symlink = (name: string, linkname: string): LayerEntry => ({ name, type: 'symlink', mode: 0o777, linkname });
export const fifo = (name: string): LayerEntry => ({ name, type: 'fifo', mode: 0o644 });
export const charDevice = (name: string, major: number, minor: number): LayerEntry => ({ name, type: 'character-device', mode: 0o666, devmajor: major, devminor: minor });
/** A hard link to an earlier entry (linkname is that entry's layer path). */
export const hardlink = (name: string, linkname: string): LayerEntry => ({ name, type: 'link', mode: 0o755, linkname });

/** The applet paths of the host's busybox (e.g. "bin/sh", "usr/bin/wget"), without bin/busybox itself. */
export async function busyboxApplets(busybox = BUSYBOX_PATH): Promise<string[]> {
  const { stdout } = await run(busybox, ['--list-full']);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && l !== 'bin/busybox');
}

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'www:x:33:33:www:/var/www:/bin/sh',
  'app:x:1000:1000:app:/home/app:/bin/sh',
  'nobody:x:65534:65534:nobody:/nonexistent:/bin/false',
  '',
].join('\n');

const GROUP = ['root:x:0:', 'www:x:33:', 'app:x:1000:', 'extra:x:2000:app', 'nogroup:x:65534:', ''].join('\n');

async function baseLayerEntries(busybox: Buffer): Promise<LayerEntry[]> {
  const applets = await busyboxApplets();
  const entries: LayerEntry[] = [
    dir('bin'),
    dir('sbin'),
    dir('usr'),
    dir('usr/bin'),
    dir('usr/sbin'),
    dir('etc'),
    dir('dev'),
    dir('proc'),
    dir('sys'),
    dir('run'),
    dir('var'),
    dir('var/www', 0o755, 33, 33),
    dir('tmp', 0o1777),
    dir('root', 0o700),
    dir('home'),
    dir('home/app', 0o755, 1000, 1000),
    file('bin/busybox', busybox, 0o755),
    file('etc/passwd', PASSWD),
    file('etc/group', GROUP),
  ];
  const seen = new Set(entries.map((e) => e.name));
  for (const applet of applets) {
    if (seen.has(applet)) continue;
    seen.add(applet);
    entries.push(symlink(applet, '/bin/busybox'));
  }
  return entries;
}

/** ~40 MB of incompressible bytes, the same on every build (AES-CTR keystream of a fixed seed). */
function pseudoRandomBytes(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

interface ManifestJson {
  config: { digest: string; size: number };
  layers: { digest: string; size: number }[];
}

/**
 * The exact bytes skopeo (containers/image) writes when it converts one of our OCI
 * manifests to Docker schema2 with `--format v2s2`: config unchanged, media types
 * swapped, descriptor fields in Go struct order (mediaType, size, digest).
 */
export function dockerSchema2Manifest(oci: ManifestJson): string {
  const desc = (mediaType: string, d: { digest: string; size: number }) => ({ mediaType, size: d.size, digest: d.digest });
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: MT_DOCKER_MANIFEST,
    config: desc(MT_DOCKER_CONFIG, oci.config),
    layers: oci.layers.map((l) => desc(MT_DOCKER_LAYER_GZIP, l)),
  });
}

export interface ImageConfigFields {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export class LayoutWriter {
  readonly manifests: Descriptor[] = [];
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await fsp.mkdir(path.join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await fsp.writeFile(path.join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  }

  async writeBlob(data: Buffer | string): Promise<{ digest: string; size: number }> {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
    const digest = sha256(buf);
    const p = path.join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
    if (!(await pathExists(p))) await fsp.writeFile(p, buf);
    return { digest, size: buf.length };
  }

  /** Writes config + layers + manifest and returns the manifest's descriptor. */
  async writeImage(
    layers: BuiltLayer[],
    fields: ImageConfigFields,
    opts: { platform?: Platform; history?: string[] } = {},
  ): Promise<Descriptor> {
    const platform = opts.platform ?? { architecture: 'amd64', os: 'linux' };
    const config = {
      created: CREATED,
      architecture: platform.architecture,
      ...(platform.variant ? { variant: platform.variant } : {}),
      os: platform.os,
      config: { Env: [DEFAULT_PATH], Cmd: ['sh'], WorkingDir: '/', ...fields },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({
        created: CREATED,
        created_by: opts.history?.[i] ?? `nodelet-test layer ${i}`,
      })),
    };
    const configDesc = await this.writeBlob(JSON.stringify(config));
    const layerDescs: Descriptor[] = [];
    for (const layer of layers) {
      await this.writeBlob(layer.gz);
      layerDescs.push({
        mediaType: MT_OCI_LAYER_GZIP,
        digest: layer.digest,
        size: layer.gz.length,
      });
    }
    const mediaType = MT_OCI_MANIFEST;
    const manifest = {
      schemaVersion: 2,
      mediaType,
      config: { mediaType: MT_OCI_CONFIG, ...configDesc },
      layers: layerDescs,
    };
    const m = await this.writeBlob(JSON.stringify(manifest));
    return { mediaType, ...m, platform };
  }

  async writeIndex(manifests: Descriptor[]): Promise<Descriptor> {
    const index = { schemaVersion: 2, mediaType: MT_OCI_INDEX, manifests };
    const d = await this.writeBlob(JSON.stringify(index));
    return { mediaType: MT_OCI_INDEX, ...d };
  }

  tag(desc: Descriptor, tags: string[]): void {
    for (const t of tags) {
      const { platform: _platform, ...plain } = desc;
      this.manifests.push({ ...plain, annotations: { 'org.opencontainers.image.ref.name': t } });
    }
  }

  async finish(): Promise<void> {
    const index = { schemaVersion: 2, manifests: this.manifests };
    await fsp.writeFile(path.join(this.dir, 'index.json'), JSON.stringify(index));
  }
}

export function cacheRoot(): string {
  return process.env.NODELET_TEST_CACHE || DEFAULT_CACHE_DIR;
}

/** The cache key directory for the current fixture version and host busybox. */
export async function fixtureCacheDir(): Promise<string> {
  const busybox = await fsp.readFile(BUSYBOX_PATH);
  return path.join(cacheRoot(), `${FIXTURE_VERSION}-${sha256(busybox).slice(7, 19)}`);
}

const LAYOUT_SPECS: Omit<BuiltLayout, 'dir'>[] = [
  { repository: 'nodelet-test/busybox', tags: ['1.0', '1.1', 'latest'], isIndex: false },
  { repository: 'nodelet-test/busybox-docker', tags: ['latest'], isIndex: false, pushFormat: 'v2s2' },
  { repository: 'nodelet-test/user-name', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/user-uidgid', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/entrypoint', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/multiarch', tags: ['latest'], isIndex: true },
  { repository: 'nodelet-test/whiteout', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/big', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/unpadded', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/hostile-passwd-fifo', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/hostile-passwd-devzero', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/hostile-passwd-hostlink', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/hostile-group-huge', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/hostile-truncated', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/zip-bomb', tags: ['latest'], isIndex: false },
  { repository: 'nodelet-test/deep', tags: ['latest'], isIndex: false },
];

/** Where the hostlink fixture's /etc/passwd and /etc/group point (absolute, and through ".." past the root). */
export const HOSTILE_LINK_DIR = '/run/nodelet-test-hostile';
/** The uid / gid the hostlink image's own files name; the host files a test writes there name others. */
export const HOSTILE_IMAGE_UID = 3131;
export const HOSTILE_IMAGE_GID = 3132;
/** Zeros in the zip-bomb layer's one file (its gzip blob is ~1000 times smaller). */
export const ZIP_BOMB_BYTES = 512 * 1024 * 1024;
/** Layers of the deep image, its base included. */
export const DEEP_LAYERS = 128;

/**
 * A one-file layer of `size` zeros, streamed (never held in memory): the tar is hashed for its
 * diff id and gzipped at the highest level as it is produced.
 */
async function buildZerosLayer(name: string, size: number): Promise<BuiltLayer> {
  const pack = tar.pack();
  const gzip = createGzip({ level: zlibConstants.Z_BEST_COMPRESSION });
  const tarHash = createHash('sha256');
  const gzChunks: Buffer[] = [];
  gzip.on('data', (c: Buffer) => gzChunks.push(c));
  const gzDone = new Promise<void>((resolve, reject) => {
    gzip.once('end', resolve);
    gzip.once('error', reject);
  });
  pack.on('data', (c: unknown) => {
    const b = c as Buffer;
    tarHash.update(b);
    if (!gzip.write(b)) pack.pause();
  });
  gzip.on('drain', () => pack.resume());
  pack.once('end', () => gzip.end());
  const entry = pack.entry({ name, size, mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', mtime: FIXED_MTIME, type: 'file' });
  const chunk = Buffer.alloc(1 << 20);
  for (let left = size; left > 0; left -= chunk.length) {
    const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
    if (!entry.write(piece)) await new Promise<void>((r) => entry.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => entry.end((err?: Error | null) => (err ? reject(err) : resolve())));
  pack.finalize();
  await gzDone;
  const gz = Buffer.concat(gzChunks);
  return { gz, digest: sha256(gz), diffId: 'sha256:' + tarHash.digest('hex') };
}

function layoutsUnder(root: string): BuiltLayout[] {
  return LAYOUT_SPECS.map((s) => ({ ...s, dir: path.join(root, 'layouts', s.repository.split('/')[1]!) }));
}

async function buildAll(root: string): Promise<void> {
  const busybox = await fsp.readFile(BUSYBOX_PATH);
  const base = await buildLayer(await baseLayerEntries(busybox));
  const labels = (fixture: string) => ({ 'org.opencontainers.image.title': fixture, 'io.nodelet.test.fixture': fixture });
  const layouts = new Map(layoutsUnder(root).map((l) => [l.repository.split('/')[1]!, l]));
  const writer = async (name: string, body: (w: LayoutWriter) => Promise<void>) => {
    const w = new LayoutWriter(layouts.get(name)!.dir);
    await w.init();
    await body(w);
    await w.finish();
  };

  await writer('busybox', async (w) => {
    w.tag(await w.writeImage([base], { Labels: labels('busybox') }), ['1.0', '1.1', 'latest']);
  });
  await writer('busybox-docker', async (w) => {
    // Stored as OCI; skopeo converts it to Docker schema2 on push (see dockerSchema2Manifest).
    w.tag(await w.writeImage([base], { Labels: labels('busybox-docker') }), ['latest']);
  });
  await writer('user-name', async (w) => {
    w.tag(await w.writeImage([base], { User: 'app', Labels: labels('user-name') }), ['latest']);
  });
  await writer('user-uidgid', async (w) => {
    w.tag(await w.writeImage([base], { User: '1000:2000', Labels: labels('user-uidgid') }), ['latest']);
  });
  await writer('entrypoint', async (w) => {
    const work = await buildLayer([dir('work')]);
    const desc = await w.writeImage([base, work], {
      Entrypoint: ['/bin/echo', 'from-entrypoint'],
      Cmd: ['default-arg'],
      WorkingDir: '/work',
      Env: [DEFAULT_PATH, 'FOO=bar'],
      StopSignal: 'SIGUSR1',
      Labels: labels('entrypoint'),
    });
    w.tag(desc, ['latest']);
  });
  await writer('multiarch', async (w) => {
    const platforms: Platform[] = [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
      { architecture: 'arm', os: 'linux', variant: 'v7' },
    ];
    const descs: Descriptor[] = [];
    for (const p of platforms) {
      const name = [p.os, p.architecture, p.variant].filter(Boolean).join('/');
      const archLayer = await buildLayer([file('arch', `${name}\n`)]);
      descs.push(await w.writeImage([base, archLayer], { Labels: labels('multiarch') }, { platform: p }));
    }
    w.tag(await w.writeIndex(descs), ['latest']);
  });
  await writer('whiteout', async (w) => {
    const added = await buildLayer([
      dir('data'),
      file('data/a', 'a\n'),
      file('data/b', 'b\n'),
      dir('opq'),
      file('opq/x', 'x\n'),
      dir('opq/sub'),
      file('opq/sub/y', 'y\n'),
    ]);
    const removed = await buildLayer([
      dir('data'),
      file('data/.wh.a', ''),
      dir('opq'),
      file('opq/.wh..wh..opq', ''),
      file('opq/z', 'z\n'),
    ]);
    w.tag(await w.writeImage([base, added, removed], { Labels: labels('whiteout') }), ['latest']);
  });
  await writer('unpadded', async (w) => {
    const inserted = await buildLayer([dir('inserted'), file('inserted/a', 'first\n'), file('inserted/z', 'inserted by umoci\n', 0o600)], { endAfterLastData: true });
    w.tag(await w.writeImage([base, inserted], { Labels: labels('unpadded') }), ['latest']);
  });
  await writer('hostile-passwd-fifo', async (w) => {
    const layer = await buildLayer([dir('etc'), fifo('etc/passwd')]);
    w.tag(await w.writeImage([base, layer], { Labels: labels('hostile-passwd-fifo') }), ['latest']);
  });
  await writer('hostile-passwd-devzero', async (w) => {
    const layer = await buildLayer([dir('dev'), charDevice('dev/zero', 1, 5), dir('etc'), symlink('etc/passwd', '/dev/zero')]);
    w.tag(await w.writeImage([base, layer], { Labels: labels('hostile-passwd-devzero') }), ['latest']);
  });
  await writer('hostile-passwd-hostlink', async (w) => {
    const inImage = HOSTILE_LINK_DIR.slice(1);
    const layer = await buildLayer([
      dir('etc'),
      // Absolute, and a climb past the root: inside the rootfs both land on the image's own files.
      symlink('etc/passwd', `${HOSTILE_LINK_DIR}/passwd`),
      symlink('etc/group', `../../../../../../../../../..${HOSTILE_LINK_DIR}/group`),
      dir('run'),
      dir(inImage),
      file(`${inImage}/passwd`, `root:x:0:0:root:/root:/bin/sh\nhostile:x:${HOSTILE_IMAGE_UID}:${HOSTILE_IMAGE_UID}:hostile:/:/bin/sh\n`),
      file(`${inImage}/group`, `root:x:0:\nhostile:x:${HOSTILE_IMAGE_GID}:hostile\n`),
    ]);
    w.tag(await w.writeImage([base, layer], { User: 'hostile', Labels: labels('hostile-passwd-hostlink') }), ['latest']);
  });
  await writer('hostile-group-huge', async (w) => {
    const line = 'filler:x:7777:' + 'm,'.repeat(40) + 'm\n';
    const layer = await buildLayer([dir('etc'), file('etc/group', GROUP + line.repeat(Math.ceil((2 * 1024 * 1024) / line.length)))]);
    w.tag(await w.writeImage([base, layer], { Labels: labels('hostile-group-huge') }), ['latest']);
  });
  await writer('hostile-truncated', async (w) => {
    // Cut inside the last member's data: its end blocks, padding and 100 bytes of data are gone.
    const data = Buffer.alloc(3000, 0x61);
    const layer = await buildLayer([dir('cut'), file('cut/data', data)], { truncateBy: 2 * 512 + (512 - (data.length % 512)) + 100 });
    w.tag(await w.writeImage([base, layer], { Labels: labels('hostile-truncated') }), ['latest']);
  });
  await writer('zip-bomb', async (w) => {
    w.tag(await w.writeImage([base, await buildZerosLayer('zeros', ZIP_BOMB_BYTES)], { Labels: labels('zip-bomb') }), ['latest']);
  });
  await writer('deep', async (w) => {
    const layers = [base];
    for (let i = 1; i < DEEP_LAYERS; i++) layers.push(await buildLayer([dir('deep'), file(`deep/${String(i).padStart(3, '0')}`, `${i}\n`)]));
    w.tag(await w.writeImage(layers, { Labels: labels('deep') }), ['latest']);
  });
  await writer('big', async (w) => {
    const files: LayerEntry[] = [dir('big')];
    for (let i = 0; i < BIG_LAYER_FILES; i++) {
      files.push(file(`big/blob-${i}.bin`, pseudoRandomBytes(`nodelet-test-big-${i}`, BIG_LAYER_FILE_BYTES)));
    }
    w.tag(await w.writeImage([base, await buildLayer(files)], { Labels: labels('big') }), ['latest']);
  });
}

/**
 * Returns the cached layouts, building them first when absent. Safe against a
 * concurrent build: each build happens in its own temp dir renamed into place.
 */
export async function buildTestImages(): Promise<BuildResult> {
  const root = await fixtureCacheDir();
  if (!(await pathExists(path.join(root, 'layouts')))) {
    await fsp.mkdir(root, { recursive: true });
    const tmp = path.join(root, `.layouts.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await buildAll(tmp);
      await fsp.rename(path.join(tmp, 'layouts'), path.join(root, 'layouts'));
    } catch (err) {
      // Another run finished first: its layouts are identical.
      if (!(hasCode(err, 'ENOTEMPTY') || hasCode(err, 'EEXIST'))) throw err;
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
  return { root, layouts: layoutsUnder(root) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = Date.now();
  buildTestImages().then(
    (r) => {
      process.stdout.write(`fixtures in ${r.root} (${Date.now() - started} ms)\n`);
    },
    (err: unknown) => {
      process.stderr.write(`build-test-images: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
