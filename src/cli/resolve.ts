// Turns an id or unique id prefix typed by a person into the full container or pod sandbox id.
import type { CriClient } from './client.js';
import { CliError } from './command.js';

/** The one id among `ids` equal to or starting with `wanted`; throws when none or several match. */
export function matchIdPrefix(wanted: string, ids: string[], kind: string): string {
  if (wanted === '') throw new CliError(`empty ${kind} id`);
  if (ids.includes(wanted)) return wanted;
  const matches = [...new Set(ids.filter((id) => id.startsWith(wanted)))];
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0) throw new CliError(`no ${kind} matches id "${wanted}"`);
  throw new CliError(`${kind} id prefix "${wanted}" is ambiguous: it matches ${matches.length} ${kind}s`);
}

export async function resolveContainerId(client: CriClient, wanted: string): Promise<string> {
  // Runtimes that accept prefixes in the filter answer directly; for the others, match the full list here.
  const filtered = await client.runtime('ListContainers', { filter: { id: wanted } });
  const ids = filtered.containers.map((c) => c.id);
  if (ids.length === 1 && ids[0]!.startsWith(wanted)) return ids[0]!;
  const all = await client.runtime('ListContainers', {});
  return matchIdPrefix(wanted, all.containers.map((c) => c.id), 'container');
}

export async function resolvePodId(client: CriClient, wanted: string): Promise<string> {
  const filtered = await client.runtime('ListPodSandbox', { filter: { id: wanted } });
  const ids = filtered.items.map((p) => p.id);
  if (ids.length === 1 && ids[0]!.startsWith(wanted)) return ids[0]!;
  const all = await client.runtime('ListPodSandbox', {});
  return matchIdPrefix(wanted, all.items.map((p) => p.id), 'pod');
}
