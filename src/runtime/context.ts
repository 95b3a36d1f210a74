// What the sandbox and container services share: stores, locks, backends per runtime handler, network, images.
import path from 'node:path';
import { RecordStore } from './record-store.js';
import { EventBus, type ContainerEventType, type RuntimeEvent } from './events.js';
import type { SandboxRecord, ContainerRecord } from './records.js';
import { nowNs } from './records.js';
import { KeyedLock } from '../common/keyed-lock.js';
import { errorMessage, failedPrecondition, invalidArgument } from '../common/errors.js';
import { logger } from '../common/log.js';
import type { NodeletConfig } from '../config/config.js';
import type { BackendFactory, RuntimeBackend } from './backend.js';
import { builtInBackendFactory } from './backends.js';
import type { CniNetwork } from '../network/cni.js';
import type { ImageService } from '../image/image-service.js';
import { readFileSync } from 'node:fs';
import { capabilitiesFromMask } from '../oci/capabilities.js';
import { rlimitsWithin } from '../oci/defaults.js';
import type { OciRlimit } from '../oci/types.js';
import { NameRegistrar } from './name-registrar.js';
import type { HostLimits } from './validation.js';
import { readHostLimits } from './host-limits.js';

export interface RuntimeContextOptions {
  config: NodeletConfig;
  network: CniNetwork;
  images: ImageService;
  /** Whether a negative oom_score_adj can be set here (needs CAP_SYS_RESOURCE); clamp to 0 when not. */
  restrictOomScoreAdj: boolean;
  cgroupV2: boolean;
  /** Whether the host has a hugetlb cgroup controller; without it hugepage limits are dropped. */
  hugetlbController: boolean;
  appArmor: boolean;
  /** Builds each handler's backend by its type (default: the backends built in). */
  backendFactory?: BackendFactory;
}

export class RuntimeContext {
  readonly sandboxes: RecordStore<SandboxRecord>;
  readonly containers: RecordStore<ContainerRecord>;
  /** Sandbox and container names, reserved before a creation's first await. */
  readonly sandboxNames = new NameRegistrar();
  readonly containerNames = new NameRegistrar();
  /** CPUs, memory nodes and sysctls requests may name. */
  readonly hostLimits: HostLimits = readHostLimits();
  /** Serialises operations on one sandbox or container id. */
  readonly locks = new KeyedLock();
  readonly events = new EventBus();
  /** Every configured handler's backend, built by checkHandlers at start. */
  readonly backends = new Map<string, RuntimeBackend>();
  private readonly backendFactory: BackendFactory;
  /** Handlers whose runtime failed the start-up check, with why (their records can still be cleaned up). */
  readonly unusableHandlers = new Map<string, string>();
  /** Handlers whose backend could not be built, with why (checkHandlers makes them unusable ones). */
  private readonly unbuildableHandlers = new Map<string, string>();
  readonly config: NodeletConfig;
  readonly network: CniNetwork;
  readonly images: ImageService;
  readonly restrictOomScoreAdj: boolean;
  readonly cgroupV2: boolean;
  readonly hugetlbController: boolean;
  readonly appArmor: boolean;
  readonly runDir: string;
  /** What privileged / ADD ALL can grant: the daemon's own effective capabilities. */
  readonly availableCapabilities: string[];
  /** Container rlimits stay within the daemon's hard limits (raising them needs CAP_SYS_RESOURCE). */
  readonly rlimits: OciRlimit[];

  constructor(opts: RuntimeContextOptions) {
    this.config = opts.config;
    this.network = opts.network;
    this.images = opts.images;
    this.restrictOomScoreAdj = opts.restrictOomScoreAdj;
    this.cgroupV2 = opts.cgroupV2;
    this.hugetlbController = opts.hugetlbController;
    this.appArmor = opts.appArmor;
    this.runDir = opts.config.runRoot;
    this.availableCapabilities = capabilitiesFromMask(procStatusField('CapEff') ?? '0');
    this.rlimits = rlimitsWithin(hardNofileLimit());
    this.sandboxes = new RecordStore(path.join(opts.config.root, 'sandboxes'), 'sandbox.json');
    this.containers = new RecordStore(path.join(opts.config.root, 'containers'), 'container.json');
    this.backendFactory = opts.backendFactory ?? builtInBackendFactory();
  }

