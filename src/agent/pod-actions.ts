// What to do with a running pod's containers (the kubelet's computePodActions): init containers, sidecars, app containers. Pure.
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { ContainerKind } from './pod-spec.js';
import type { ObservedContainer } from './pod-status.js';
import { isSidecar } from './qos.js';

export interface StartAction {
  spec: V1Container;
  kind: ContainerKind;
  /** The exited container this one replaces: a restart, subject to back-off. Absent: a first start. */
  previous?: ObservedContainer;
}

export interface KillAction {
  spec: V1Container;
  containerId: string;
}

export interface PodActions {
  /** In order; the worker stops at the first it cannot do now. */
  start: StartAction[];
  /** Sidecars to stop because the pod's app containers are done (or an init container failed for good): last started first. */
  killSidecars: KillAction[];
  /** Containers running, or exited for good: no waiting reason. */
  settled: string[];
  /** Every regular init container succeeded and every sidecar started: the app containers may run. */
  initialized: boolean;
}

export interface ActionsContext {
  /** started and ready of a running container from its probes (no probe: both true). */
  probed(spec: V1Container, containerId: string): { ready: boolean; started: boolean };
}

/** A running sidecar lets the next init container start once it has started, and is ready (when it has a readiness probe). */
function sidecarUp(spec: V1Container, cur: ObservedContainer, ctx: ActionsContext): boolean {
  if (cur.state !== 'CONTAINER_RUNNING') return false;
  const p = ctx.probed(spec, cur.id);
  return p.started && (!spec.readinessProbe || p.ready);
}

export function computePodActions(pod: V1Pod, byName: Map<string, ObservedContainer[]>, ctx: ActionsContext): PodActions {
  const spec = pod.spec!;
  const restartPolicy = spec.restartPolicy ?? 'Always';
  const actions: PodActions = { start: [], killSidecars: [], settled: [], initialized: false };
  const inits = spec.initContainers ?? [];
  const sidecars = inits.filter(isSidecar);
  // Once an app container was created the pod is past initialization: a sidecar exiting later does not send it back.
  const appStarted = spec.containers.some((c) => (byName.get(c.name) ?? []).length > 0);

  // App containers done for good (exited, no restart due): the pod is finishing.
  const appDone = spec.containers.every((c) => {
    const [cur] = byName.get(c.name) ?? [];
    return cur?.state === 'CONTAINER_EXITED' && !shouldRestart(restartPolicy, cur);
  });
  let initFailed = false;
  let initialized = true;
  for (const c of inits) {
    const [cur] = byName.get(c.name) ?? [];
    if (isSidecar(c)) {
      if (!cur || cur.state === 'CONTAINER_EXITED') {
        // A sidecar (re)starts whatever the pod's restartPolicy, until the app containers are done.
        if (!(appStarted && appDone)) actions.start.push({ spec: c, kind: 'init', ...(cur ? { previous: cur } : {}) });
        if (!appStarted) {
          initialized = false;
          break;
        }
        continue;
      }
      actions.settled.push(c.name);
      if (!appStarted && !sidecarUp(c, cur, ctx)) {
        initialized = false;
        break;
      }
      continue;
    }
    if (appStarted) continue; // regular init containers ran before the app containers
    if (!cur) {
      actions.start.push({ spec: c, kind: 'init' });
      initialized = false;
      break;
    }
    if (cur.state !== 'CONTAINER_EXITED') {
      initialized = false;
      break;
    }
    if (cur.exitCode === 0) continue;
    initialized = false;
    if (restartPolicy !== 'Never') actions.start.push({ spec: c, kind: 'init', previous: cur });
    else {
      initFailed = true;
      actions.settled.push(c.name);
    }
    break;
  }
  actions.initialized = initialized;

  if (initialized) {
    for (const c of spec.containers) {
      const [cur] = byName.get(c.name) ?? [];
      if (!cur) actions.start.push({ spec: c, kind: 'app' });
      else if (cur.state === 'CONTAINER_EXITED') {
        if (shouldRestart(restartPolicy, cur)) actions.start.push({ spec: c, kind: 'app', previous: cur });
        else actions.settled.push(c.name);
      } else if (cur.state === 'CONTAINER_RUNNING') actions.settled.push(c.name);
    }
  }

  // Ephemeral containers start once, whatever the pod's initialization, and are never restarted.
  for (const e of spec.ephemeralContainers ?? []) {
    const [cur] = byName.get(e.name) ?? [];
    if (!cur) actions.start.push({ spec: e as V1Container, kind: 'ephemeral' });
    else if (cur.state !== 'CONTAINER_CREATED') actions.settled.push(e.name);
  }

  if ((initialized && appDone) || initFailed) {
    for (const c of [...sidecars].reverse()) {
      const [cur] = byName.get(c.name) ?? [];
      if (cur && (cur.state === 'CONTAINER_RUNNING' || cur.state === 'CONTAINER_CREATED')) actions.killSidecars.push({ spec: c, containerId: cur.id });
    }
  }
  return actions;
}

function shouldRestart(restartPolicy: string, cur: ObservedContainer): boolean {
  return restartPolicy === 'Always' || (restartPolicy === 'OnFailure' && cur.exitCode !== 0);
}

/** Termination order: app (and regular init) containers together first, then the sidecars one by one, last started first. */
export function terminationOrder<T extends { name: string }>(pod: V1Pod, running: T[]): T[][] {
  const sidecarNames = (pod.spec?.initContainers ?? []).filter(isSidecar).map((c) => c.name);
  const first = running.filter((c) => !sidecarNames.includes(c.name));
  const waves: T[][] = first.length ? [first] : [];
  for (const name of [...sidecarNames].reverse()) {
    const wave = running.filter((c) => c.name === name);
    if (wave.length) waves.push(wave);
  }
  return waves;
}
