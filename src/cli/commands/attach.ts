// `nodelet attach`: connects the terminal to a running container's own stdio through the streaming server.
import type { CriClient } from '../client.js';
import { type Command } from '../command.js';
import { resolveContainerId } from '../resolve.js';
import { runRemoteCommand, STREAM_OPTIONS, streamFamily } from './exec.js';

interface ContainerStdio {
  stdin: boolean;
  tty: boolean;
}

/** Whether the container was created with stdin and a TTY, from its verbose status; undefined when the runtime does not say. */
export async function containerStdio(client: CriClient, id: string): Promise<ContainerStdio | undefined> {
  const res = await client.runtime('ContainerStatus', { container_id: id, verbose: true });
  const raw = res.info?.info;
  if (!raw) return undefined;
  try {
    const config = (JSON.parse(raw) as { config?: { stdin?: unknown; tty?: unknown } }).config;
    if (!config) return undefined;
    return { stdin: config.stdin === true, tty: config.tty === true };
  } catch {
    return undefined;
  }
}

export const attachCommand: Command = {
  name: 'attach',
  summary: "Attach to a running container's stdio",
  usage: 'ID',
  options: {
    interactive: { type: 'boolean', short: 'i', description: "Pass stdin to the container (it must have been created with stdin)" },
    tty: { type: 'boolean', short: 't', description: 'Use a terminal (default: whether the container has one)' },
    ...STREAM_OPTIONS,
  },
  async run(ctx, args) {
    const [wanted] = args.expectPositionals(1, 1);
    const family = streamFamily(args);
    const client = ctx.client();
    const id = await resolveContainerId(client, wanted!);
    let stdin = args.flag('interactive');
    let tty = args.flag('tty');
    const config = await containerStdio(client, id);
    if (config) {
      // The runtime serves the container's stdio as it was created, so follow its config.
      if (tty && !config.tty) ctx.stderr.write(`nodelet: container ${id} has no TTY; attaching without one\n`);
      tty = config.tty;
      if (stdin && !config.stdin) {
        ctx.stderr.write(`nodelet: container ${id} was created without stdin; attaching without input\n`);
        stdin = false;
      }
    }
    const { url } = await client.runtime('Attach', { container_id: id, stdin, stdout: true, stderr: !tty, tty });
    return runRemoteCommand(ctx, url, { family, stdin, tty, insecure: args.flag('insecure') });
  },
};
