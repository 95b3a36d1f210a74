// Notices container exits as the backends report them, so states and STOPPED events follow without
// anyone asking; a periodic sweep catches what a report missed.
import { errorMessage } from '../common/errors.js';
import { logger } from '../common/log.js';
import type { RuntimeBackend } from './backend.js';

export interface ExitTargets {
  /** The backends whose exits are followed. */
  backends: RuntimeBackend[];
  /** Called with an id that exited (or might have); must be cheap when nothing changed. */
  onMaybeExited(id: string): Promise<void>;
  /** Ids believed running, for the sweep. */
  runningIds(): string[];
}

export class ExitMonitor {
  private readonly stopping = new AbortController();
  private timer?: NodeJS.Timeout;
  private readonly log = logger({ component: 'exit-monitor' });

  constructor(
    private readonly targets: ExitTargets,
    private readonly sweepMs = 2000,
  ) {}

  async start(): Promise<void> {
    for (const backend of this.targets.backends) void this.follow(backend);
    // The first sweep comes soon after start: exits that happened while the daemon was down.
    setTimeout(() => this.sweep(), 1000).unref();
    this.timer = setInterval(() => this.sweep(), this.sweepMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopping.abort();
    if (this.timer) clearInterval(this.timer);
  }

  private async follow(backend: RuntimeBackend): Promise<void> {
    try {
      for await (const exit of backend.exits(this.stopping.signal)) this.check(exit.id);
    } catch (err) {
      if (!this.stopping.signal.aborted) this.log.warn({ backend: backend.type, err: errorMessage(err) }, 'following exits failed; sweeping only');
    }
  }

  private sweep(): void {
    for (const id of this.targets.runningIds()) this.check(id);
  }

  private check(id: string): void {
    this.targets.onMaybeExited(id).catch((err) => this.log.debug({ id, err: errorMessage(err) }, 'exit check failed'));
  }
}
