// Fault injection for tests: NODELET_TEST_CRASH_AT=<step> SIGKILLs the daemon when it reaches that named step (unset: does nothing).
const crashAt = process.env.NODELET_TEST_CRASH_AT || undefined;

export function crashPoint(step: string): void {
  if (crashAt === step) process.kill(process.pid, 'SIGKILL');
}
