// Cold pulls of the bench's `big` image (busybox + ~40 MB incompressible layer) and the 128-layer `deep`
// image from a local registry, through ImageService in this process: pull, remove, repeat; prints p50/min.
// Usage: node dist/scripts/bench/pull-cold.js [iterations]
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImageService } from '../../src/image/image-service.js';
import { RegistryClient } from '../../src/image/registry.js';
import { useRegistries } from '../../test/helpers/registries.js';
import { loadFixtures, imageRef } from '../../test/helpers/fixtures.js';

const iterations = Number(process.argv[2] ?? 7);
const registries = await useRegistries();
const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-pullbench-'));
try {
  const fixtures = await loadFixtures();
  const registry = new RegistryClient({ insecure: [registries.plain], mirrors: {}, requestTimeoutMs: 30_000, retries: 1 });
  const service = new ImageService({ root: path.join(root, 'images'), registry });
  await service.recover();
  for (const name of ['big', 'deep', 'busybox'] as const) {
    const ref = imageRef(registries.plain, fixtures[name]);
    const times: number[] = [];
    for (let i = 0; i < iterations + 1; i++) {
      const t0 = performance.now();
      await service.pull(ref);
      const ms = performance.now() - t0;
      if (i > 0) times.push(ms); // the first pull warms the registry's page cache
      await service.remove(ref);
      await service.layers.removalsDone();
    }
    times.sort((a, b) => a - b);
    process.stdout.write(`${name}: cold pull p50 ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms, min ${times[0]!.toFixed(0)} ms, max ${times[times.length - 1]!.toFixed(0)} ms (n=${times.length})\n`);
  }
} finally {
  await registries.stop();
  await fsp.rm(root, { recursive: true, force: true });
}
