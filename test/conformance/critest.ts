// Placeholder: the critest phase is being written.
import type { Tools } from './tools.js';
import type { ConformanceReport } from './report.js';

export async function runCritestPhase(_tools: Tools, report: ConformanceReport): Promise<void> {
  report.add({ name: 'critest: phase', passed: false, detail: 'not written yet' });
}
