// GetContainerEvents: a server stream of lifecycle events, one subscription per client.
import type { ServiceHandlers } from './server.js';
import type { RuntimeService } from '../runtime/runtime-service.js';
import { sandboxStatusMessage, containerStatusMessage } from './runtime-handlers.js';
import { NodeletError } from '../common/errors.js';

export function eventHandlers(rt: RuntimeService): ServiceHandlers {
  return {
    unary: {},
    stream: {
      GetContainerEvents: async (_req, write, ctx) => {
        const sub = rt.ctx.events.subscribe();
        const onAbort = () => sub.close();
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        try {
          for (;;) {
            const ev = await sub.next();
            if (!ev) break;
            // A slow client makes this wait for drain while our bounded queue fills and cuts it off.
            await write({
              container_id: ev.containerId,
              container_event_type: ev.type,
              created_at: ev.createdAt,
              pod_sandbox_status: ev.sandbox ? sandboxStatusMessage(ev.sandbox) : null,
              containers_statuses: ev.containers.map(containerStatusMessage),
            });
          }
          if (sub.overflowed) throw new NodeletError('ResourceExhausted', 'event subscriber fell too far behind; reconnect and relist');
        } finally {
          ctx.signal.removeEventListener('abort', onAbort);
          sub.close();
        }
      },
    },
  };
}
