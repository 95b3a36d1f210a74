// The test fixture images, described from their built OCI layouts so tests can assert
// digests (an image id is its config digest) without hard-coding them.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Descriptor } from '../../src/image/media-types.js';
import {
  buildTestImages,
  dockerSchema2Manifest,
  MT_DOCKER_MANIFEST,
  type BuiltLayout,
} from '../../scripts/build-test-images.js';

export type FixtureName =
  | 'busybox'
  | 'busyboxDocker'
  | 'userName'
  | 'userUidGid'
  | 'entrypoint'
  | 'multiarch'
  | 'whiteout'
  | 'big'
  | 'unpadded'
  | 'hostilePasswdFifo'
  | 'hostilePasswdDevzero'
  | 'hostilePasswdHostlink'
  | 'hostileGroupHuge'
  | 'hostileTruncated'
  | 'zipBomb'
  | 'deep';

/** The image config's `config` object (OCI / Docker field names). */
export interface FixtureImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

export interface FixturePlatformImage {
  /** "linux/amd64", "linux/arm64/v8", "linux/arm/v7". */
  platform: string;
  manifestDigest: string;
  configDigest: string;
  layerDigests: string[];
}

export interface FixtureImage {
  name: FixtureName;
  /** Repository path in the registry, e.g. "nodelet-test/busybox". */
  repository: string;
  tags: string[];
  /** Media type the tag resolves to in the registry (index for multiarch, Docker schema2 for busyboxDocker). */
  mediaType: string;
  /** What the tag resolves to: the index digest for multiarch, else the manifest digest (the repo digest). */
  digest: string;
  /** The linux/amd64 image manifest's digest. */
  manifestDigest: string;
  /** Set for the multiarch image only. */
  indexDigest?: string;
  /** The linux/amd64 image's config digest = its image id. */
  configDigest: string;
  layerCount: number;
  layerDigests: string[];
  diffIds: string[];
  /** Sum of the compressed layer sizes. */
  layersSize: number;
  /** Config User ("" when unset). */
  user: string;
  config: FixtureImageConfig;
  platforms?: FixturePlatformImage[];
  layoutDir: string;
  /** Built to be refused (or to be read with care): not for loops over "every image". */
  hostile: boolean;
}

const HOSTILE: ReadonlySet<FixtureName> = new Set<FixtureName>([
  'hostilePasswdFifo',
  'hostilePasswdDevzero',
  'hostilePasswdHostlink',
  'hostileGroupHuge',
  'hostileTruncated',
  'zipBomb',
]);

export type Fixtures = Record<FixtureName, FixtureImage>;

const NAME_BY_REPOSITORY: Record<string, FixtureName> = {
  'nodelet-test/busybox': 'busybox',
  'nodelet-test/busybox-docker': 'busyboxDocker',
  'nodelet-test/user-name': 'userName',
  'nodelet-test/user-uidgid': 'userUidGid',
  'nodelet-test/entrypoint': 'entrypoint',
  'nodelet-test/multiarch': 'multiarch',
  'nodelet-test/whiteout': 'whiteout',
  'nodelet-test/big': 'big',
  'nodelet-test/unpadded': 'unpadded',
  'nodelet-test/hostile-passwd-fifo': 'hostilePasswdFifo',
  'nodelet-test/hostile-passwd-devzero': 'hostilePasswdDevzero',
  'nodelet-test/hostile-passwd-hostlink': 'hostilePasswdHostlink',
  'nodelet-test/hostile-group-huge': 'hostileGroupHuge',
  'nodelet-test/hostile-truncated': 'hostileTruncated',
  'nodelet-test/zip-bomb': 'zipBomb',
  'nodelet-test/deep': 'deep',
};

interface ManifestJson {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  manifests?: Descriptor[];
}

function sha256(data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

async function readBlob(layoutDir: string, digest: string): Promise<Buffer> {
  return fsp.readFile(path.join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length)));
}

