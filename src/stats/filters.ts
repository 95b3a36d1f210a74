// Which containers and sandboxes a stats filter selects (ids by prefix, like the List RPCs; labels exactly).
import type { ContainerRecord, SandboxRecord } from '../runtime/records.js';

export interface ContainerStatsSelector {
  id?: string;
  pod_sandbox_id?: string;
  label_selector?: Record<string, string>;
}

export interface SandboxStatsSelector {
  id?: string;
  label_selector?: Record<string, string>;
}

export function labelsMatch(labels: Record<string, string> | undefined, selector: Record<string, string> | undefined): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) if (labels?.[k] !== v) return false;
  return true;
}

export function containerSelected(rec: ContainerRecord, filter: ContainerStatsSelector | null | undefined): boolean {
  if (rec.phase !== 'ready') return false;
  if (!filter) return true;
  if (filter.id && !rec.id.startsWith(filter.id)) return false;
  if (filter.pod_sandbox_id && !rec.sandboxId.startsWith(filter.pod_sandbox_id)) return false;
  return labelsMatch(rec.config.labels, filter.label_selector);
}

export function sandboxSelected(rec: SandboxRecord, filter: SandboxStatsSelector | null | undefined): boolean {
  if (rec.phase !== 'ready') return false;
  if (!filter) return true;
  if (filter.id && !rec.id.startsWith(filter.id)) return false;
  return labelsMatch(rec.config.labels, filter.label_selector);
}
