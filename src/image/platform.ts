// Platform choice in an image index: which manifest this host runs.
import { notFound } from '../common/errors.js';
import type { Descriptor, Platform } from './media-types.js';

export type { Descriptor, Platform };

const ATTESTATION_ANNOTATION = 'vnd.docker.reference.type';

const NODE_ARCH_TO_OCI: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** The platform of this process in OCI terms (linux/amd64, linux/arm64/v8, linux/arm/v7...). */
export function hostPlatform(): Platform {
  const architecture = NODE_ARCH_TO_OCI[process.arch] ?? process.arch;
  const platform: Platform = { os: process.platform === 'win32' ? 'windows' : process.platform, architecture };
  if (architecture === 'arm64') platform.variant = 'v8';
  if (architecture === 'arm') {
    const armVersion = Number((process.config.variables as Record<string, unknown>).arm_version ?? 7);
    platform.variant = `v${Number.isFinite(armVersion) && armVersion > 0 ? armVersion : 7}`;
  }
  return platform;
}

/** Canonical architecture and variant: aliases folded, default variants filled in. */
export function normalizePlatform(p: Platform): Platform {
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() || undefined;
  switch (architecture) {
    case 'x86_64':
    case 'x86-64':
      architecture = 'amd64';
      break;
    case 'aarch64':
      architecture = 'arm64';
      break;
    case 'armhf':
      architecture = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      architecture = 'arm';
      variant = 'v6';
      break;
    case 'i386':
      architecture = '386';
      break;
  }
  if (architecture === 'amd64' && variant === undefined) variant = 'v1';
  if (architecture === 'arm64' && (variant === undefined || variant === '8')) variant = 'v8';
  if (architecture === 'arm' && variant === undefined) variant = 'v7';
  if (architecture === 'arm' && /^[5-8]$/.test(variant ?? '')) variant = `v${variant}`;
  const normalized: Platform = { os: p.os.toLowerCase(), architecture };
  if (variant !== undefined) normalized.variant = variant;
  return normalized;
}

/** Variants the wanted platform runs, best first: the exact one, then older compatible ones. */
function acceptableVariants(want: Platform): (string | undefined)[] {
  const variant = want.variant;
  const numbered = /^v(\d+)$/.exec(variant ?? '');
  const descending = (lowest: number): string[] => {
    const out: string[] = [];
    for (let v = Number(numbered![1]); v >= lowest; v--) out.push(`v${v}`);
    return out;
  };
  if (numbered && want.architecture === 'amd64') return descending(1);
  if (numbered && want.architecture === 'arm64') return descending(8);
  if (numbered && want.architecture === 'arm') return descending(5);
  return [variant];
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

function isAttestation(desc: Descriptor): boolean {
  if (desc.annotations?.[ATTESTATION_ANNOTATION] === 'attestation-manifest') return true;
  return desc.platform?.os === 'unknown' && desc.platform?.architecture === 'unknown';
}

/**
 * The manifest of an index that runs on `want`: exact variant first, then older compatible variants,
 * then (last) a manifest that declares no platform. Attestation manifests are never chosen.
 */
export function selectManifest(index: { manifests: Descriptor[] }, want: Platform = hostPlatform()): Descriptor {
  const wanted = normalizePlatform(want);
  const variants = acceptableVariants(wanted);
  let best: Descriptor | undefined;
  let bestRank = Number.POSITIVE_INFINITY;
  for (const desc of index.manifests ?? []) {
    if (isAttestation(desc)) continue;
    let rank: number;
    if (!desc.platform) {
      rank = variants.length;
    } else {
      const have = normalizePlatform(desc.platform);
      if (have.os !== wanted.os || have.architecture !== wanted.architecture) continue;
      rank = variants.indexOf(have.variant);
      if (rank < 0) continue;
    }
    if (rank < bestRank) {
      best = desc;
      bestRank = rank;
    }
  }
  if (best) return best;
  const available = (index.manifests ?? [])
    .filter((d) => !isAttestation(d) && d.platform)
    .map((d) => formatPlatform(d.platform!));
  throw notFound(
    `no manifest for platform ${formatPlatform(want)} in the image index; available: ${available.length ? available.join(', ') : 'none'}`,
  );
}
