// Named network namespaces for pod sandboxes (bind mounts under /run/netns, made by `ip netns`).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { run } from '../common/exec.js';
import { alreadyExists, internal, invalidArgument } from '../common/errors.js';
import { pathExists } from '../common/fsutil.js';

export const NETNS_DIR = '/run/netns';

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const NETNS_TIMEOUT_MS = 30_000;

/** The namespace name of a sandbox: unique per sandbox id, at most 64 characters. */
export function netnsNameForSandbox(sandboxId: string): string {
  const safe = sandboxId.replace(/[^A-Za-z0-9_.-]/g, '_');
  return `nodelet-${safe.slice(0, 56)}`;
}

export function netnsPathForName(name: string): string {
  return path.join(NETNS_DIR, name);
}

function validateName(name: string): void {
  if (!NETNS_NAME.test(name)) {
    throw invalidArgument(`network namespace name ${JSON.stringify(name)} must be 1-64 characters of [A-Za-z0-9_.-]`);
  }
}

/** Creates /run/netns/<name> and returns its path. */
export async function createNetns(name: string): Promise<string> {
  validateName(name);
  const nsPath = netnsPathForName(name);
  if (await pathExists(nsPath)) throw alreadyExists(`network namespace ${name} already exists`);
  await run('ip', ['netns', 'add', name], { timeoutMs: NETNS_TIMEOUT_MS });
  return nsPath;
}

/** Removes a namespace made by createNetns; a missing one is not an error. */
export async function removeNetns(nsPath: string): Promise<void> {
  if (!(await pathExists(nsPath))) return;
  const name = path.basename(nsPath);
  const res =
    path.dirname(nsPath) === NETNS_DIR && NETNS_NAME.test(name)
      ? await run('ip', ['netns', 'delete', name], { timeoutMs: NETNS_TIMEOUT_MS, reject: false })
      : await run('umount', [nsPath], { timeoutMs: NETNS_TIMEOUT_MS, reject: false });
  if (res.exitCode !== 0 || (await pathExists(nsPath))) {
    // Not mounted any more (or never was): the file alone is left.
    await fsp.rm(nsPath, { force: true }).catch(() => undefined);
  }
  if (await pathExists(nsPath)) throw internal(`removing network namespace ${nsPath} failed: ${res.stderr.trim()}`);
}

export async function netnsExists(nsPath: string): Promise<boolean> {
  return pathExists(nsPath);
}

export interface InterfaceStats {
  name: string;
  rxBytes: number;
  rxPackets: number;
  rxErrors: number;
  rxDropped: number;
  txBytes: number;
  txPackets: number;
  txErrors: number;
  txDropped: number;
}

/** Parses the text of /proc/net/dev into per-interface counters. */
export function parseProcNetDev(text: string): InterfaceStats[] {
  const stats: InterfaceStats[] = [];
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const fields = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    if (!name || fields.length < 16 || fields.some((n) => Number.isNaN(n))) continue;
    stats.push({
      name,
      rxBytes: fields[0]!,
      rxPackets: fields[1]!,
      rxErrors: fields[2]!,
      rxDropped: fields[3]!,
      txBytes: fields[8]!,
      txPackets: fields[9]!,
      txErrors: fields[10]!,
      txDropped: fields[11]!,
    });
  }
  return stats;
}

/** Counters of one interface inside the namespace (eth0 by default); undefined when it has none. */
export async function netnsStats(nsPath: string, ifName = 'eth0'): Promise<InterfaceStats | undefined> {
  // /proc/net/dev shows the namespace of the reading process, so read it from inside.
  const res = await run('nsenter', [`--net=${nsPath}`, 'cat', '/proc/net/dev'], { timeoutMs: NETNS_TIMEOUT_MS });
  return parseProcNetDev(res.stdout).find((s) => s.name === ifName);
}
