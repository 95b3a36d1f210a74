// The capability sets of a container from its CRI Capability message.
import { invalidArgument } from '../common/errors.js';
import type { Capability__Output } from '../cri/generated/runtime/v1/Capability.js';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES, normalizeCapability } from './defaults.js';
import type { OciCapabilities } from './types.js';

const KNOWN = new Set(ALL_CAPABILITIES);

function checked(names: readonly string[], field: string): string[] {
  return names.map((raw) => {
    const name = normalizeCapability(raw);
    if (name !== 'ALL' && !KNOWN.has(name)) throw invalidArgument(`${field}: unknown capability "${raw}"`);
    return name;
  });
}

/**
 * Capability names of a hex mask as /proc/<pid>/status shows them (CapEff: 000001fffeffffff),
 * so a caller can pass the daemon's own set as `available`.
 */
export function capabilitiesFromMask(hex: string): string[] {
  const mask = BigInt(`0x${hex.trim() || '0'}`);
  return ALL_CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n);
}

/**
 * Defaults, then ALL in add (every capability), then ALL in drop (none), then the
 * named additions, then the named drops. Privileged containers get every capability.
 * Ambient capabilities are also put in the inheritable, permitted and effective sets, as the kernel requires.
 */
export function resolveCapabilities(
  requested: Capability__Output | null | undefined,
  privileged: boolean,
  available: readonly string[] = ALL_CAPABILITIES,
): OciCapabilities {
  const add = checked(requested?.add_capabilities ?? [], 'add_capabilities');
  const drop = checked(requested?.drop_capabilities ?? [], 'drop_capabilities');
  const ambient = checked(requested?.add_ambient_capabilities ?? [], 'add_ambient_capabilities').filter((c) => c !== 'ALL');

  let caps: Set<string>;
  if (privileged) {
    caps = new Set(available);
  } else {
    caps = new Set(DEFAULT_CAPABILITIES);
    if (add.includes('ALL')) caps = new Set(available);
    if (drop.includes('ALL')) caps = new Set();
    for (const c of add) if (c !== 'ALL') caps.add(c);
    for (const c of drop) if (c !== 'ALL') caps.delete(c);
  }
  for (const c of ambient) caps.add(c);

  // Kernel numbering order keeps the JSON stable.
  const list = ALL_CAPABILITIES.filter((c) => caps.has(c));
  const ambientList = ALL_CAPABILITIES.filter((c) => ambient.includes(c));
  return {
    bounding: [...list],
    effective: [...list],
    permitted: [...list],
    inheritable: [...ambientList],
    ambient: ambientList,
  };
}
