// The sandbox infra container's rootfs, built once from host files so a sandbox needs no image pull.
// `/pause` in it is a static binary compiled from pause.c with gcc, or, when gcc can't build it,
// a script run by the host's static busybox that behaves the same (sleeps, exits 0 on TERM/INT).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { run } from '../../common/exec.js';
import { ensureDir, pathExists } from '../../common/fsutil.js';
import { errorMessage, hasCode, internal } from '../../common/errors.js';
import { logger } from '../../common/log.js';

/** Where the infra process lives inside the pause rootfs; the spec's process.args is [PAUSE_PATH]. */
export const PAUSE_PATH = '/pause';

export interface PauseRootfs {
  /** Directory for the OCI spec's root.path; shared by all sandboxes, mount it read-only. */
  rootfs: string;
  pausePath: string;
  kind: 'static-pause' | 'busybox';
}

export interface PauseRootfsOptions {
  gccPath?: string;
  busyboxPath?: string;
  /** Skip gcc and build the busybox variant (tests of the fallback). */
  forceBusybox?: boolean;
}

const BUSYBOX_PAUSE_SCRIPT = '#!/busybox sh\ntrap "exit 0" TERM INT\nwhile :; do /busybox sleep 3600 & wait; done\n';

/** pause.c sits beside this module when run from src/, under src/ when run from dist/. */
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

/** Writes a file under a temporary name and renames it into place, so concurrent builders never see half a file. */
async function installExecutable(target: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await fill(tmp);
    await fsp.chmod(tmp, 0o755);
    await fsp.rename(tmp, target);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/** Builds `<dir>/rootfs` with `/pause` when missing; cheap when it already exists. */
export async function preparePauseRootfs(dir: string, opts: PauseRootfsOptions = {}): Promise<PauseRootfs> {
  const rootfs = path.join(dir, 'rootfs');
  const pauseFile = path.join(rootfs, PAUSE_PATH);
  const busyboxFile = path.join(rootfs, 'busybox');
  if (await pathExists(pauseFile)) {
    return { rootfs, pausePath: PAUSE_PATH, kind: (await pathExists(busyboxFile)) ? 'busybox' : 'static-pause' };
  }

  await ensureDir(rootfs);
  for (const mountPoint of ['proc', 'dev', 'sys', 'etc', 'tmp']) await ensureDir(path.join(rootfs, mountPoint));

  if (!opts.forceBusybox) {
    const source = await findPauseSource();
    if (source) {
      try {
        await installExecutable(pauseFile, async (tmp) => {
          await run(opts.gccPath ?? 'gcc', ['-static', '-O2', '-s', '-o', tmp, source], { timeoutMs: 120_000 });
        });
        return { rootfs, pausePath: PAUSE_PATH, kind: 'static-pause' };
      } catch (err) {
        logger().warn({ err: errorMessage(err) }, 'cannot build a static pause with gcc; using busybox');
      }
    } else {
      logger().warn({ candidates: pauseSourceCandidates() }, 'pause.c not found; using busybox');
    }
  }

  const busyboxSource = opts.busyboxPath ?? '/bin/busybox';
  try {
    await installExecutable(busyboxFile, (tmp) => fsp.copyFile(busyboxSource, tmp));
    await installExecutable(pauseFile, (tmp) => fsp.writeFile(tmp, BUSYBOX_PAUSE_SCRIPT));
  } catch (err) {
    if (!hasCode(err, 'EEXIST')) throw internal(`cannot build pause rootfs in ${dir} from ${busyboxSource}: ${errorMessage(err)}`, err);
  }
  return { rootfs, pausePath: PAUSE_PATH, kind: 'busybox' };
}

/** The pause rootfs directory (what the sandbox spec's root.path needs); its infra binary is PAUSE_PATH. */
export async function ensurePauseRootfs(dir: string, opts: PauseRootfsOptions = {}): Promise<string> {
  return (await preparePauseRootfs(dir, opts)).rootfs;
}
