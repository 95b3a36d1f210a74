// Reading the host file a Localhost seccomp profile names, for the pure spec builders.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { invalidArgument } from '../common/errors.js';
import { seccompLocalhostPath } from '../oci/seccomp.js';
import type { SecurityProfile__Output } from '../cri/generated/runtime/v1/SecurityProfile.js';

interface SeccompRequest {
  seccomp?: SecurityProfile__Output | null;
  seccomp_profile_path?: string;
  privileged?: boolean;
}

/**
 * The content of the Localhost profile a (container or sandbox) security context asks for, in
 * either form (seccomp.localhost_ref or the deprecated seccomp_profile_path "localhost/<path>");
 * undefined when it asks for another profile or is privileged (which runs without seccomp).
 */
export async function readLocalhostSeccompProfile(sc: SeccompRequest | null | undefined, field: string): Promise<string | undefined> {
  if (!sc || sc.privileged) return undefined;
  const file = seccompLocalhostPath(sc.seccomp, sc.seccomp_profile_path ?? '');
  if (file === undefined) return undefined;
  const named = sc.seccomp ? `${field}.seccomp.localhost_ref` : `${field}.seccomp_profile_path`;
  if (!path.isAbsolute(file)) throw invalidArgument(`${named}: seccomp profile path "${file}" is not absolute`);
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw invalidArgument(`${named}: seccomp profile ${file} cannot be read (${code})`);
  }
}
