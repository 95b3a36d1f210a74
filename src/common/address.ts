// HOST:PORT listen addresses (streaming server, metrics endpoint, kubelet API): `[::1]:10010`,
// `127.0.0.1:0`, `:10250` (all interfaces).
import type { Server } from 'node:net';
import { invalidArgument } from './errors.js';

export function parseHostPort(address: string, what = 'address'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(address.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw invalidArgument(`${what} ${JSON.stringify(address)} is not HOST:PORT`);
  return { host: m[1] ?? m[2] ?? '', port };
}

/** Starts listening and resolves once bound; a bind error (port taken) rejects instead of crashing. */
export function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host || undefined, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
