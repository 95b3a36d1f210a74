// The pod's /etc/resolv.conf: from the sandbox's DNS config, or the host's file when it has none.
import { invalidArgument } from '../common/errors.js';
import type { DNSConfig } from '../cri/generated/runtime/v1/DNSConfig.js';

function checkEntries(field: string, values: readonly string[]): void {
  for (const value of values) {
    if (value.trim() === '' || /[\s#;]/.test(value)) {
      throw invalidArgument(`dns_config.${field} entry ${JSON.stringify(value)} must be a single non-empty word`);
    }
  }
}

/** Builds resolv.conf content; an absent or empty DNS config means the host's resolv.conf as is. */
export function buildResolvConf(dns: DNSConfig | undefined, hostResolvConf: string): string {
  const servers = dns?.servers ?? [];
  const searches = dns?.searches ?? [];
  const options = dns?.options ?? [];
  if (servers.length === 0 && searches.length === 0 && options.length === 0) {
    return hostResolvConf.endsWith('\n') || hostResolvConf === '' ? hostResolvConf : `${hostResolvConf}\n`;
  }
  checkEntries('servers', servers);
  checkEntries('searches', searches);
  checkEntries('options', options);
  const lines: string[] = [];
  if (searches.length > 0) lines.push(`search ${searches.join(' ')}`);
  for (const server of servers) lines.push(`nameserver ${server}`);
  if (options.length > 0) lines.push(`options ${options.join(' ')}`);
  return lines.join('\n') + '\n';
}
