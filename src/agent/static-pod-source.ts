// Static pods: pod manifests (YAML or JSON, one pod a file) in a directory, re-read periodically; edits and removals followed.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { errorMessage, hasCode } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { ListWatchHandler } from './list-watch.js';

type PodSourceHandler = ListWatchHandler<V1Pod>;

export const CONFIG_SOURCE_ANNOTATION = 'kubernetes.io/config.source';
export const CONFIG_HASH_ANNOTATION = 'kubernetes.io/config.hash';

/** A manifest → the pod the agent runs: named <name>-<node>, its uid a hash of the manifest and the node. */
export function staticPodFromManifest(text: string, file: string, nodeName: string): V1Pod {
  const doc = parseYaml(text) as V1Pod | null;
  if (!doc || typeof doc !== 'object') throw new Error(`${file}: not a pod manifest`);
  if (doc.kind && doc.kind !== 'Pod') throw new Error(`${file}: kind ${doc.kind}, want Pod`);
  if (!doc.metadata?.name) throw new Error(`${file}: metadata.name is required`);
  if (!doc.spec?.containers?.length) throw new Error(`${file}: spec.containers is required`);
  const hash = createHash('sha256').update(nodeName).update('\0').update(text).digest('hex');
  const uid = `${hash.slice(0, 8)}-${hash.slice(8, 12)}-${hash.slice(12, 16)}-${hash.slice(16, 20)}-${hash.slice(20, 32)}`;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      ...doc.metadata,
      name: `${doc.metadata.name}-${nodeName}`,
      namespace: doc.metadata.namespace ?? 'default',
      uid,
      annotations: { ...(doc.metadata.annotations ?? {}), [CONFIG_SOURCE_ANNOTATION]: 'file', [CONFIG_HASH_ANNOTATION]: hash.slice(0, 32) },
    },
    spec: {
      restartPolicy: 'Always',
      dnsPolicy: 'ClusterFirst',
      terminationGracePeriodSeconds: 30,
      ...doc.spec,
      nodeName,
    },
    status: { phase: 'Pending' },
  };
}

export class StaticPodSource {
  private readonly known = new Map<string, string>(); // uid → file
  private readonly broken = new Map<string, string>(); // file → error shown once
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly dir: string,
    private readonly nodeName: string,
    private readonly handler: PodSourceHandler,
    private readonly pollMs: number,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.scan();
    const tick = async () => {
      if (this.stopped) return;
      await this.scan().catch((err) => this.log.warn({ err: errorMessage(err) }, 'manifest scan failed'));
      if (!this.stopped) this.timer = setTimeout(tick, this.pollMs);
    };
    this.timer = setTimeout(tick, this.pollMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  async scan(): Promise<void> {
    let names: string[] = [];
    try {
      names = await fsp.readdir(this.dir);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
    }
    const current = new Map<string, V1Pod>();
    for (const name of names.sort()) {
      if (name.startsWith('.') || !/\.(ya?ml|json)$/.test(name)) continue;
      const file = path.join(this.dir, name);
      try {
        const text = await fsp.readFile(file, 'utf8');
        const pod = staticPodFromManifest(text, file, this.nodeName);
        current.set(pod.metadata!.uid!, pod);
        this.broken.delete(file);
      } catch (err) {
        if (hasCode(err, 'ENOENT') || hasCode(err, 'EISDIR')) continue;
        if (this.broken.get(file) !== errorMessage(err)) this.log.warn({ file, err: errorMessage(err) }, 'bad pod manifest');
        this.broken.set(file, errorMessage(err));
      }
    }
    for (const uid of [...this.known.keys()]) {
      if (!current.has(uid)) {
        this.known.delete(uid);
        this.handler.remove(uid);
      }
    }
    for (const [uid, pod] of current) {
      if (this.known.has(uid)) continue;
      this.known.set(uid, pod.metadata!.name!);
      this.handler.upsert(pod);
    }
  }
}
