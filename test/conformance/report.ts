// The conformance tier's tally: every check (a critest spec, a node check) is one line; the last
// line is `conformance: N passed, M failed`.

export interface CheckResult {
  /** e.g. `critest: [k8s.io] Container runtime should support ...` or `kubelet: deployment of 10 replicas Running`. */
  name: string;
  passed: boolean;
  /** Why it failed, or a figure worth quoting (e.g. `10/10 Running in 14.2 s`). */
  detail?: string;
}

export class ConformanceReport {
  readonly results: CheckResult[] = [];
  readonly skipped: CheckResult[] = [];

  add(result: CheckResult): void {
    this.results.push(result);
    const mark = result.passed ? 'ok  ' : 'FAIL';
    process.stdout.write(`${mark} ${result.name}${result.detail ? ` — ${result.detail}` : ''}\n`);
  }

  /** A check not run, with the reason (printed, never counted as passed). */
  skip(name: string, why: string): void {
    this.skipped.push({ name, passed: false, detail: why });
    process.stdout.write(`skip ${name} — ${why}\n`);
  }

  /** Runs one named check; a thrown error fails it with the message. */
  async check(name: string, fn: () => Promise<string | void>): Promise<boolean> {
    try {
      const detail = await fn();
      this.add({ name, passed: true, detail: detail || undefined });
      return true;
    } catch (err) {
      this.add({ name, passed: false, detail: (err as Error)?.message ?? String(err) });
      return false;
    }
  }

  get failed(): CheckResult[] {
    return this.results.filter((r) => !r.passed);
  }

  summary(): string {
    const passed = this.results.length - this.failed.length;
    return `conformance: ${passed} passed, ${this.failed.length} failed`;
  }
}
