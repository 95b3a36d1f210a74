// The Kubernetes API clients, from a kubeconfig (client certificate or bearer token). Every request body goes
// through normalizeWireTimes on its way out, so no caller has to think about the apiserver's time formats.
import {
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  ServerConfiguration,
  createConfiguration,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import { normalizeWireTimesInJson } from './api-time.js';

export interface KubeClients {
  config: KubeConfig;
  core: CoreV1Api;
  coordination: CoordinationV1Api;
}

const wireTimes = {
  async pre(context: RequestContext): Promise<RequestContext> {
    const body = context.getBody();
    if (typeof body === 'string' && body) context.setBody(normalizeWireTimesInJson(body));
    return context;
  },
  async post(context: ResponseContext): Promise<ResponseContext> {
    return context;
  },
};

/** Like KubeConfig.makeApiClient, with the agent's request middleware. */
export function makeApiClient<T>(config: KubeConfig, api: new (configuration: ReturnType<typeof createConfiguration>) => T): T {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  return new api(
    createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: config },
      promiseMiddleware: [wireTimes],
    }),
  );
}

export function kubeClientsFromFile(kubeconfigPath: string): KubeClients {
  const config = new KubeConfig();
  config.loadFromFile(kubeconfigPath);
  return { config, core: makeApiClient(config, CoreV1Api), coordination: makeApiClient(config, CoordinationV1Api) };
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
