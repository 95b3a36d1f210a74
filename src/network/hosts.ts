// The pod's /etc/hosts: localhost entries, the pod's own addresses, and extra entries.
import net from 'node:net';
import { invalidArgument } from '../common/errors.js';

export interface HostAlias {
  ip: string;
  hostnames: string[];
}

const LOCAL_LINES = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::0\tip6-localnet',
  'fe00::0\tip6-mcastprefix',
  'fe00::1\tip6-allnodes',
  'fe00::2\tip6-allrouters',
];

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/;

function checkHostname(field: string, name: string): void {
  if (name.length > 253 || !HOSTNAME.test(name)) throw invalidArgument(`${field} ${JSON.stringify(name)} is not a valid host name`);
}

export function buildHostsFile(hostname: string, podIps: readonly string[], extraHosts: readonly HostAlias[] = []): string {
  const lines = ['# Kubernetes-managed hosts file (written by nodelet).', ...LOCAL_LINES];
  if (hostname !== '') checkHostname('hostname', hostname);
  for (const ip of podIps) {
    if (net.isIP(ip) === 0) throw invalidArgument(`pod IP ${JSON.stringify(ip)} is not an IP address`);
    if (hostname !== '') lines.push(`${ip}\t${hostname}`);
  }
  if (extraHosts.length > 0) {
    lines.push('', '# Entries added by HostAliases.');
    for (const alias of extraHosts) {
      if (net.isIP(alias.ip) === 0) throw invalidArgument(`host alias IP ${JSON.stringify(alias.ip)} is not an IP address`);
      if (alias.hostnames.length === 0) continue;
      for (const name of alias.hostnames) checkHostname('host alias name', name);
      lines.push(`${alias.ip}\t${alias.hostnames.join('\t')}`);
    }
  }
  return lines.join('\n') + '\n';
}
