// Waiting for a condition instead of sleeping: poll until it holds, fail with what was awaited when the bound passes.

export interface WaitOptions {
  /** Give up after this long (default 15 s). */
  timeoutMs?: number;
  /** Time between two checks (default 100 ms). */
  intervalMs?: number;
}

/**
 * Polls `fn` until it returns a truthy value and returns that value. A throw counts as "not yet"; the last one
 * is named in the timeout error. The third argument is the timeout in ms, or options.
 */
export async function waitFor<T>(what: string, fn: () => T | undefined | false | null | Promise<T | undefined | false | null>, opts: number | WaitOptions = {}): Promise<T> {
  const { timeoutMs = 15_000, intervalMs = 100 } = typeof opts === 'number' ? { timeoutMs: opts } : opts;
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Whether process `pid` has a handler for (`SigCgt`) or ignores (`SigIgn`) signal number `signal`, from /proc. */
export async function signalDisposition(pid: number, signal: number): Promise<'caught' | 'ignored' | 'default'> {
  const { readFile } = await import('node:fs/promises');
  return dispositionFromStatus(await readFile(`/proc/${pid}/status`, 'utf8'), signal);
}

/** The same from the text of a /proc/<pid>/status (e.g. read inside a container). */
export function dispositionFromStatus(status: string, signal: number): 'caught' | 'ignored' | 'default' {
  const mask = (field: string) => BigInt(`0x${new RegExp(`^${field}:\\s*([0-9a-f]+)`, 'm').exec(status)?.[1] ?? '0'}`);
  const bit = 1n << BigInt(signal - 1);
  if (mask('SigCgt') & bit) return 'caught';
  if (mask('SigIgn') & bit) return 'ignored';
  return 'default';
}
