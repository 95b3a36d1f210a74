// A container's volumeMounts → CRI mounts: the volume's host directory (or a subPath inside it), read-only, propagation.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { V1Container } from '@kubernetes/client-node';
import { hasCode, invalidArgument } from '../../common/errors.js';
import { expandVars } from '../pod-spec.js';
import type { MountedVolume } from './pod-volumes.js';

export interface CriMount {
  container_path: string;
  host_path: string;
  readonly: boolean;
  selinux_relabel: boolean;
  propagation: 'PROPAGATION_PRIVATE' | 'PROPAGATION_HOST_TO_CONTAINER' | 'PROPAGATION_BIDIRECTIONAL';
}

const PROPAGATION: Record<string, CriMount['propagation']> = {
  None: 'PROPAGATION_PRIVATE',
  HostToContainer: 'PROPAGATION_HOST_TO_CONTAINER',
  Bidirectional: 'PROPAGATION_BIDIRECTIONAL',
};

function within(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith('/') ? root : `${root}/`);
}

/** The host path of a subPath: created when missing (writable volumes), and never resolving outside the volume. */
async function subPathSource(volume: MountedVolume, subPath: string, field: string): Promise<string> {
  if (path.isAbsolute(subPath)) throw invalidArgument(`${field}: subPath ${JSON.stringify(subPath)} must be relative`);
  if (subPath.split('/').includes('..')) throw invalidArgument(`${field}: subPath ${JSON.stringify(subPath)} must not contain '..'`);
  const source = path.join(volume.hostPath, subPath);
  try {
    await fsp.lstat(source);
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) throw err;
    if (volume.readOnly) throw invalidArgument(`${field}: subPath ${JSON.stringify(subPath)} does not exist in the volume`);
    await fsp.mkdir(source, { recursive: true, mode: 0o755 });
  }
  const [real, root] = await Promise.all([fsp.realpath(source), fsp.realpath(volume.hostPath)]);
  if (!within(root, real)) throw invalidArgument(`${field}: subPath ${JSON.stringify(subPath)} resolves outside the volume`);
  return real;
}

export async function containerMountsFor(
  container: V1Container,
  volumes: Map<string, MountedVolume>,
  env: Map<string, string>,
): Promise<CriMount[]> {
  const mounts: CriMount[] = [];
  for (const [i, vm] of (container.volumeMounts ?? []).entries()) {
    const field = `container ${container.name} volumeMounts[${i}]`;
    const volume = volumes.get(vm.name);
    if (!volume) throw invalidArgument(`${field}: volume ${JSON.stringify(vm.name)} not found`);
    const subPath = vm.subPathExpr ? expandVars(vm.subPathExpr, env) : (vm.subPath ?? '');
    const hostPath = subPath ? await subPathSource(volume, subPath, field) : volume.hostPath;
    const propagation = PROPAGATION[vm.mountPropagation ?? 'None'];
    if (!propagation) throw invalidArgument(`${field}: mountPropagation ${JSON.stringify(vm.mountPropagation)} is not supported`);
    mounts.push({
      container_path: vm.mountPath,
      host_path: hostPath,
      readonly: Boolean(vm.readOnly) || volume.readOnly,
      selinux_relabel: false,
      propagation,
    });
  }
  return mounts;
}
