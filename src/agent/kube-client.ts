// The Kubernetes API clients, from a kubeconfig (client certificate or bearer token).
import { CoordinationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';

export interface KubeClients {
  config: KubeConfig;
  core: CoreV1Api;
  coordination: CoordinationV1Api;
}

export function kubeClientsFromFile(kubeconfigPath: string): KubeClients {
  const config = new KubeConfig();
  config.loadFromFile(kubeconfigPath);
  return { config, core: config.makeApiClient(CoreV1Api), coordination: config.makeApiClient(CoordinationV1Api) };
}

/** The HTTP status of a failed API call (ApiException.code, or a watch error's statusCode). */
export function apiErrorCode(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e.code === 'number') return e.code;
  if (typeof e.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** Plain JSON of an API object (client-node hands out Date objects; the watch hands out strings). */
export function plain<T>(obj: T): T {
  return JSON.parse(JSON.stringify(obj)) as T;
}
