// The registration point of the backends built in, by handler type: the one place that names them
// (each lives in src/runtime/<type>/). A backend added here is usable as `--runtime-handler NAME=<type>:...`.
import { BackendFactory, type BackendConstructor } from './backend.js';
import { runcBackendFor } from './runc/backend.js';
import { containerdBackendFor } from './containerd/containerd-runtime.js';

export const builtInBackends: Record<string, BackendConstructor> = {
  runc: runcBackendFor,
  containerd: containerdBackendFor,
};

export function builtInBackendFactory(): BackendFactory {
  return new BackendFactory(builtInBackends);
}
