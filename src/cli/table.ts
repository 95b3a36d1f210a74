// Output formatting for the CLI: aligned tables, short ids, human sizes and ages, JSON.

/** Spaces between columns, as crictl's tabwriter pads. */
const COLUMN_GAP = 3;
export const SHORT_ID_LENGTH = 13;

/** Left-aligned columns separated by three spaces; the last column is not padded. */
export function formatTable(headers: string[], rows: string[][]): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  const lines = all.map((row) =>
    headers
      .map((_, col) => {
        const cell = row[col] ?? '';
        return col === headers.length - 1 ? cell : cell.padEnd(widths[col]! + COLUMN_GAP);
      })
      .join('')
      .trimEnd(),
  );
  return lines.join('\n') + '\n';
}

/** An id cut to 13 characters (after dropping a "sha256:" prefix), unless `full`. */
export function shortId(id: string, full = false): string {
  const bare = id.startsWith('sha256:') ? id.slice('sha256:'.length) : id;
  return full ? id : bare.slice(0, SHORT_ID_LENGTH);
}

const SIZE_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];

/** Decimal units with three significant digits: 800B, 1.23MB, 45.6kB. */
export function humanSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '0B';
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < SIZE_UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  let rounded = Number(value.toPrecision(3));
  // 999.6kB rounds to 1000kB: show it as 1MB instead.
  if (rounded >= 1000 && unit < SIZE_UNITS.length - 1) {
    rounded = Number((rounded / 1000).toPrecision(3));
    unit++;
  }
  return `${rounded}${SIZE_UNITS[unit]}`;
}

/** A coarse duration in words, in the style of `docker ps`: "5 minutes", "About an hour", "3 days". */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(hours / 24 / 365)} years`;
}

/** "5 minutes ago" for a CRI timestamp in nanoseconds since the epoch. */
export function ageOf(createdAtNanos: number | string, now = Date.now()): string {
  const nanos = Number(createdAtNanos);
  if (!Number.isFinite(nanos) || nanos <= 0) return 'Unknown';
  return `${humanDuration(Math.max(0, now - nanos / 1e6))} ago`;
}

/** Splits "host:5000/repo/name:tag" into repository and tag (the colon after the last slash). */
export function splitRepoTag(repoTag: string): { repository: string; tag: string } {
  const slash = repoTag.lastIndexOf('/');
  const colon = repoTag.lastIndexOf(':');
  if (colon > slash) return { repository: repoTag.slice(0, colon), tag: repoTag.slice(colon + 1) };
  return { repository: repoTag, tag: '<none>' };
}

/** JSON of a CRI response: two-space indent, Buffers as UTF-8 text. */
export function toJson(value: unknown): string {
  return (
    JSON.stringify(
      value,
      (_key, v: unknown) => {
        if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
          return Buffer.from((v as { data: number[] }).data).toString('utf8');
        }
        return v;
      },
      2,
    ) + '\n'
  );
}

/** CRI state enums in the words of the tables: CONTAINER_RUNNING → Running, SANDBOX_NOTREADY → NotReady. */
export function stateWord(state: string | undefined | null): string {
  switch (state) {
    case 'SANDBOX_READY':
      return 'Ready';
    case 'SANDBOX_NOTREADY':
      return 'NotReady';
    case 'CONTAINER_CREATED':
      return 'Created';
    case 'CONTAINER_RUNNING':
      return 'Running';
    case 'CONTAINER_EXITED':
      return 'Exited';
    default:
      return 'Unknown';
  }
}
