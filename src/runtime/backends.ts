// The registration point of the backends built in, by handler type: the one place that names them
// (each lives in src/runtime/<type>/). A backend added here is usable as `--runtime-handler NAME=<type>:...`.
import { BackendFactory, type BackendConstructor } from './backend.js';
import { runcBackendFor } from './runc/backend.js';

export const builtInBackends: Record<string, BackendConstructor> = {
  runc: runcBackendFor,
  // Loaded only when a handler uses it: its gRPC client and protobufjs cost a daemon without one ~2-3 MiB.
  containerd: async (env) => (await import('./containerd/containerd-runtime.js')).containerdBackendFor(env),
};

export function builtInBackendFactory(): BackendFactory {
  return new BackendFactory(builtInBackends);
}
