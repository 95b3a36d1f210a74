// Pod sandbox commands: pods, stopp, rmp, inspectp.
import type { PodSandbox__Output } from '../../cri/generated/runtime/v1/PodSandbox.js';
import type { PodSandboxFilter } from '../../cri/generated/runtime/v1/PodSandboxFilter.js';
import { CliError, keyValues, OUTPUT_OPTION, UsageError, type Command } from '../command.js';
import { renderOutput, withDecodedInfo } from '../output.js';
import { resolvePodId } from '../resolve.js';
import { ageOf, formatTable, shortId, stateWord } from '../table.js';

export const POD_HEADERS = ['POD ID', 'CREATED', 'STATE', 'NAME', 'NAMESPACE', 'ATTEMPT', 'RUNTIME'];

export function podRows(pods: PodSandbox__Output[], noTrunc: boolean, now = Date.now()): string[][] {
  return pods.map((p) => [
    shortId(p.id, noTrunc),
    ageOf(p.created_at, now),
    stateWord(p.state),
    p.metadata?.name ?? '',
    p.metadata?.namespace ?? '',
    String(p.metadata?.attempt ?? 0),
    p.runtime_handler || '(default)',
  ]);
}

/** A --name value as a regular expression (like crictl), reported as a usage error when invalid. */
export function nameMatcher(pattern: string | undefined, command: string): (name: string) => boolean {
  if (!pattern) return () => true;
  try {
    const re = new RegExp(pattern);
    return (name) => re.test(name);
  } catch {
    throw new UsageError(`--name is not a valid regular expression: ${pattern}`, command);
  }
}

export const podsCommand: Command = {
  name: 'pods',
  summary: 'List pod sandboxes',
  usage: '',
  options: {
    name: { type: 'string', value: 'REGEXP', description: 'Only pods whose name matches' },
    namespace: { type: 'string', value: 'REGEXP', description: 'Only pods whose namespace matches' },
    id: { type: 'string', value: 'ID', description: 'Only pods whose id starts with ID' },
    state: { type: 'string', short: 's', value: 'STATE', description: 'Only pods in this state: ready or notready' },
    label: { type: 'string', multiple: true, value: 'K=V', description: 'Only pods with this label' },
    output: OUTPUT_OPTION,
    quiet: { type: 'boolean', short: 'q', description: 'Only show pod ids' },
    'no-trunc': { type: 'boolean', description: 'Show full ids' },
  },
  async run(ctx, args) {
    args.expectPositionals(0, 0);
    const format = args.output();
    const filter: PodSandboxFilter = {};
    const state = args.choice('state', ['ready', 'notready'] as const);
    if (state) filter.state = { state: state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY' };
    const labels = keyValues(args.list('label'), '--label', 'pods');
    if (Object.keys(labels).length > 0) filter.label_selector = labels;
    const nameOk = nameMatcher(args.string('name'), 'pods');
    const namespaceOk = nameMatcher(args.string('namespace'), 'pods');
    const idPrefix = args.string('id') ?? '';
    const res = await ctx.client().runtime('ListPodSandbox', Object.keys(filter).length > 0 ? { filter } : {});
    const items = res.items
      .filter((p) => p.id.startsWith(idPrefix) && nameOk(p.metadata?.name ?? '') && namespaceOk(p.metadata?.namespace ?? ''))
      .sort((a, b) => Number(b.created_at) - Number(a.created_at));
    if (args.flag('quiet')) {
      ctx.stdout.write(items.map((p) => p.id + '\n').join(''));
      return;
    }
    const noTrunc = args.flag('no-trunc');
    ctx.stdout.write(renderOutput(format, { items }, () => formatTable(POD_HEADERS, podRows(items, noTrunc))));
  },
};

export const stoppCommand: Command = {
  name: 'stopp',
  summary: 'Stop pod sandboxes (and their containers)',
  usage: 'POD-ID [POD-ID...]',
  options: {},
  async run(ctx, args) {
    const client = ctx.client();
    for (const wanted of args.expectPositionals(1)) {
      const id = await resolvePodId(client, wanted);
      await client.runtime('StopPodSandbox', { pod_sandbox_id: id });
      ctx.stdout.write(`Stopped sandbox ${id}\n`);
    }
  },
};

export const rmpCommand: Command = {
  name: 'rmp',
  summary: 'Remove pod sandboxes',
  usage: 'POD-ID [POD-ID...]',
  options: {
    force: { type: 'boolean', short: 'f', description: 'Stop ready pods before removing them' },
    all: { type: 'boolean', short: 'a', description: 'Remove all pods' },
  },
  async run(ctx, args) {
    const client = ctx.client();
    const ids = args.flag('all')
      ? (await client.runtime('ListPodSandbox', {})).items.map((p) => p.id)
      : await Promise.all(args.expectPositionals(1).map((w) => resolvePodId(client, w)));
    for (const id of ids) {
      const { status } = await client.runtime('PodSandboxStatus', { pod_sandbox_id: id });
      if (status?.state === 'SANDBOX_READY') {
        if (!args.flag('force')) throw new CliError(`pod sandbox ${id} is ready: stop it first or use -f`);
        await client.runtime('StopPodSandbox', { pod_sandbox_id: id });
      }
      await client.runtime('RemovePodSandbox', { pod_sandbox_id: id });
      ctx.stdout.write(`Removed sandbox ${id}\n`);
    }
  },
};

export const inspectpCommand: Command = {
  name: 'inspectp',
  summary: 'Show the status of pod sandboxes (verbose PodSandboxStatus)',
  usage: 'POD-ID [POD-ID...]',
  options: { output: { ...OUTPUT_OPTION, description: 'Output format: json (default) or yaml' } },
  async run(ctx, args) {
    const format = args.output() === 'yaml' ? 'yaml' : 'json';
    const client = ctx.client();
    for (const wanted of args.expectPositionals(1)) {
      const id = await resolvePodId(client, wanted);
      const res = await client.runtime('PodSandboxStatus', { pod_sandbox_id: id, verbose: true });
      const decoded = withDecodedInfo(res);
      ctx.stdout.write(renderOutput(format, { status: decoded.status, info: decoded.info }, () => ''));
    }
  },
};
