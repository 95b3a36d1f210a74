// `nodelet exec`: runs a command in a container (ExecSync) and exits with its exit code.
import { UsageError, type Command } from '../command.js';
import { resolveContainerId } from '../resolve.js';

export const execCommand: Command = {
  name: 'exec',
  summary: 'Run a command in a running container',
  usage: 'ID COMMAND [ARG...]',
  verbatimAfter: 1,
  options: {
    timeout: { type: 'string', value: 'SECONDS', description: 'Kill the command after this many seconds (default: no limit)' },
    sync: { type: 'boolean', short: 's', description: 'Run synchronously and print the output at the end (the only mode for now)' },
    interactive: { type: 'boolean', short: 'i', description: 'Keep stdin open (not supported yet)' },
    tty: { type: 'boolean', short: 't', description: 'Allocate a terminal (not supported yet)' },
  },
  async run(ctx, args) {
    const [wanted] = args.expectPositionals(1, 1);
    if (args.verbatim.length === 0) throw new UsageError('exec needs a command to run', 'exec');
    if (args.flag('interactive') || args.flag('tty')) throw new UsageError('interactive exec (-i, -t) is not supported yet; run without them', 'exec');
    const timeout = args.int('timeout') ?? 0;
    const client = ctx.client();
    const id = await resolveContainerId(client, wanted!);
    const res = await client.runtime('ExecSync', { container_id: id, cmd: args.verbatim, timeout }, timeout ? { timeoutMs: (timeout + 30) * 1000 } : {});
    if (res.stdout.length > 0) ctx.stdout.write(res.stdout);
    if (res.stderr.length > 0) ctx.stderr.write(res.stderr);
    return res.exit_code;
  },
};
