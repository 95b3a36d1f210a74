// `nodelet exec`: runs a command in a container and exits with its exit code — through ExecSync,
// or with -i/-t through the runtime's streaming server (stdin, a terminal, resizes).
import type { Readable, Writable } from 'node:stream';
import type { AttachRequest } from '../../cri/generated/runtime/v1/AttachRequest.js';
import type { AttachResponse__Output } from '../../cri/generated/runtime/v1/AttachResponse.js';
import type { ExecRequest } from '../../cri/generated/runtime/v1/ExecRequest.js';
import type { ExecResponse__Output } from '../../cri/generated/runtime/v1/ExecResponse.js';
import type { PortForwardRequest } from '../../cri/generated/runtime/v1/PortForwardRequest.js';
import type { PortForwardResponse__Output } from '../../cri/generated/runtime/v1/PortForwardResponse.js';
import { openRemoteCommand, runWithStdio, type StreamFamily } from '../../streaming/client.js';
import type { Args, CommandContext, OptionSpec } from '../command.js';
import { UsageError, type Command } from '../command.js';
import { resolveContainerId } from '../resolve.js';

// The streaming RPCs, added to the CLI client's typed method table.
declare module '../client.js' {
  interface RuntimeCalls {
    Exec: [ExecRequest, ExecResponse__Output];
    Attach: [AttachRequest, AttachResponse__Output];
    PortForward: [PortForwardRequest, PortForwardResponse__Output];
  }
}

export const FAMILY_OPTION: OptionSpec = { type: 'string', value: 'PROTOCOL', description: 'Streaming protocol: spdy or websocket (default spdy)' };

/** Options of exec -i/-t and attach. */
export const STREAM_OPTIONS: Record<string, OptionSpec> = {
  family: FAMILY_OPTION,
  insecure: { type: 'boolean', description: "Accept any TLS certificate of the runtime's streaming server" },
};

export function streamFamily(args: Args): StreamFamily {
  return args.choice('family', ['spdy', 'websocket'] as const) ?? 'spdy';
}

type TerminalInput = Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

/** The input of the command: the context's when it has one (tests in-process), else the process's. */
export function commandStdin(ctx: CommandContext): TerminalInput {
  return (ctx as CommandContext & { stdin?: TerminalInput }).stdin ?? process.stdin;
}

const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

/**
 * Connects to an exec or attach URL and wires it to the command's stdio until the remote side ends.
 * SIGINT, SIGTERM and SIGHUP drop the connection (restoring the terminal) and exit 128+signal;
 * otherwise returns the remote exit code, or 1 with the runtime's message when it failed otherwise.
 */
export async function runRemoteCommand(
  ctx: CommandContext,
  url: string,
  opts: { family: StreamFamily; stdin: boolean; tty: boolean; insecure: boolean },
): Promise<number> {
  const session = await openRemoteCommand({ url, family: opts.family, stdin: opts.stdin, stdout: true, stderr: !opts.tty, tty: opts.tty, insecure: opts.insecure });
  let interrupted: keyof typeof SIGNAL_EXIT_CODES | undefined;
  const handlers = Object.keys(SIGNAL_EXIT_CODES).map((name) => {
    const signal = name as keyof typeof SIGNAL_EXIT_CODES;
    const handler = (): void => {
      interrupted ??= signal;
      session.close();
    };
    process.on(signal, handler);
    return () => process.removeListener(signal, handler);
  });
  try {
    const { exitCode, message } = await runWithStdio(session, {
      stdin: opts.stdin ? commandStdin(ctx) : undefined,
      stdout: ctx.stdout as unknown as Writable,
      stderr: ctx.stderr as unknown as Writable,
      tty: opts.tty,
    });
    if (interrupted) return SIGNAL_EXIT_CODES[interrupted];
    if (exitCode >= 0) return exitCode;
    ctx.stderr.write(`nodelet: ${message ?? 'the remote command failed'}\n`);
    return 1;
  } finally {
    for (const remove of handlers) remove();
  }
}

export const execCommand: Command = {
  name: 'exec',
  summary: 'Run a command in a running container',
  usage: 'ID COMMAND [ARG...]',
  verbatimAfter: 1,
  options: {
    timeout: { type: 'string', value: 'SECONDS', description: 'Kill the command after this many seconds (default: no limit; not with -i or -t)' },
    sync: { type: 'boolean', short: 's', description: 'Run through ExecSync and print the output at the end (the default without -i and -t)' },
    interactive: { type: 'boolean', short: 'i', description: 'Pass stdin to the command (streaming)' },
    tty: { type: 'boolean', short: 't', description: 'Run the command in a terminal; a local terminal is put in raw mode (streaming)' },
    ...STREAM_OPTIONS,
  },
  async run(ctx, args) {
    const [wanted] = args.expectPositionals(1, 1);
    if (args.verbatim.length === 0) throw new UsageError('exec needs a command to run', 'exec');
    const stdin = args.flag('interactive');
    const tty = args.flag('tty');
    const family = streamFamily(args);
    const timeout = args.int('timeout') ?? 0;
    const client = ctx.client();
    if (stdin || tty) {
      if (args.flag('sync')) throw new UsageError('--sync cannot be used with -i or -t', 'exec');
      if (timeout) throw new UsageError('--timeout cannot be used with -i or -t', 'exec');
      const id = await resolveContainerId(client, wanted!);
      const { url } = await client.runtime('Exec', { container_id: id, cmd: args.verbatim, stdin, stdout: true, stderr: !tty, tty });
      return runRemoteCommand(ctx, url, { family, stdin, tty, insecure: args.flag('insecure') });
    }
    const id = await resolveContainerId(client, wanted!);
    const res = await client.runtime('ExecSync', { container_id: id, cmd: args.verbatim, timeout }, timeout ? { deadlineMs: (timeout + 30) * 1000 } : {});
    if (res.stdout.length > 0) ctx.stdout.write(res.stdout);
    if (res.stderr.length > 0) ctx.stderr.write(res.stderr);
    return res.exit_code;
  },
};
