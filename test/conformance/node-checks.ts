// Placeholder: the node checks are being written.
import type { Tools } from './tools.js';
import type { ConformanceReport } from './report.js';

export async function runNodeChecksPhase(_tools: Tools, report: ConformanceReport, agent: 'kubelet' | 'nodelet-agent'): Promise<void> {
  report.add({ name: `${agent}: node checks`, passed: false, detail: 'not written yet' });
}
