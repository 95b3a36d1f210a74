// Image references in the docker reference grammar, normalised the way the kubelet and containerd do:
// `busybox` is docker.io/library/busybox:latest.
import { invalidArgument } from '../common/errors.js';

export interface ImageReference {
  /** Registry host with optional port: docker.io, localhost:5000, registry.k8s.io. */
  domain: string;
  /** Repository path inside the registry: library/busybox. */
  path: string;
  tag?: string;
  /** algorithm:hex, e.g. sha256:<64 hex>. */
  digest?: string;
}

export const DEFAULT_DOMAIN = 'docker.io';
export const DEFAULT_TAG = 'latest';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
const MAX_NAME_LENGTH = 255;

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const ANCHORED_ID_RE = /^[a-f0-9]{64}$/;
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** Why a digest string is not valid, or undefined when it is. */
function digestProblem(digest: string): string | undefined {
  if (!DIGEST_RE.test(digest)) return `malformed digest "${digest}"`;
  const colon = digest.indexOf(':');
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (length === undefined) return `unsupported digest algorithm "${algorithm}"`;
  if (!/^[a-f0-9]+$/.test(hex)) return `digest "${digest}" must be lowercase hex`;
  if (hex.length !== length) return `${algorithm} digest must have ${length} hex characters, got ${hex.length}`;
  return undefined;
}

/** True for a valid content digest such as sha256:<64 lowercase hex>. */
export function isDigest(s: string): boolean {
  return digestProblem(s) === undefined;
}

/** Parses and normalises an image reference; throws invalidArgument naming the problem. */
export function parseReference(s: string): ImageReference {
  const fail = (why: string): never => {
    throw invalidArgument(`invalid image reference "${s}": ${why}`);
  };
  if (s.length === 0) fail('empty reference');
  if (s !== s.trim()) fail('surrounding whitespace');

  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const problem = digestProblem(digest);
    if (problem) fail(problem);
  }

  let tag: string | undefined;
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > rest.lastIndexOf('/')) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG_RE.test(tag)) fail(`invalid tag "${tag}"`);
  }

  if (rest.length === 0) fail('missing repository name');
  if (rest.length > MAX_NAME_LENGTH) fail(`repository name longer than ${MAX_NAME_LENGTH} characters`);
  if (ANCHORED_ID_RE.test(rest)) fail('a 64-character hexadecimal string is an image id, not a repository name');

  let domain = DEFAULT_DOMAIN;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      domain = first;
      path = rest.slice(slash + 1);
    }
  }
  if (!DOMAIN_RE.test(domain)) fail(`invalid registry host "${domain}"`);
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (path.length === 0) fail('missing repository path');
  if (path !== path.toLowerCase()) fail('repository name must be lowercase');
  for (const component of path.split('/')) {
    if (!PATH_COMPONENT_RE.test(component)) fail(`invalid repository path component "${component}"`);
  }
  if (domain === DEFAULT_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const ref: ImageReference = { domain, path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** domain/path, e.g. docker.io/library/busybox. */
export function repositoryName(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}`;
}

/** The full canonical reference: domain/path[:tag][@digest]. */
export function formatReference(ref: ImageReference): string {
  return repositoryName(ref) + (ref.tag !== undefined ? `:${ref.tag}` : '') + (ref.digest !== undefined ? `@${ref.digest}` : '');
}

/** domain/path:tag, or undefined for a reference without a tag. */
export function taggedName(ref: ImageReference): string | undefined {
  return ref.tag !== undefined ? `${repositoryName(ref)}:${ref.tag}` : undefined;
}

/** domain/path@digest — the repo digest form. */
export function digestedName(ref: ImageReference, digest: string): string {
  return `${repositoryName(ref)}@${digest}`;
}
