// Exec, Attach and PortForward RPCs: validate against the runtime's records, then hand out a URL on
// the streaming server where the client upgrades to SPDY or WebSocket.
import type { ServiceHandlers } from './server.js';
import type { RuntimeService } from '../runtime/runtime-service.js';
import type { StreamingServer } from '../streaming/server.js';
import type { ExecRequest__Output } from './generated/runtime/v1/ExecRequest.js';
import type { AttachRequest__Output } from './generated/runtime/v1/AttachRequest.js';
import type { PortForwardRequest__Output } from './generated/runtime/v1/PortForwardRequest.js';
import { failedPrecondition, invalidArgument } from '../common/errors.js';
import { checkCommand } from '../runtime/validation.js';

function checkStdio(req: { stdin: boolean; stdout: boolean; stderr: boolean; tty: boolean }): void {
  if (!req.stdin && !req.stdout && !req.stderr) throw invalidArgument('one of stdin, stdout or stderr must be set');
  if (req.tty && req.stderr) throw invalidArgument('tty and stderr cannot both be set');
}

export function streamingHandlers(rt: RuntimeService, server: StreamingServer): ServiceHandlers {
  const runningContainer = async (id: string) => {
    const rec = await rt.containers.get(id);
    if (rec.state !== 'CONTAINER_RUNNING') throw failedPrecondition(`container ${rec.id} is not running (state ${rec.state})`);
    return rec;
  };
  return {
    unary: {
      Exec: async (req: ExecRequest__Output) => {
        if (!req.container_id) throw invalidArgument('container_id is required');
        checkCommand(req.cmd, 'cmd');
        checkStdio(req);
        const rec = await runningContainer(req.container_id);
        return {
          url: server.issue({ kind: 'exec', containerId: rec.id, cmd: req.cmd, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, tty: req.tty }),
        };
      },
      Attach: async (req: AttachRequest__Output) => {
        if (!req.container_id) throw invalidArgument('container_id is required');
        checkStdio(req);
        const rec = await runningContainer(req.container_id);
        // The container's stdio is what it is: a tty container's output all comes on stdout.
        const tty = Boolean(rec.config.tty);
        return {
          url: server.issue({
            kind: 'attach',
            containerId: rec.id,
            stdin: req.stdin && Boolean(rec.config.stdin),
            stdout: req.stdout,
            stderr: req.stderr && !tty,
            tty,
          }),
        };
      },
      PortForward: async (req: PortForwardRequest__Output) => {
        if (!req.pod_sandbox_id) throw invalidArgument('pod_sandbox_id is required');
        const sandbox = await rt.sandboxes.refresh(rt.sandboxes.get(req.pod_sandbox_id));
        if (sandbox.state !== 'SANDBOX_READY') throw failedPrecondition(`pod sandbox ${sandbox.id} is not ready`);
        const ports = req.port ?? [];
        const bad = ports.find((p) => !Number.isInteger(p) || p <= 0 || p > 65535);
        if (bad !== undefined) throw invalidArgument(`port ${bad} is out of range 1..65535`);
        return { url: server.issue({ kind: 'portforward', sandboxId: sandbox.id, ports }) };
      },
    },
  };
}
