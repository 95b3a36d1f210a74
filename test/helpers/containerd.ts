// Debian's containerd 1.6 with its CRI plugin for a test: our pause image pushed to the test registry as its
// sandbox image, then the benchmark's containerd set-up (own socket, root, state, CNI bridge and subnet,
// plain-HTTP registry access); cleanup() removes the pods, the shims, the daemon, mounts, bridge and dirs.
import { startContainerd, type BenchContainerd } from '../../scripts/bench/containerd.js';
import { pushPauseImage } from '../../scripts/bench/pause-image.js';

export type TestContainerd = BenchContainerd;

export async function startTestContainerd(registry: string): Promise<TestContainerd> {
  const sandboxImage = await pushPauseImage(registry, 'test');
  return startContainerd({ registry, sandboxImage });
}