  /** Builds every handler's backend (a backend's module loads here, only when a handler uses it). */
  private async buildBackends(): Promise<void> {
    for (const [name, handler] of Object.entries(this.config.runtime.handlers)) {
      try {
        this.backends.set(name, await this.backendFactory.create({ name, handler, config: this.config }));
      } catch (err) {
        // No backend of this type in this build: refused like a handler whose runtime is missing.
        this.unbuildableHandlers.set(name, errorMessage(err));
      }
    }
  }
  handlerName(requested: string): string {
    const name = requested || this.config.runtime.defaultHandler;
    if (!this.backends.has(name) && !this.unbuildableHandlers.has(name)) {
      throw invalidArgument(`runtime_handler "${requested}" is not configured (known: ${[...this.backends.keys(), ...this.unbuildableHandlers.keys()].join(', ')})`);
    }
    const unusable = this.unusableHandlers.get(name);
    if (unusable) throw failedPrecondition(`runtime_handler "${name}" is not usable: ${unusable}`);
    return name;
  }

  /** Handlers that passed the start-up check (what RuntimeStatus lists). */
  usableHandlers(): string[] {
    return [...this.backends.keys()].filter((name) => !this.unusableHandlers.has(name));
  }

  /**
   * Start-up check of every handler's runtime binary, as CRI-O does: a broken default handler stops the
   * daemon from starting; any other broken handler is left out (with a warning) and its pods are refused up front.
   */
  async checkHandlers(): Promise<void> {
    await this.buildBackends();
    const log = logger({ component: 'runtime-handlers' });
    for (const [name, problem] of this.unbuildableHandlers) this.unusableHandlers.set(name, problem);
    await Promise.all(
      [...this.backends].map(async ([name, backend]) => {
        const problem = await backend.check();
        if (problem) this.unusableHandlers.set(name, problem);
      }),
    );
    const defaultProblem = this.unusableHandlers.get(this.config.runtime.defaultHandler);
    if (defaultProblem) throw failedPrecondition(`default runtime handler "${this.config.runtime.defaultHandler}" is not usable: ${defaultProblem}`);
    for (const [name, problem] of this.unusableHandlers) log.warn({ handler: name, problem }, 'runtime handler is not usable; its pods will be refused');
  }

  backend(handler: string): RuntimeBackend {
    const b = this.backends.get(handler);
    if (!b) throw invalidArgument(`runtime_handler "${handler}" is not configured`);
    return b;
  }

  /** Events of the start-up recovery, kept until a subscriber can have connected (see releaseEvents). */
  private held?: RuntimeEvent[];

  holdEvents(): void {
    this.held = [];
  }

  /** Publishes what recovery found (exits while the daemon was down) and stops holding. */
  releaseEvents(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const ev of held) this.events.publish(ev);
  }

  /** Publishes a lifecycle event with snapshots of the sandbox and its containers as they are now. */
  emit(type: ContainerEventType, id: string, sandboxId: string): void {
    if (this.events.subscriberCount === 0 && !this.held) return;
    const sandbox = this.sandboxes.get(sandboxId);
    const ev: RuntimeEvent = {
      containerId: id,
      type,
      createdAt: nowNs(),
      sandbox: sandbox ? structuredClone(sandbox) : undefined,
      containers: this.containersOf(sandboxId).filter((c) => c.phase === 'ready').map((c) => structuredClone(c)),
    };
    if (this.held) this.held.push(ev);
    else this.events.publish(ev);
  }

  containersOf(sandboxId: string): ContainerRecord[] {
    return this.containers.list().filter((c) => c.sandboxId === sandboxId);
  }
}

function procStatusField(name: string): string | undefined {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  return line?.split(/\s+/)[1];
}

function hardNofileLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  return hard && /^\d+$/.test(hard) ? Number(hard) : 1_048_576;
}
