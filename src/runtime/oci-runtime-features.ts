// What an OCI runtime binary (runc, crun) says it can do, through its `features` subcommand.
import { release as osRelease } from 'node:os';
import { run } from '../common/exec.js';

/**
 * Whether `binary` applies the "rro" mount option (recursive read-only): its `features` lists it and the
 * kernel has mount_setattr (5.12+). False when the binary can't say.
 */
export async function ociRuntimeSupportsRecursiveReadOnly(binary: string): Promise<boolean> {
  const [major = 0, minor = 0] = osRelease().split('.').map((n) => parseInt(n, 10));
  if (major < 5 || (major === 5 && minor < 12)) return false;
  const res = await run(binary, ['features'], { reject: false, timeoutMs: 10_000 }).catch(() => undefined);
  if (!res || res.exitCode !== 0) return false;
  try {
    const features = JSON.parse(res.stdout) as { mountOptions?: unknown };
    return Array.isArray(features.mountOptions) && features.mountOptions.includes('rro');
  } catch {
    return false;
  }
}
