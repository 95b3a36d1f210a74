// conmon records a container's end in `<exitDir>/<id>` (the exit code; the file's mtime is when) and
// leaves an `oom` file in the persist dir when the cgroup hit an OOM kill.
import { promises as fsp, statSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { errorMessage, hasCode } from '../../common/errors.js';
import { ensureDir, pathExists } from '../../common/fsutil.js';
import type { Logger } from '../../common/log.js';
import { checkId, ID_PATTERN, type RuncPaths } from './paths.js';

const EXIT_POLL_MS = 250;

export interface ExitInfo {
  exitCode: number;
  /** mtime of the exit file. */
  finishedAt: Date;
}

export class ExitFiles {
  constructor(
    private readonly paths: RuncPaths,
    private readonly log: Logger,
  ) {}

  async read(id: string): Promise<ExitInfo | undefined> {
    const file = this.paths.exitFile(id);
    // Every status call asks while the container runs: no file is the common answer, found here without
    // a thread-pool round trip or an ENOENT error object (the exit dir is under the run root, a tmpfs).
    const stat = statSync(file, { throwIfNoEntry: false });
    if (!stat) return undefined;
    try {
      const text = await fsp.readFile(file, 'utf8');
      const exitCode = Number.parseInt(text.trim(), 10);
      if (Number.isNaN(exitCode)) return undefined; // being written
      return { exitCode, finishedAt: stat.mtime };
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return undefined;
      throw err;
    }
  }

  /** Resolves when conmon has written the exit file; rejects with the signal's reason when aborted. */
  async wait(id: string, signal?: AbortSignal): Promise<ExitInfo> {
    checkId(id);
    await ensureDir(this.paths.exitDir);
    return new Promise<ExitInfo>((resolve, reject) => {
      let watcher: FSWatcher | undefined;
      let poller: NodeJS.Timeout | undefined;
      let checking = false;
      let done = false;
      const finish = (fn: () => void): void => {
        if (done) return;
        done = true;
        watcher?.close();
        if (poller) clearInterval(poller);
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = (): void => finish(() => reject(signal?.reason ?? new Error('aborted')));
      const check = (): void => {
        if (checking || done) return;
        checking = true;
        this.read(id).then(
          (exit) => {
            checking = false;
            if (exit) finish(() => resolve(exit));
          },
          (err: unknown) => {
            checking = false;
            finish(() => reject(err));
          },
        );
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        watcher = fsWatch(this.paths.exitDir, (_event, name) => {
          if (name === null || name === id || String(name).includes(id)) check();
        });
        watcher.on('error', () => undefined);
      } catch {
        watcher = undefined; // polling alone
      }
      poller = setInterval(check, EXIT_POLL_MS);
      poller.unref();
      check();
    });
  }

  /**
   * Exit files as conmon writes them, until `signal` aborts; a watch of the exit dir, so one may be
   * missed (or reported twice) and callers poll too.
   */
  async *follow(signal: AbortSignal): AsyncGenerator<ExitInfo & { id: string }> {
    await ensureDir(this.paths.exitDir);
    const pending: string[] = [];
    let wake: (() => void) | undefined;
    const notify = (): void => {
      wake?.();
      wake = undefined;
    };
    let watcher: FSWatcher | undefined;
    try {
      watcher = fsWatch(this.paths.exitDir, (_event, name) => {
        if (name && ID_PATTERN.test(String(name)) && pending.length < 10_000) {
          pending.push(String(name));
          notify();
        }
      });
      watcher.on('error', (err) => {
        this.log.warn({ err: errorMessage(err) }, 'exit dir watch failed; exits are found by polling only');
        notify();
      });
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'cannot watch the exit dir; exits are found by polling only');
    }
    signal.addEventListener('abort', notify, { once: true });
    try {
      while (!signal.aborted) {
        const id = pending.shift();
        if (id === undefined) {
          await new Promise<void>((resolve) => (wake = resolve));
          continue;
        }
        const exit = await this.read(id).catch(() => undefined);
        if (exit) yield { id, ...exit };
      }
    } finally {
      watcher?.close();
      signal.removeEventListener('abort', notify);
    }
  }

  /** conmon leaves an `oom` file in the persist dir when the container's cgroup hit an OOM kill. */
  oomKilled(id: string): Promise<boolean> {
    return pathExists(path.join(this.paths.persistDir(id), 'oom'));
  }

  async remove(id: string): Promise<void> {
    await fsp.rm(this.paths.exitFile(id), { force: true });
  }
}
