// Notices container exits as conmon records them (the exit dir), so states and STOPPED events
// follow without anyone asking; a periodic sweep catches what a watch event missed.
import { watch, type FSWatcher } from 'node:fs';
import { ensureDir } from '../common/fsutil.js';
import { errorMessage } from '../common/errors.js';
import { logger } from '../common/log.js';

export interface ExitTargets {
  exitDir: string;
  /** Called with an id whose exit file appeared (or might have); must be cheap when nothing changed. */
  onMaybeExited(id: string): Promise<void>;
  /** Ids believed running, for the sweep. */
  runningIds(): string[];
}

export class ExitMonitor {
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private readonly log = logger({ component: 'exit-monitor' });

  constructor(
    private readonly targets: ExitTargets,
    private readonly sweepMs = 2000,
  ) {}

  async start(): Promise<void> {
    await ensureDir(this.targets.exitDir);
    try {
      this.watcher = watch(this.targets.exitDir, (_event, name) => {
        if (name) this.check(String(name));
      });
      this.watcher.on('error', (err) => this.log.warn({ err: errorMessage(err) }, 'exit dir watch failed; sweeping only'));
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'cannot watch the exit dir; sweeping only');
    }
    // The first sweep comes soon after start: exits that happened while the daemon was down.
    setTimeout(() => this.sweep(), 1000).unref();
    this.timer = setInterval(() => this.sweep(), this.sweepMs);
    this.timer.unref();
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
  }

  private sweep(): void {
    for (const id of this.targets.runningIds()) this.check(id);
  }

  private check(id: string): void {
    this.targets.onMaybeExited(id).catch((err) => this.log.debug({ id, err: errorMessage(err) }, 'exit check failed'));
  }
}
