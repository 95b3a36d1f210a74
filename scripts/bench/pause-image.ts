// The sandbox image containerd needs: an OCI image whose single layer is nodelet's own pause
// rootfs (the static /pause, or the busybox fallback), pushed to the benchmark's local registry,
// so both runtimes start the same infra binary and nothing comes from the internet.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { run } from '../../src/common/exec.js';
import { preparePauseRootfs, PAUSE_PATH } from '../../src/runtime/pause/pause.js';

const FIXED_MTIME = new Date('2024-01-01T00:00:00Z');

function sha256(data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

/** Every entry under `root` (directories, files, symlinks), sorted, relative paths. */
async function walk(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of (await fsp.readdir(path.join(root, rel))).sort()) {
    const name = rel ? `${rel}/${entry}` : entry;
    out.push(name);
    const st = await fsp.lstat(path.join(root, name));
    if (st.isDirectory()) out.push(...(await walk(root, name)));
  }
  return out;
}

async function tarDirectory(root: string): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const name of await walk(root)) {
    const full = path.join(root, name);
    const st = await fsp.lstat(full);
    const base = { mode: st.mode & 0o7777, uid: 0, gid: 0, mtime: FIXED_MTIME };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (st.isDirectory()) pack.entry({ ...base, name: `${name}/`, type: 'directory' }, cb);
      else if (st.isSymbolicLink()) {
        fsp.readlink(full).then((linkname) => pack.entry({ ...base, name, type: 'symlink', linkname }, cb), reject);
      } else fsp.readFile(full).then((data) => pack.entry({ ...base, name, type: 'file', size: data.length }, data, cb), reject);
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

async function writeBlob(layout: string, data: Buffer | string): Promise<{ digest: string; size: number }> {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const digest = sha256(buf);
  await fsp.writeFile(path.join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)), buf);
  return { digest, size: buf.length };
}

/** Builds the pause image and pushes it as `<registry>/nodelet-bench/pause:<tag>`; returns the reference. */
export async function pushPauseImage(registry: string, tag = 'bench'): Promise<string> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-bench-pause-'));
  try {
    const { rootfs } = await preparePauseRootfs(path.join(work, 'pause'));
    const layerTar = await tarDirectory(rootfs);
    const layout = path.join(work, 'layout');
    await fsp.mkdir(path.join(layout, 'blobs', 'sha256'), { recursive: true });
    const layer = await writeBlob(layout, gzipSync(layerTar));
    const config = await writeBlob(
      layout,
      JSON.stringify({
        created: FIXED_MTIME.toISOString(),
        architecture: 'amd64',
        os: 'linux',
        config: { Entrypoint: [PAUSE_PATH], WorkingDir: '/' },
        rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] },
      }),
    );
    const manifest = await writeBlob(
      layout,
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
      }),
    );
    await fsp.writeFile(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await fsp.writeFile(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...manifest,
            annotations: { 'org.opencontainers.image.ref.name': tag },
          },
        ],
      }),
    );
    const ref = `${registry}/nodelet-bench/pause:${tag}`;
    await run('skopeo', ['copy', '--insecure-policy', '--dest-tls-verify=false', `oci:${layout}:${tag}`, `docker://${ref}`], {
      timeoutMs: 60_000,
    });
    return ref;
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}
