// A PID namespace's init drops every signal it has no handler for (SIGKILL from outside aside). A stop
// signal sent a moment after the start, before the command set its handler, is then lost and the stop
// waits out its whole timeout (critest's StopContainer right after StartContainer did, now and then).
// Both backends watch for that case and send the signal once more when a handler appears.
import { readFileSync } from 'node:fs';

/** How long, and how often, a stop watches for a handler its init set only after the stop signal came. */
const WATCH_MS = 5000;
const POLL_MS = 25;

interface InitSignalState {
  /** PID 1 of a namespace of its own (the last NSpid field is 1). */
  namespaceInit: boolean;
  caught: boolean;
}

/** What /proc/PID/status says of the process and the signal; undefined once it is gone. */
function initSignalState(pid: number, signal: number): InitSignalState | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const nspids = /^NSpid:\s*(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  if (/^State:\s*Z/m.test(status)) return undefined;
  return {
    namespaceInit: nspids.length > 1 && nspids.at(-1) === '1',
    caught: ((BigInt(`0x${mask}`) >> BigInt(signal - 1)) & 1n) === 1n,
  };
}

/**
 * Called just after the stop signal was sent to the container's init `pid`: when the init is a namespace's
 * PID 1 without a handler for it (so the kernel dropped it), waits until a handler appears and calls
 * `resend` once; gives up after a few seconds, when `until` aborts, or when the process is gone. An init
 * that never sets a handler still waits for the stop's timeout, as on every runtime.
 */
export async function resendMissedSignal(pid: number, signal: number, until: AbortSignal, resend: () => Promise<void>): Promise<boolean> {
  const first = initSignalState(pid, signal);
  if (!first?.namespaceInit || first.caught) return false;
  const deadline = Date.now() + WATCH_MS;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS).unref());
    if (until.aborted) return false;
    const now = initSignalState(pid, signal);
    if (!now) return false;
    if (now.caught) {
      await resend();
      return true;
    }
  }
  return false;
}
