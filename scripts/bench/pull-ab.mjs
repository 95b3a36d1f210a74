// A/B cold pulls of one fixture between two builds, alternating per iteration (load drift hits both alike).
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
const [aRoot, bRoot, fixture = 'big', n = '8'] = process.argv.slice(2);
const { useRegistries } = await import(`${aRoot}/dist/test/helpers/registries.js`);
const { loadFixtures, imageRef } = await import(`${aRoot}/dist/test/helpers/fixtures.js`);
const registries = await useRegistries();
const fixtures = await loadFixtures();
const ref = imageRef(registries.plain, fixtures[fixture]);
const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-pullab-'));
const sides = [];
for (const [name, root] of [['A', aRoot], ['B', bRoot]]) {
  const { ImageService } = await import(`${root}/dist/src/image/image-service.js`);
  const { RegistryClient } = await import(`${root}/dist/src/image/registry.js`);
  const registry = new RegistryClient({ insecure: [registries.plain], mirrors: {}, requestTimeoutMs: 30_000, retries: 1 });
  const service = new ImageService({ root: path.join(tmp, name), registry });
  await service.recover();
  sides.push({ name, root, service, times: [] });
}
try {
  for (let i = 0; i <= Number(n); i++) {
    for (const s of i % 2 ? sides : [...sides].reverse()) {
      const t0 = performance.now();
      await s.service.pull(ref);
      const ms = performance.now() - t0;
      if (i > 0) s.times.push(ms);
      await s.service.remove(ref);
      await s.service.layers.removalsDone();
    }
  }
  for (const s of sides) {
    const t = s.times.sort((a, b) => a - b);
    console.log(`${fixture} ${s.name} (${s.root}): p50 ${t[Math.floor(t.length / 2)].toFixed(0)} ms, min ${t[0].toFixed(0)}, max ${t[t.length - 1].toFixed(0)} (n=${t.length})`);
  }
} finally {
  await registries.stop();
  await fsp.rm(tmp, { recursive: true, force: true });
}
