// Small builders for CRI requests used by the runtime tests.
import { randomBytes } from 'node:crypto';
import type { CriClient } from './cri-client.js';

export function sandboxConfig(name: string, logDir: string, extra: Record<string, any> = {}): any {
  return {
    metadata: { name, namespace: 'nodelet-test', uid: randomBytes(8).toString('hex'), attempt: 0 },
    hostname: name,
    log_directory: logDir,
    labels: { app: name },
    annotations: {},
    linux: { security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    ...extra,
  };
}

export function containerConfig(name: string, image: string, command: string[], extra: Record<string, any> = {}): any {
  return {
    metadata: { name, attempt: 0 },
    image: { image },
    command,
    log_path: `${name}.log`,
    labels: { container: name },
    ...extra,
  };
}

/** Creates and starts a container; returns its id. */
export async function runContainer(cri: CriClient, sandboxId: string, sandbox: any, config: any): Promise<string> {
  const { container_id } = await cri.runtime('CreateContainer', { pod_sandbox_id: sandboxId, config, sandbox_config: sandbox });
  await cri.runtime('StartContainer', { container_id });
  return container_id;
}

/** Polls ContainerStatus until the container exited (or the time is up). */
export async function waitExited(cri: CriClient, id: string, timeoutMs = 20_000): Promise<any> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const { status } = await cri.runtime('ContainerStatus', { container_id: id });
    if (status.state === 'CONTAINER_EXITED' || Date.now() > until) return status;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The shared poller lives in wait.ts; re-exported here for the tests that import it from pods.
export { waitFor } from './wait.js';
