// Objects from the apiserver (the pods bound to this node, the services): list, then watch from the list's
// resourceVersion; resume after a dropped watch at once, re-list after 410 Gone. Our own loop over client-node's
// Watch (no reconnect back-off on a clean close).
import { Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { apiErrorCode, plain } from './kube-client.js';

export interface ListWatchHandler<T> {
  upsert(obj: T): void;
  remove(uid: string): void;
}

export interface ListWatchOptions<T> {
  /** What is listed, for the log ("pods"). */
  what: string;
  /** The collection's path, e.g. /api/v1/pods. */
  path: string;
  fieldSelector?: string;
  list(fieldSelector: string | undefined): Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
}

type WatchEnd = 'closed' | 'gone' | 'failed';

export class ListWatchSource<T extends KubernetesObject> {
  private resourceVersion = '';
  private readonly known = new Set<string>();
  private stopped = false;
  private abort?: AbortController;
  private readonly stopSignal = new AbortController();
  private loopDone?: Promise<void>;

  constructor(
    private readonly config: KubeConfig,
    private readonly opts: ListWatchOptions<T>,
    private readonly handler: ListWatchHandler<T>,
    private readonly log: Logger,
  ) {}

  /**
   * Lists once (so the objects are known right away; an apiserver that can't be reached is retried with back-off until it
   * answers or the source stops), then keeps watching in the background.
   */
  async start(): Promise<void> {
    for (let failures = 0; !this.stopped; ) {
      try {
        await this.relist();
        break;
      } catch (err) {
        failures++;
        this.log.warn({ err: errorMessage(err), code: apiErrorCode(err), failures }, `${this.opts.what} list failed; retrying`);
        await sleep(Math.min(100 * 2 ** failures, 5000), undefined, { signal: this.stopSignal.signal }).catch(() => undefined);
      }
    }
    if (!this.stopped) this.loopDone = this.watchLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopSignal.abort();
    this.abort?.abort();
    await this.loopDone;
  }

  private async relist(): Promise<void> {
    const list = await this.opts.list(this.opts.fieldSelector);
    const items = plain(list.items);
    const seen = new Set<string>();
    for (const obj of items) {
      const uid = obj.metadata!.uid!;
      seen.add(uid);
      this.known.add(uid);
      this.handler.upsert(obj);
    }
    for (const uid of [...this.known]) {
      if (!seen.has(uid)) {
        this.known.delete(uid);
        this.handler.remove(uid);
      }
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    this.log.debug({ items: items.length, resourceVersion: this.resourceVersion }, `listed ${this.opts.what}`);
  }

  private async watchLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const end = await this.watchOnce();
      if (this.stopped) break;
      if (end === 'closed') {
        failures = 0;
        continue;
      }
      if (end === 'failed') {
        failures++;
        // The first retry is immediate; only repeated failures wait, and never long.
        if (failures > 1) await sleep(Math.min(100 * 2 ** failures, 5000), undefined, { signal: this.stopSignal.signal }).catch(() => undefined);
        if (failures < 3) continue;
      }
      try {
        await this.relist();
        failures = 0;
      } catch (err) {
        failures++;
        this.log.warn({ err: errorMessage(err) }, `${this.opts.what} list failed`);
        await sleep(Math.min(100 * 2 ** failures, 5000), undefined, { signal: this.stopSignal.signal }).catch(() => undefined);
      }
    }
  }

  private watchOnce(): Promise<WatchEnd> {
    return new Promise<WatchEnd>((resolve) => {
      let gone = false;
      const watch = new Watch(this.config);
      const onEvent = (type: string, obj: any) => {
        if (type === 'ERROR') {
          if (obj?.code === 410) gone = true;
          else this.log.warn({ status: obj }, 'watch error event');
          return;
        }
        const rv = obj?.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (type === 'BOOKMARK') return;
        const uid = (obj as T).metadata?.uid;
        if (!uid) return;
        if (type === 'DELETED') {
          this.known.delete(uid);
          this.handler.remove(uid);
        } else {
          this.known.add(uid);
          this.handler.upsert(obj as T);
        }
      };
      const onDone = (err: unknown) => {
        if (gone || apiErrorCode(err) === 410) return resolve('gone');
        if (err && !this.stopped) {
          this.log.debug({ err: errorMessage(err) }, `${this.opts.what} watch dropped`);
          return resolve('failed');
        }
        resolve('closed');
      };
      watch
        .watch(
          this.opts.path,
          {
            ...(this.opts.fieldSelector ? { fieldSelector: this.opts.fieldSelector } : {}),
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            // Like client-go's reflector: the server ends each watch after a few minutes.
            timeoutSeconds: 300 + Math.floor(Math.random() * 300),
          },
          onEvent,
          onDone,
        )
        .then((controller) => {
          this.abort = controller;
          if (this.stopped) controller.abort();
        })
        .catch(onDone);
    });
  }
}
