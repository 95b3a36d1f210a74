// Reading the host file a Localhost seccomp profile names, for the pure spec builders.
import { promises as fsp, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { NodeletError, invalidArgument } from '../common/errors.js';

/** Docker's default profile is about 20 KiB; a profile of megabytes is not a profile. */
const MAX_PROFILE_BYTES = 1024 * 1024;
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
  // Only a regular file of sane size: /dev/zero or a FIFO would be read forever (or block the create).
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    const st = await handle.stat();
    if (!st.isFile()) throw invalidArgument(`${named}: seccomp profile ${file} is not a regular file`);
    if (st.size > MAX_PROFILE_BYTES) throw invalidArgument(`${named}: seccomp profile ${file} is ${st.size} bytes (at most ${MAX_PROFILE_BYTES})`);
    return await handle.readFile('utf8');
  } catch (err) {
    if (err instanceof NodeletError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw invalidArgument(`${named}: seccomp profile ${file} cannot be read (${code})`);
  } finally {
    await handle?.close();
  }
}