async function readJsonBlob<T>(layoutDir: string, digest: string): Promise<T> {
  return JSON.parse((await readBlob(layoutDir, digest)).toString('utf8')) as T;
}

async function describeLayout(layout: BuiltLayout): Promise<FixtureImage> {
  const name = NAME_BY_REPOSITORY[layout.repository];
  if (!name) throw new Error(`unknown fixture repository ${layout.repository}`);
  const index = JSON.parse(await fsp.readFile(path.join(layout.dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const top = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === layout.tags[0]);
  if (!top) throw new Error(`layout ${layout.dir} has no tag ${layout.tags[0]}`);

  let platforms: FixturePlatformImage[] | undefined;
  let manifestDigest = top.digest;
  if (layout.isIndex) {
    const imageIndex = await readJsonBlob<{ manifests: Descriptor[] }>(layout.dir, top.digest);
    platforms = [];
    for (const d of imageIndex.manifests) {
      const m = await readJsonBlob<ManifestJson>(layout.dir, d.digest);
      const p = d.platform!;
      platforms.push({
        platform: [p.os, p.architecture, p.variant].filter(Boolean).join('/'),
        manifestDigest: d.digest,
        configDigest: m.config.digest,
        layerDigests: m.layers.map((l) => l.digest),
      });
    }
    manifestDigest = platforms.find((p) => p.platform === 'linux/amd64')!.manifestDigest;
  }
  const manifest = await readJsonBlob<ManifestJson>(layout.dir, manifestDigest);
  const configDoc = await readJsonBlob<{ config?: FixtureImageConfig; rootfs: { diff_ids: string[] } }>(
    layout.dir,
    manifest.config.digest,
  );
  let mediaType = top.mediaType;
  if (layout.pushFormat === 'v2s2') {
    mediaType = MT_DOCKER_MANIFEST;
    manifestDigest = sha256(dockerSchema2Manifest(manifest));
  }
  return {
    name,
    repository: layout.repository,
    tags: layout.tags,
    mediaType,
    digest: layout.isIndex ? top.digest : manifestDigest,
    manifestDigest,
    ...(layout.isIndex ? { indexDigest: top.digest } : {}),
    configDigest: manifest.config.digest,
    layerCount: manifest.layers.length,
    layerDigests: manifest.layers.map((l) => l.digest),
    diffIds: configDoc.rootfs.diff_ids,
    layersSize: manifest.layers.reduce((sum, l) => sum + l.size, 0),
    user: configDoc.config?.User ?? '',
    config: configDoc.config ?? {},
    ...(platforms ? { platforms } : {}),
    layoutDir: layout.dir,
    hostile: HOSTILE.has(name),
  };
}

let loaded: Promise<{ fixtures: Fixtures; layouts: BuiltLayout[] }> | undefined;

async function load(): Promise<{ fixtures: Fixtures; layouts: BuiltLayout[] }> {
  const { layouts } = await buildTestImages();
  const described = await Promise.all(layouts.map(describeLayout));
  const fixtures = Object.fromEntries(described.map((f) => [f.name, f])) as Fixtures;
  return { fixtures, layouts };
}

/** Builds the fixture layouts when not cached yet, then describes them. Memoized per process. */
export async function loadFixtures(): Promise<Fixtures> {
  loaded ??= load();
  return (await loaded).fixtures;
}

/** The layouts with their push instructions (for pushing into a registry). */
export async function loadFixtureLayouts(): Promise<BuiltLayout[]> {
  loaded ??= load();
  return (await loaded).layouts;
}

/** "host:port/nodelet-test/busybox:latest". */
export function imageRef(registryHost: string, image: FixtureImage, tag = image.tags[image.tags.length - 1]!): string {
  return `${registryHost}/${image.repository}:${tag}`;
}

/** "host:port/nodelet-test/busybox@sha256:…" (the tag's own digest). */
export function digestRef(registryHost: string, image: FixtureImage): string {
  return `${registryHost}/${image.repository}@${image.digest}`;
}
