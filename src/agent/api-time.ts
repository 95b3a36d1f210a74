// Times on the wire as the apiserver parses them: metav1.Time is RFC 3339 in whole seconds, metav1.MicroTime has
// exactly six fractional digits (anything else is refused). client-node writes every Date with toISOString's three
// digits, so every request body the agent sends passes through normalizeWireTimes (kube-client.ts) — the one place.

/** Fields of type metav1.MicroTime (Lease, Event, events.k8s.io Event series, LeaseCandidate). */
export const MICRO_TIME_FIELDS: ReadonlySet<string> = new Set(['renewTime', 'acquireTime', 'eventTime', 'lastObservedTime', 'pingTime']);

/** Fields of type metav1.Time in the objects a node writes (Node, Pod, Event, Lease, TokenRequest, managedFields). */
export const TIME_FIELDS: ReadonlySet<string> = new Set([
  'creationTimestamp', 'deletionTimestamp', 'lastTransitionTime', 'lastHeartbeatTime', 'lastProbeTime', 'startTime',
  'startedAt', 'finishedAt', 'firstTimestamp', 'lastTimestamp', 'lastUpdateTime', 'expirationTimestamp', 'time',
]);

/** Maps whose keys and values are the user's, never rewritten. */
const OPAQUE_FIELDS: ReadonlySet<string> = new Set(['labels', 'annotations', 'data', 'binaryData', 'stringData', 'nodeSelector']);

const RFC3339 = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/;

/** A time as metav1.MicroTime text: exactly six fractional digits. */
export function microTime(t: Date | string | number): string {
  const text = typeof t === 'string' ? t : new Date(t).toISOString();
  const m = RFC3339.exec(text);
  if (!m) throw new Error(`not an RFC 3339 time: ${text}`);
  return `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}${m[3]}`;
}

/** A time as metav1.Time text: whole seconds. */
export function secondsTime(t: Date | string | number): string {
  const text = typeof t === 'string' ? t : new Date(t).toISOString();
  const m = RFC3339.exec(text);
  if (!m) throw new Error(`not an RFC 3339 time: ${text}`);
  return `${m[1]}${m[3]}`;
}

function rewrite(value: unknown, key: string | undefined): unknown {
  if (value instanceof Date) value = value.toISOString();
  if (typeof value === 'string') {
    if (key === undefined || !RFC3339.test(value)) return value;
    if (MICRO_TIME_FIELDS.has(key)) return microTime(value);
    if (TIME_FIELDS.has(key)) return secondsTime(value);
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => rewrite(v, undefined));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = OPAQUE_FIELDS.has(k) ? v : rewrite(v, k);
  return out;
}

/** An API object (or patch) with its MicroTime fields in six digits and its Time fields in seconds. */
export function normalizeWireTimes<T>(obj: T): T {
  return rewrite(obj, undefined) as T;
}

/** The same for a JSON request body; anything that is not JSON passes unchanged. */
export function normalizeWireTimesInJson(body: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return body;
  }
  return JSON.stringify(normalizeWireTimes(parsed));
}
