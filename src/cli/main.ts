// The `nodelet` command: global flags, dispatch to a command, exit codes (1 for failures, 2 for usage errors).
import { NODELET_VERSION } from '../version.js';
import { connectCri, isServiceError, resolveEndpoint, type CriClient } from './client.js';
import { CliError, commandHelp, parseCommandArgs, UsageError, type Command, type CommandIo } from './command.js';
import { attachCommand } from './commands/attach.js';
import { inspectCommand, psCommand, rmCommand, stopCommand } from './commands/containers.js';
import { execCommand } from './commands/exec.js';
import { imagesCommand, inspectiCommand, pullCommand, rmiCommand } from './commands/images.js';
import { logsCommand } from './commands/logs.js';
import { inspectpCommand, podsCommand, rmpCommand, stoppCommand } from './commands/pods.js';
import { portForwardCommand } from './commands/port-forward.js';
import { runCommand } from './commands/run.js';
import { infoCommand, versionCommand } from './commands/version.js';


export const COMMANDS: Command[] = [
  versionCommand,
  infoCommand,
  imagesCommand,
  pullCommand,
  rmiCommand,
  inspectiCommand,
  podsCommand,
  psCommand,
  runCommand,
  stopCommand,
  stoppCommand,
  rmCommand,
  rmpCommand,
  logsCommand,
  execCommand,
  attachCommand,
  portForwardCommand,
  inspectCommand,
  inspectpCommand,
];

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: nodelet [-r ENDPOINT] COMMAND [OPTIONS] [ARGS]',
    '',
    'The command-line client of a CRI runtime (nodelet-cri, containerd, CRI-O).',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}   ${c.summary}`),
    '',
    'Global options:',
    '  -r, --runtime-endpoint URL   CRI endpoint (default unix:///run/nodelet/cri.sock,',
    '                               or $NODELET_ENDPOINT / $CONTAINER_RUNTIME_ENDPOINT)',
    '  -h, --help                   Show help; "nodelet COMMAND --help" for a command',
    '      --version                Show the client version',
    '',
  ].join('\n');
}

interface GlobalArgs {
  endpoint?: string;
  help: boolean;
  version: boolean;
  command?: string;
  rest: string[];
}

/** The flags before the command name, the command name, and its own argv. */
export function parseGlobalArgs(argv: string[]): GlobalArgs {
  const out: GlobalArgs = { help: false, version: false, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-r' || arg === '--runtime-endpoint') {
      const value = argv[++i];
      if (value === undefined) throw new UsageError(`${arg} needs a value`);
      out.endpoint = value;
    } else if (arg.startsWith('--runtime-endpoint=')) out.endpoint = arg.slice('--runtime-endpoint='.length);
    else if (arg === '-h' || arg === '--help') out.help = true;
    else if (arg === '--version') out.version = true;
    else if (arg.startsWith('-')) throw new UsageError(`unknown global option ${arg}`);
    else {
      out.command = arg;
      out.rest = argv.slice(i + 1);
      break;
    }
  }
  return out;
}

/** Runs the CLI and returns its exit code. */
export async function runCli(argv: string[], io: CommandIo): Promise<number> {
  let client: CriClient | undefined;
  let commandName: string | undefined;
  try {
    const global = parseGlobalArgs(argv);
    if (global.version) {
      io.stdout.write(`nodelet ${NODELET_VERSION}\n`);
      return 0;
    }
    if (!global.command) {
      (global.help ? io.stdout : io.stderr).write(mainHelp());
      return global.help ? 0 : EXIT_USAGE;
    }
    if (global.command === 'help') {
      const about = COMMANDS.find((c) => c.name === global.rest[0]);
      io.stdout.write(about ? commandHelp(about) : mainHelp());
      return 0;
    }
    const command = COMMANDS.find((c) => c.name === global.command);
    if (!command) throw new UsageError(`unknown command "${global.command}"`);
    commandName = command.name;
    const args = parseCommandArgs(command, global.rest);
    if (args.flag('help')) {
      io.stdout.write(commandHelp(command));
      return 0;
    }
    const endpoint = resolveEndpoint(args.string('runtime-endpoint') ?? global.endpoint, io.env);
    const code = await command.run(
      {
        ...io,
        client: () => (client ??= connectCri(endpoint)),
      },
      args,
    );
    return code ?? 0;
  } catch (err) {
    if (err instanceof UsageError) {
      const hint = err.command ?? commandName;
      io.stderr.write(`nodelet: ${err.message}\nSee "nodelet ${hint ? `${hint} ` : ''}--help".\n`);
      return EXIT_USAGE;
    }
    if (isServiceError(err)) io.stderr.write(`nodelet: ${(err.details || err.message).replace(/\s*Resolution note:\s*$/, '')}\n`);
    else if (err instanceof CliError) io.stderr.write(`nodelet: ${err.message}\n`);
    else io.stderr.write(`nodelet: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return EXIT_FAILURE;
  } finally {
    client?.close();
  }
}

/** Entry point of bin/nodelet. */
export async function main(argv: string[]): Promise<void> {
  // A closed pipe (`nodelet logs ID | head`) is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  process.exitCode = await runCli(argv, { stdout: process.stdout, stderr: process.stderr, env: process.env });
}
