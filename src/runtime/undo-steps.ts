// Named undo steps: each runs even when an earlier one failed (its failure is logged and kept), so
// one stubborn resource never leaves the others behind. Each step is also a test crash point.
import type { Logger } from 'pino';
import { errorMessage } from '../common/errors.js';
import { crashPoint } from '../common/crash-point.js';

export interface UndoSteps {
  /** Runs one named step; never throws. */
  step(name: string, fn: () => Promise<unknown>): Promise<void>;
  /** `name: reason` of every step that failed so far. */
  readonly failed: string[];
}

/** `kind` prefixes the crash points: `<kind>.undo.<step-name>` before a step, `...done` after it. */
export function undoSteps(kind: 'container' | 'sandbox', log: Logger): UndoSteps {
  const failed: string[] = [];
  return {
    failed,
    async step(name, fn) {
      const point = `${kind}.undo.${name.replace(/ /g, '-')}`;
      crashPoint(point);
      try {
        await fn();
        crashPoint(`${point}.done`);
      } catch (err) {
        failed.push(`${name}: ${errorMessage(err)}`);
        log.error({ step: name, err: errorMessage(err) }, 'undo step failed; going on with the others');
      }
    },
  };
}
