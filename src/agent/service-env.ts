// The Docker-link style environment the kubelet gives every container: for the `kubernetes` Service of the
// `default` namespace always, and for each Service of the pod's own namespace when spec.enableServiceLinks
// (default true) — NAME_SERVICE_HOST, NAME_SERVICE_PORT[_PORTNAME], NAME_PORT, NAME_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR].
// Pure; the services come from ServiceStore.
import type { V1Service } from '@kubernetes/client-node';
import type { ListWatchHandler } from './list-watch.js';

const MASTER_NAMESPACE = 'default';
const MASTER_SERVICES = new Set(['kubernetes']);

function envName(name: string): string {
  return name.toUpperCase().replace(/-/g, '_');
}

function hasClusterIp(svc: V1Service): boolean {
  const ip = svc.spec?.clusterIP;
  return Boolean(ip) && ip !== 'None' && (svc.spec?.ports?.length ?? 0) > 0;
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function addServiceVars(env: Map<string, string>, svc: V1Service): void {
  const prefix = envName(svc.metadata!.name!);
  const ip = svc.spec!.clusterIP!;
  const ports = svc.spec!.ports!;
  env.set(`${prefix}_SERVICE_HOST`, ip);
  env.set(`${prefix}_SERVICE_PORT`, String(ports[0]!.port));
  for (const p of ports) if (p.name) env.set(`${prefix}_SERVICE_PORT_${envName(p.name)}`, String(p.port));
  ports.forEach((p, i) => {
    const protocol = p.protocol || 'TCP';
    const url = `${protocol.toLowerCase()}://${hostPort(ip, p.port)}`;
    if (i === 0) env.set(`${prefix}_PORT`, url);
    const portPrefix = `${prefix}_PORT_${p.port}_${protocol.toUpperCase()}`;
    env.set(portPrefix, url);
    env.set(`${portPrefix}_PROTO`, protocol.toLowerCase());
    env.set(`${portPrefix}_PORT`, String(p.port));
    env.set(`${portPrefix}_ADDR`, ip);
  });
}

/** The service variables of a pod in `namespace`; a Service of the pod's namespace wins over a master one of its name. */
export function serviceEnv(services: Iterable<V1Service>, namespace: string, enableServiceLinks: boolean | undefined): Map<string, string> {
  const chosen = new Map<string, V1Service>();
  for (const svc of services) {
    if (!hasClusterIp(svc)) continue;
    const name = svc.metadata!.name!;
    const ns = svc.metadata!.namespace;
    if (ns === namespace && (enableServiceLinks ?? true)) chosen.set(name, svc);
    else if (ns === MASTER_NAMESPACE && MASTER_SERVICES.has(name) && !chosen.has(name)) chosen.set(name, svc);
  }
  const env = new Map<string, string>();
  for (const name of [...chosen.keys()].sort()) addServiceVars(env, chosen.get(name)!);
  return env;
}

/** The cluster's Services as the list-watch last showed them. */
export class ServiceStore implements ListWatchHandler<V1Service> {
  private readonly byUid = new Map<string, V1Service>();

  upsert(svc: V1Service): void {
    this.byUid.set(svc.metadata!.uid!, svc);
  }

  remove(uid: string): void {
    this.byUid.delete(uid);
  }

  all(): Iterable<V1Service> {
    return this.byUid.values();
  }
}
