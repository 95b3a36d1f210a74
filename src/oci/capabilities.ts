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
 * Defaults, then ALL in add (every capability), then ALL in drop (none), then the
 * named additions, then the named drops. Privileged containers get every capability.
 * Ambient capabilities are also put in the inheritable, permitted and effective sets, as the kernel requires.
 */
export function resolveCapabilities(requested: Capability__Output | null | undefined, privileged: boolean): OciCapabilities {
  const add = checked(requested?.add_capabilities ?? [], 'add_capabilities');
  const drop = checked(requested?.drop_capabilities ?? [], 'drop_capabilities');
  const ambient = checked(requested?.add_ambient_capabilities ?? [], 'add_ambient_capabilities').filter((c) => c !== 'ALL');

  let caps: Set<string>;
  if (privileged) {
    caps = new Set(ALL_CAPABILITIES);
  } else {
    caps = new Set(DEFAULT_CAPABILITIES);
    if (add.includes('ALL')) caps = new Set(ALL_CAPABILITIES);
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
