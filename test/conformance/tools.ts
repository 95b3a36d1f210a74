// Finds the real Kubernetes binaries that judge nodelet: critest, crictl, kubelet, kube-apiserver,
// kube-scheduler, kube-controller-manager, kubectl, etcd.
// NODELET_K8S_TOOLS names the directory; otherwise ../shared/tools/unpack (beside the checkout) unpacks them.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

export const TOOL_NAMES = [
  'critest', 'crictl', 'kubelet', 'kube-apiserver', 'kube-scheduler', 'kube-controller-manager', 'kubectl', 'etcd',
] as const;
export type ToolName = (typeof TOOL_NAMES)[number];
export type Tools = Record<ToolName, string> & { dir: string };

// dist/test/conformance → the repository root.
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The backend NODELET_CONFORMANCE_BACKEND names for nodelet-cri's default handler (undefined: the test daemon's default, runc). */
export function conformanceBackend(): 'containerd' | undefined {
  const name = process.env.NODELET_CONFORMANCE_BACKEND;
  if (!name || name === 'runc') return undefined;
  if (name !== 'containerd') throw new Error(`NODELET_CONFORMANCE_BACKEND: unknown backend ${name} (runc, containerd)`);
  return 'containerd';
}

/** The tools directory, or an Error saying in one line what is missing. */
export function findTools(): Tools {
  let dir = process.env.NODELET_K8S_TOOLS;
  if (!dir) {
    const unpack = path.resolve(REPO_ROOT, '..', 'shared', 'tools', 'unpack');
    if (!existsSync(unpack)) {
      throw new Error(`conformance: no tools: set NODELET_K8S_TOOLS to a directory with ${TOOL_NAMES.join(', ')} (or put ../shared/tools/unpack beside the checkout)`);
    }
    dir = execFileSync(unpack, { encoding: 'utf8' }).trim().split('\n').pop()!;
  }
  const missing = TOOL_NAMES.filter((t) => !existsSync(path.join(dir!, t)));
  if (missing.length > 0) throw new Error(`conformance: ${dir} lacks ${missing.join(', ')}`);
  const tools = { dir } as Tools;
  for (const t of TOOL_NAMES) tools[t] = path.join(dir, t);
  return tools;
}
