// The daemon itself: socket handling, several daemons side by side, unbuilt RPCs, clean shutdown, its allocator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startTestDaemon } from '../helpers/daemon.js';
import { sandboxConfig } from '../helpers/pods.js';

test('two daemons run side by side, one on each gRPC server; the socket is 0660; errors and unbuilt RPCs keep their codes', async () => {
  const a = await startTestDaemon({ args: ['--grpc-server', 'builtin'] });
  const b = await startTestDaemon({ args: ['--grpc-server', 'grpc-js'] });
  try {
    const st = await fsp.stat(a.socket);
    assert.equal(st.mode & 0o777, 0o660);
    const [va, vb] = await Promise.all([a.client.runtime('Version', {}), b.client.runtime('Version', {})]);
    assert.equal(va.runtime_name, 'nodelet');
    assert.equal(vb.runtime_name, 'nodelet');
    for (const d of [a, b]) {
      await assert.rejects(d.client.runtime('CheckpointContainer', { container_id: 'x' }), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNIMPLEMENTED);
        return true;
      });
      await assert.rejects(d.client.runtime('ContainerStatus', { container_id: 'nosuchcontainer' }), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.NOT_FOUND);
        assert.match(err.details, /nosuchcontainer/);
        return true;
      });
    }
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('a live socket is refused; a stale one is replaced; SIGTERM removes the socket', async () => {
  const a = await startTestDaemon();
  try {
    // A second daemon on the same socket must refuse to start.
    const second = spawn(a.proc.spawnargs[0]!, ['--socket', a.socket, '--root', a.root + '-2', '--run-root', a.runRoot + '-2'], { stdio: 'pipe' });
    let out = '';
    second.stdout!.on('data', (c) => (out += c));
    const code = await new Promise((r) => second.on('exit', r));
    assert.equal(code, 1);
    assert.match(out, /in use/);
    await fsp.rm(a.root + '-2', { recursive: true, force: true });
    await fsp.rm(a.runRoot + '-2', { recursive: true, force: true });
    // SIGKILL leaves a stale socket; a restart replaces it.
    await a.kill();
    const stale = await fsp.stat(a.socket);
    assert.ok(stale.isSocket());
    await a.restart();
    assert.equal((await a.client.runtime('Version', {})).runtime_name, 'nodelet');
    // SIGTERM: clean exit, socket gone.
    a.client.close();
    const exited = new Promise<number | null>((r) => a.proc.once('exit', (c) => r(c)));
    a.proc.kill('SIGTERM');
    assert.equal(await exited, 0);
    await assert.rejects(fsp.stat(a.socket), /ENOENT/);
    await assert.rejects(new Promise((resolve, reject) => net.connect(a.socket).on('connect', resolve).on('error', reject)));
  } finally {
    await a.cleanup();
  }
});

test('the daemon allocates with jemalloc from its #! line; the runtime and the rest of its children get neither variable', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-alloc-'));
  // An OCI runtime that records each call's environment and caller (the daemon itself, or conmon) before runc runs it.
  const runtime = path.join(dir, 'recording-runtime');
  await fsp.writeFile(runtime, `#!/bin/sh\n{ echo "caller=$PPID"; env; } > "${dir}/call.$$"\nexec runc "$@"\n`, { mode: 0o755 });
  const d = await startTestDaemon({ args: ['--runtime-handler', `recorder=${runtime}`] });
  try {
    assert.match(await fsp.readFile(`/proc/${d.proc.pid}/maps`, 'utf8'), /libjemalloc\.so\.2/, 'the daemon process maps libjemalloc');
    const config = sandboxConfig('alloc', path.join(dir, 'logs'));
    const { pod_sandbox_id: pod } = await d.client.runtime('RunPodSandbox', { config, runtime_handler: 'recorder' });
    await d.client.runtime('StopPodSandbox', { pod_sandbox_id: pod });
    await d.client.runtime('RemovePodSandbox', { pod_sandbox_id: pod });
    const calls = await Promise.all((await fsp.readdir(dir)).filter((f) => f.startsWith('call.')).map((f) => fsp.readFile(path.join(dir, f), 'utf8')));
    assert.ok(calls.some((c) => c.startsWith(`caller=${d.proc.pid}\n`)), `the daemon (pid ${d.proc.pid}) ran the runtime itself at least once: ${calls.map((c) => c.split('\n')[0]).join(', ')}`);
    for (const call of calls) {
      assert.doesNotMatch(call, /^LD_PRELOAD=/m);
      assert.doesNotMatch(call, /^MALLOC_CONF=/m);
    }
  } finally {
    await d.cleanup();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
