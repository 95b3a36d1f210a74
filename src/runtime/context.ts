// What the sandbox and container services share: stores, locks, backends per runtime handler, network, images.
import path from 'node:path';
import { RecordStore } from './record-store.js';
import type { SandboxRecord, ContainerRecord } from './records.js';
import { KeyedLock } from '../common/keyed-lock.js';
import { invalidArgument } from '../common/errors.js';
import type { NodeletConfig } from '../config/config.js';
import { RuncBackend } from './runc/backend.js';
import type { CniNetwork } from '../network/cni.js';
import type { ImageService } from '../image/image-service.js';

export interface RuntimeContextOptions {
  config: NodeletConfig;
  network: CniNetwork;
  images: ImageService;
  /** Whether a negative oom_score_adj can be set here (needs CAP_SYS_RESOURCE); clamp to 0 when not. */
  restrictOomScoreAdj: boolean;
  cgroupV2: boolean;
  appArmor: boolean;
}

export class RuntimeContext {
  readonly sandboxes: RecordStore<SandboxRecord>;
  readonly containers: RecordStore<ContainerRecord>;
  /** Serialises operations on one sandbox or container id. */
  readonly locks = new KeyedLock();
  readonly backends = new Map<string, RuncBackend>();
  readonly config: NodeletConfig;
  readonly network: CniNetwork;
  readonly images: ImageService;
  readonly restrictOomScoreAdj: boolean;
  readonly cgroupV2: boolean;
  readonly appArmor: boolean;
  readonly runDir: string;

  constructor(opts: RuntimeContextOptions) {
    this.config = opts.config;
    this.network = opts.network;
    this.images = opts.images;
    this.restrictOomScoreAdj = opts.restrictOomScoreAdj;
    this.cgroupV2 = opts.cgroupV2;
    this.appArmor = opts.appArmor;
    this.runDir = opts.config.runRoot;
    this.sandboxes = new RecordStore(path.join(opts.config.root, 'sandboxes'), 'sandbox.json');
    this.containers = new RecordStore(path.join(opts.config.root, 'containers'), 'container.json');
    for (const [name, handler] of Object.entries(opts.config.runtime.handlers)) {
      this.backends.set(
        name,
        new RuncBackend({
          conmonPath: opts.config.runtime.conmonPath,
          runtimePath: handler.path,
          runtimeRoot: handler.root ?? path.join(this.runDir, 'runtime', name),
          exitDir: path.join(this.runDir, 'exits'),
          socketDir: path.join(this.runDir, 's'),
        }),
      );
    }
  }

  handlerName(requested: string): string {
    const name = requested || this.config.runtime.defaultHandler;
    if (!this.backends.has(name)) {
      throw invalidArgument(`runtime_handler "${requested}" is not configured (known: ${[...this.backends.keys()].join(', ')})`);
    }
    return name;
  }

  backend(handler: string): RuncBackend {
    const b = this.backends.get(handler);
    if (!b) throw invalidArgument(`runtime_handler "${handler}" is not configured`);
    return b;
  }

  containersOf(sandboxId: string): ContainerRecord[] {
    return this.containers.list().filter((c) => c.sandboxId === sandboxId);
  }
}
