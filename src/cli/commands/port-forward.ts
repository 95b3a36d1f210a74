// `nodelet port-forward`: listens on local ports and forwards each connection to a port in a pod
// through the runtime's streaming server, until SIGINT or SIGTERM.
import { listenPortForward } from '../../streaming/client.js';
import { CliError, UsageError, type Command } from '../command.js';
import { resolvePodId } from '../resolve.js';
import { FAMILY_OPTION, streamFamily } from './exec.js';

export interface PortMapping {
  /** 0 picks a free port. */
  localPort: number;
  remotePort: number;
}

function portNumber(text: string, what: string, allowZero: boolean): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n > 65535 || n < (allowZero ? 0 : 1)) throw new UsageError(`${what} port "${text}" is not a port number`, 'port-forward');
  return n;
}

/** "8080" (same port locally), "9000:80", ":80" or "0:80" (any free local port). */
export function parsePortMapping(spec: string): PortMapping {
  const parts = spec.split(':');
  if (parts.length > 2) throw new UsageError(`port mapping "${spec}" must be [LOCAL:]REMOTE`, 'port-forward');
  const remotePort = portNumber(parts[parts.length - 1]!, 'remote', false);
  if (parts.length === 1) return { localPort: remotePort, remotePort };
  return { localPort: parts[0] === '' ? 0 : portNumber(parts[0]!, 'local', true), remotePort };
}

export const portForwardCommand: Command = {
  name: 'port-forward',
  summary: 'Forward local ports to ports in a pod',
  usage: 'POD_ID [LOCAL:]REMOTE [...]',
  options: {
    address: { type: 'string', value: 'ADDR', description: 'Local address to listen on (default 127.0.0.1)' },
    family: FAMILY_OPTION,
  },
  async run(ctx, args) {
    const [wanted, ...specs] = args.expectPositionals(2);
    const mappings = specs.map(parsePortMapping);
    const family = streamFamily(args);
    const address = args.string('address') ?? '127.0.0.1';
    const client = ctx.client();
    const podId = await resolvePodId(client, wanted!);
    const getUrl = (remotePort: number) => async (): Promise<string> => {
      const { url } = await client.runtime('PortForward', { pod_sandbox_id: podId, port: [remotePort] });
      return url;
    };
    // Checks the pod and the runtime before listening, so a wrong id fails at once.
    await getUrl(mappings[0]!.remotePort)();
    const listeners: { close(): Promise<void> }[] = [];
    let stop: () => void = () => undefined;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      for (const m of mappings) {
        let localPort = m.localPort;
        const listener = await listenPortForward({
          localPort: m.localPort,
          localHost: address,
          remotePort: m.remotePort,
          family,
          getUrl: getUrl(m.remotePort),
          onError: (message) => ctx.stderr.write(`nodelet: error forwarding ${address}:${localPort} -> ${m.remotePort}: ${message}\n`),
        }).catch((err: NodeJS.ErrnoException) => {
          throw new CliError(`cannot listen on ${address}:${m.localPort}: ${err.code ?? err.message}`);
        });
        listeners.push(listener);
        localPort = listener.port;
        ctx.stdout.write(`Forwarding from ${address}:${listener.port} -> ${m.remotePort}\n`);
      }
      await stopped;
    } finally {
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      await Promise.all(listeners.map((l) => l.close()));
    }
  },
};
