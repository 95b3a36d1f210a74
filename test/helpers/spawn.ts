// Long-running children for tests and scripts, with execa's conveniences (awaitable result with
// output, timeout, stdout to a file). The daemon's own children go through src/common/exec.ts.
import { execa, type Options, type ResultPromise } from 'execa';

export function spawnChild(file: string, args: readonly string[], options: Options = {}): ResultPromise {
  return execa(file, args, { reject: false, ...options });
}
