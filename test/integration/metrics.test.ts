// The Prometheus endpoint and /healthz of a real daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import { startTestDaemon } from '../helpers/daemon.js';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

test('metrics count RPCs by method and code; healthz fails when the socket stops serving', async () => {
  const port = await freePort();
  const d = await startTestDaemon({ args: ['--metrics-address', `127.0.0.1:${port}`] });
  try {
    for (let i = 0; i < 3; i++) await d.client.runtime('Version', {});
    await d.client.runtime('ContainerStatus', { container_id: 'nope' }).catch(() => undefined);
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(text, /nodelet_cri_requests_total\{method="Version",code="OK"\} 3/);
    assert.match(text, /nodelet_cri_request_errors_total\{method="ContainerStatus",code="NOT_FOUND"\} 1/);
    assert.match(text, /nodelet_cri_request_duration_seconds_bucket\{le="0.005",method="Version"\}/);
    assert.match(text, /nodelet_monitor_processes 0/);
    assert.match(text, /nodelet_image_pulls_total 0/);
    assert.match(text, /nodelet_cri_process_resident_memory_bytes \d+/);
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(ok.status, 200);
    // Without its socket file the daemon is unreachable for clients: health must say so.
    await fsp.rm(d.socket);
    const bad = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(bad.status, 503);
    assert.match(await bad.text(), /not serving/);
  } finally {
    await d.cleanup();
  }
});
