// Writing a command's result in the chosen format.
import YAML from 'yaml';
import { toJson } from './table.js';

export type OutputFormat = 'table' | 'json' | 'yaml';

/** The response as JSON or YAML (Buffers as text); `table()` renders the table form. */
export function renderOutput(format: OutputFormat, response: unknown, table: () => string): string {
  if (format === 'table') return table();
  const plain = JSON.parse(toJson(response)) as unknown;
  return format === 'json' ? JSON.stringify(plain, null, 2) + '\n' : YAML.stringify(plain);
}

/** A verbose status response with its `info` values decoded from JSON where they are JSON. */
export function withDecodedInfo<T extends { info?: Record<string, string> }>(response: T): Omit<T, 'info'> & { info: Record<string, unknown> } {
  const info: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(response.info ?? {})) {
    try {
      info[key] = JSON.parse(value);
    } catch {
      info[key] = value;
    }
  }
  return { ...response, info };
}
