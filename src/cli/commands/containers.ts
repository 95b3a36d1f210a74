// Container commands: ps, stop, rm, inspect.
import type { Container__Output } from '../../cri/generated/runtime/v1/Container.js';
import type { ContainerFilter } from '../../cri/generated/runtime/v1/ContainerFilter.js';
import type { ContainerState } from '../../cri/generated/runtime/v1/ContainerState.js';
import { CliError, keyValues, OUTPUT_OPTION, type Command } from '../command.js';
import { renderOutput, withDecodedInfo } from '../output.js';
import { resolveContainerId, resolvePodId } from '../resolve.js';
import { ageOf, formatTable, shortId, stateWord } from '../table.js';
import { nameMatcher } from './pods.js';

export const CONTAINER_HEADERS = ['CONTAINER', 'IMAGE', 'CREATED', 'STATE', 'NAME', 'ATTEMPT', 'POD ID'];

/** The image column: the reference as given, or a short id when it is a digest or image id. */
export function imageColumn(image: string, noTrunc: boolean): string {
  if (/^sha256:[0-9a-f]{64}$/.test(image) || /^[0-9a-f]{64}$/.test(image)) return shortId(image, noTrunc);
  return image;
}

export function containerRows(containers: Container__Output[], noTrunc: boolean, now = Date.now()): string[][] {
  return containers.map((c) => [
    shortId(c.id, noTrunc),
    imageColumn(c.image?.image || c.image_ref, noTrunc),
    ageOf(c.created_at, now),
    stateWord(c.state),
    c.metadata?.name ?? '',
    String(c.metadata?.attempt ?? 0),
    shortId(c.pod_sandbox_id, noTrunc),
  ]);
}

const STATES: Record<string, ContainerState> = {
  created: 'CONTAINER_CREATED',
  running: 'CONTAINER_RUNNING',
  exited: 'CONTAINER_EXITED',
  unknown: 'CONTAINER_UNKNOWN',
};

export const psCommand: Command = {
  name: 'ps',
  summary: 'List containers (running ones unless -a or --state)',
  usage: '',
  options: {
    all: { type: 'boolean', short: 'a', description: 'Show containers in every state' },
    pod: { type: 'string', short: 'p', value: 'POD-ID', description: 'Only containers of this pod (id or prefix)' },
    state: { type: 'string', short: 's', value: 'STATE', description: 'Only containers in this state: created, running, exited or unknown' },
    label: { type: 'string', multiple: true, value: 'K=V', description: 'Only containers with this label' },
    name: { type: 'string', value: 'REGEXP', description: 'Only containers whose name matches' },
    id: { type: 'string', value: 'ID', description: 'Only containers whose id starts with ID' },
    output: OUTPUT_OPTION,
    quiet: { type: 'boolean', short: 'q', description: 'Only show container ids' },
    'no-trunc': { type: 'boolean', description: 'Show full ids' },
  },
  async run(ctx, args) {
    args.expectPositionals(0, 0);
    const format = args.output();
    const client = ctx.client();
    const filter: ContainerFilter = {};
    const state = args.choice('state', Object.keys(STATES));
    if (state) filter.state = { state: STATES[state]! };
    else if (!args.flag('all')) filter.state = { state: 'CONTAINER_RUNNING' };
    const pod = args.string('pod');
    if (pod) filter.pod_sandbox_id = await resolvePodId(client, pod);
    const labels = keyValues(args.list('label'), '--label', 'ps');
    if (Object.keys(labels).length > 0) filter.label_selector = labels;
    const nameOk = nameMatcher(args.string('name'), 'ps');
    const idPrefix = args.string('id') ?? '';
    const res = await client.runtime('ListContainers', { filter });
    const containers = res.containers
      .filter((c) => c.id.startsWith(idPrefix) && nameOk(c.metadata?.name ?? ''))
      .sort((a, b) => Number(b.created_at) - Number(a.created_at));
    if (args.flag('quiet')) {
      ctx.stdout.write(containers.map((c) => c.id + '\n').join(''));
      return;
    }
    const noTrunc = args.flag('no-trunc');
    ctx.stdout.write(renderOutput(format, { containers }, () => formatTable(CONTAINER_HEADERS, containerRows(containers, noTrunc))));
  },
};

export const stopCommand: Command = {
  name: 'stop',
  summary: 'Stop containers',
  usage: 'ID [ID...]',
  options: {
    timeout: { type: 'string', short: 't', value: 'SECONDS', description: 'Seconds to wait after SIGTERM before SIGKILL (default 10)' },
  },
  async run(ctx, args) {
    const client = ctx.client();
    const timeout = args.int('timeout') ?? 10;
    for (const wanted of args.expectPositionals(1)) {
      const id = await resolveContainerId(client, wanted);
      await client.runtime('StopContainer', { container_id: id, timeout });
      ctx.stdout.write(`${id}\n`);
    }
  },
};

export const rmCommand: Command = {
  name: 'rm',
  summary: 'Remove containers',
  usage: 'ID [ID...]',
  options: {
    force: { type: 'boolean', short: 'f', description: 'Stop running containers before removing them' },
    all: { type: 'boolean', short: 'a', description: 'Remove all containers' },
  },
  async run(ctx, args) {
    const client = ctx.client();
    const ids = args.flag('all')
      ? (await client.runtime('ListContainers', {})).containers.map((c) => c.id)
      : await Promise.all(args.expectPositionals(1).map((w) => resolveContainerId(client, w)));
    for (const id of ids) {
      const { status } = await client.runtime('ContainerStatus', { container_id: id });
      if (status?.state === 'CONTAINER_RUNNING') {
        if (!args.flag('force')) throw new CliError(`container ${id} is running: stop it first or use -f`);
        await client.runtime('StopContainer', { container_id: id, timeout: 0 });
      }
      await client.runtime('RemoveContainer', { container_id: id });
      ctx.stdout.write(`${id}\n`);
    }
  },
};

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'Show the status of containers (verbose ContainerStatus)',
  usage: 'ID [ID...]',
  options: { output: { ...OUTPUT_OPTION, description: 'Output format: json (default) or yaml' } },
  async run(ctx, args) {
    const format = args.output() === 'yaml' ? 'yaml' : 'json';
    const client = ctx.client();
    for (const wanted of args.expectPositionals(1)) {
      const id = await resolveContainerId(client, wanted);
      const res = await client.runtime('ContainerStatus', { container_id: id, verbose: true });
      const decoded = withDecodedInfo(res);
      ctx.stdout.write(renderOutput(format, { status: decoded.status, info: decoded.info }, () => ''));
    }
  },
};
