// Image pulls through a real nodelet-cri process: SIGKILL mid-pull, and registry mirrors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { startTestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { loadFixtures, type Fixtures } from '../helpers/fixtures.js';

let reg: Registries;
let fixtures: Fixtures;

before(async () => {
  reg = await useRegistries();
  fixtures = await loadFixtures();
});
after(async () => reg?.stop());

test('SIGKILL mid-pull: after the restart no partial image is visible and the next pull completes', async () => {
  const d = await startTestDaemon();
  try {
    const big = `${reg.plain}/nodelet-test/big:latest`;
    const pulling = d.client.image('PullImage', { image: { image: big } }).catch((err) => err);
    // Kill once the download is under way (an ingest file exists), else after a short while.
    const ingest = path.join(d.root, 'images', 'ingest');
    for (let i = 0; i < 100; i++) {
      const files = await fsp.readdir(ingest).catch(() => []);
      if (files.length) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await d.kill();
    await pulling;
    await d.restart();
    const status = await d.client.image('ImageStatus', { image: { image: big } });
    assert.equal(status.image, null, 'the interrupted pull left no image');
    const list = await d.client.image('ListImages', {});
    assert.ok(!list.images.some((i: any) => i.repo_tags.includes(big)));
    const { image_ref } = await d.client.image('PullImage', { image: { image: big } });
    assert.equal(image_ref, fixtures.big.configDigest);
    const after = await d.client.image('ImageStatus', { image: { image: big } });
    assert.deepEqual(after.image.repo_tags, [big]);
    assert.deepEqual(await fsp.readdir(ingest).catch(() => []), [], 'no stale ingest files');
  } finally {
    await d.cleanup();
  }
});

test('--registry-mirror: pulls of another registry go to the mirror with names unchanged', async () => {
  const d = await startTestDaemon({ args: ['--registry-mirror', `registry.k8s.io=http://${reg.plain}`] });
  try {
    const name = 'registry.k8s.io/nodelet-test/busybox:1.0';
    const { image_ref } = await d.client.image('PullImage', { image: { image: name } });
    assert.equal(image_ref, fixtures.busybox.configDigest);
    const st = await d.client.image('ImageStatus', { image: { image: name } });
    assert.deepEqual(st.image.repo_tags, [name]);
    assert.ok(st.image.repo_digests[0].startsWith('registry.k8s.io/nodelet-test/busybox@sha256:'));
  } finally {
    await d.cleanup();
  }
});
