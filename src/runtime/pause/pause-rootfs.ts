// The sandbox infra container's rootfs, built once from host files so a sandbox needs no image pull:
// a static `pause` compiled from pause.c with gcc, or the host's static busybox when gcc can't.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { run } from '../../common/exec.js';
import { ensureDir, pathExists } from '../../common/fsutil.js';
import { errorMessage, internal } from '../../common/errors.js';
import { logger } from '../../common/log.js';

export interface PauseRootfs {
  /** Directory to use as the OCI spec's root.path (treat as read-only, shared by all sandboxes). */
  rootfs: string;
  /** process.args for the infra container. */
  args: string[];
  kind: 'static-pause' | 'busybox';
}

const BUSYBOX_PAUSE_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait; done';

export interface EnsurePauseOptions {
  gccPath?: string;
  busyboxPath?: string;
  /** Skip gcc and use busybox (tests of the fallback). */
  forceBusybox?: boolean;
}

/** Candidate locations of pause.c: beside this module when run from src/, or src/ when run from dist/. */
function pauseSourceCandidates(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [path.join(here, 'pause.c'), path.resolve(here, '../../../../src/runtime/pause/pause.c')];
}

async function findPauseSource(): Promise<string | undefined> {
  for (const candidate of pauseSourceCandidates()) {
    if (await pathExists(candidate)) return candidate;
  }
  return undefined;
}

/** Creates `<dir>/rootfs` with the infra binary when missing; safe to call concurrently and repeatedly. */
export async function ensurePauseRootfs(dir: string, opts: EnsurePauseOptions = {}): Promise<PauseRootfs> {
  const rootfs = path.join(dir, 'rootfs');
  const pauseBinary = path.join(rootfs, 'pause');
  const busyboxBinary = path.join(rootfs, 'busybox');
  if (!opts.forceBusybox && (await pathExists(pauseBinary))) {
    return { rootfs, args: ['/pause'], kind: 'static-pause' };
  }
  if (await pathExists(busyboxBinary)) {
    return { rootfs, args: ['/busybox', 'sh', '-c', BUSYBOX_PAUSE_SCRIPT], kind: 'busybox' };
  }

  await ensureDir(rootfs);
  for (const mountPoint of ['proc', 'dev', 'sys', 'etc', 'tmp']) await ensureDir(path.join(rootfs, mountPoint));
  const tmpSuffix = `.${randomBytes(6).toString('hex')}.tmp`;

  if (!opts.forceBusybox) {
    const source = await findPauseSource();
    if (source) {
      const tmp = pauseBinary + tmpSuffix;
      try {
        await run(opts.gccPath ?? 'gcc', ['-static', '-O2', '-s', '-o', tmp, source], { timeoutMs: 120_000 });
        await fsp.chmod(tmp, 0o755);
        await fsp.rename(tmp, pauseBinary);
        return { rootfs, args: ['/pause'], kind: 'static-pause' };
      } catch (err) {
        await fsp.rm(tmp, { force: true });
        logger().warn({ err: errorMessage(err) }, 'cannot build static pause with gcc; using busybox');
      }
    } else {
      logger().warn({ candidates: pauseSourceCandidates() }, 'pause.c not found; using busybox');
    }
  }

  const busyboxSource = opts.busyboxPath ?? '/bin/busybox';
  const tmp = busyboxBinary + tmpSuffix;
  try {
    await fsp.copyFile(busyboxSource, tmp);
    await fsp.chmod(tmp, 0o755);
    await fsp.rename(tmp, busyboxBinary);
    await ensureDir(path.join(rootfs, 'bin'));
    for (const applet of ['sh', 'sleep']) {
      await fsp.symlink('../busybox', path.join(rootfs, 'bin', applet)).catch((err: unknown) => {
        if ((err as { code?: string }).code !== 'EEXIST') throw err;
      });
    }
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw internal(`cannot build pause rootfs in ${dir}: copying ${busyboxSource}: ${errorMessage(err)}`, err);
  }
  return { rootfs, args: ['/busybox', 'sh', '-c', BUSYBOX_PAUSE_SCRIPT], kind: 'busybox' };
}
