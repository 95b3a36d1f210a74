// --sandbox-image: the pod's infra container runs from a configured image (pulled on first use)
// instead of the built-in pause rootfs; on each backend (containerd's shim mounts the overlay itself).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, testBackends } from '../helpers/daemon.js';
import { useRegistries } from '../helpers/registries.js';
import { sandboxConfig, waitFor } from '../helpers/pods.js';
import { pushPauseImage } from '../../scripts/bench/pause-image.js';

for (const backend of testBackends()) test(`${backend}: a configured sandbox image is pulled and runs the pod infra process`, async () => {
  const reg = await useRegistries();
  const pause = await pushPauseImage(reg.plain, 'sandbox-image-test');
  const d = await startTestDaemon({ backend, args: ['--sandbox-image', pause] });
  const logDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-sbimg-'));
  try {
    const { pod_sandbox_id: id } = await d.client.runtime('RunPodSandbox', { config: sandboxConfig('sbimg', logDir) });
    const st = await d.client.runtime('PodSandboxStatus', { pod_sandbox_id: id, verbose: true });
    assert.equal(st.status.state, 'SANDBOX_READY');
    const info = JSON.parse(st.info.info);
    const cmdline = await fsp.readFile(`/proc/${info.pid}/cmdline`, 'utf8');
    assert.equal(cmdline.split('\0')[0], '/pause');
    const images = await d.client.image('ListImages', {});
    assert.ok(images.images.some((i: any) => i.repo_tags.includes(pause)), 'the sandbox image was pulled');
    // Whoever mounts it (nodelet, or the shim at its bundle), the overlay's upper dir is the sandbox's own.
    const upper = `upperdir=${path.join(d.runRoot, 'sandboxes', id, 'upper')}`;
    const overlays = async () => (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(' overlay ') && l.includes(upper));
    assert.equal((await overlays()).length, 1, 'infra runs on one overlay of the image');
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: id });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: id });
    await waitFor('the overlay unmounted after RemovePodSandbox', async () => (await overlays()).length === 0);
  } finally {
    await d.cleanup();
    await reg.stop();
    await fsp.rm(logDir, { recursive: true, force: true });
  }
});
