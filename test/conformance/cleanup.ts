// Undo steps for what a conformance phase starts (processes, interfaces, cgroups, sysctls, dirs),
// run last-in first-out at the phase's end, or all at once on SIGINT/SIGTERM (see run.ts).
const live = new Set<Cleanup>();

export class Cleanup {
  private steps: { what: string; fn: () => Promise<unknown> | unknown }[] = [];
  private running?: Promise<void>;

  constructor(private readonly log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)) {
    live.add(this);
  }

  add(what: string, fn: () => Promise<unknown> | unknown): void {
    this.steps.push({ what, fn });
  }

  /** Runs every step, newest first; a failing step is logged and the rest still run. A run already going (a signal's) is joined, not raced. */
  run(): Promise<void> {
    this.running ??= this.runSteps().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async runSteps(): Promise<void> {
    for (let step = this.steps.pop(); step; step = this.steps.pop()) {
      try {
        await step.fn();
      } catch (err) {
        this.log(`cleanup: ${step.what}: ${(err as Error)?.message ?? err}`);
      }
    }
    live.delete(this);
  }
}

/** Every cleanup not yet run (a signal arrived mid-phase). */
export async function runAllCleanups(): Promise<void> {
  for (const c of [...live].reverse()) await c.run();
}
