// Container lifecycle hooks: postStart right after StartContainer, preStop before a container is stopped.
import type { V1Container, V1LifecycleHandler } from '@kubernetes/client-node';
import type { CriClient } from './cri-client.js';
import { execAction, httpGetAction, type ActionResult } from './probes/actions.js';

export interface HookTarget {
  cri: CriClient;
  container: V1Container;
  containerId: string;
  /** Where an httpGet hook without a host goes: the pod IP (the host's for hostNetwork). */
  podIP: string;
}

/** Runs a hook handler within timeoutSeconds; resolves with what it said, ok false when it failed. */
export async function runLifecycleHook(handler: V1LifecycleHandler, target: HookTarget, timeoutSeconds: number): Promise<ActionResult> {
  const timeout = Math.max(1, Math.ceil(timeoutSeconds));
  if (handler.exec) return execAction(target.cri, target.containerId, handler.exec, timeout);
  if (handler.httpGet) return httpGetAction(handler.httpGet, target.podIP, target.container, timeout);
  if (handler.sleep) {
    const ms = Math.min(handler.sleep.seconds, timeout) * 1000;
    await new Promise((r) => setTimeout(r, ms));
    return { ok: true, output: '' };
  }
  if (handler.tcpSocket) return { ok: false, output: 'tcpSocket is not a supported lifecycle hook handler' };
  return { ok: false, output: 'lifecycle hook has no handler' };
}
