// What a CLI command is: its options, usage text and handler; plus parsing a command's argv with node:util parseArgs.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CriClient } from './client.js';

/** A mistake in the command line (exit code 2). */
export class UsageError extends Error {
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A failure the CLI reports as is (exit code 1). */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Placeholder in the help text, e.g. "N" or "K=V". */
  value?: string;
  description: string;
}

export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

export interface CommandContext extends CommandIo {
  /** The CRI connection, opened on first use. */
  client(): CriClient;
}

export interface Command {
  name: string;
  summary: string;
  /** Arguments after the options in the usage line, e.g. "ID [ID...]". */
  usage: string;
  options: Record<string, OptionSpec>;
  /**
   * When set, everything after this many positionals (or after "--") is taken verbatim,
   * options included: the command line of `exec` and `run`.
   */
  verbatimAfter?: number;
  run(ctx: CommandContext, args: Args): Promise<number | void>;
}

/** Options every command accepts. */
export const COMMON_OPTIONS: Record<string, OptionSpec> = {
  'runtime-endpoint': { type: 'string', short: 'r', value: 'URL', description: 'CRI endpoint (default unix:///run/nodelet/cri.sock, or $NODELET_ENDPOINT / $CONTAINER_RUNTIME_ENDPOINT)' },
  help: { type: 'boolean', short: 'h', description: 'Show this help' },
};

export const OUTPUT_OPTION: OptionSpec = { type: 'string', short: 'o', value: 'FORMAT', description: 'Output format: table, json or yaml' };

/** The parsed options and positionals of one command. */
export class Args {
  constructor(
    private readonly command: string,
    private readonly values: Record<string, unknown>,
    readonly positionals: string[],
    /** The verbatim tail (see Command.verbatimAfter). */
    readonly verbatim: string[],
  ) {}

  string(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  list(name: string): string[] {
    const v = this.values[name];
    return Array.isArray(v) ? (v as string[]) : typeof v === 'string' ? [v] : [];
  }

  /** A non-negative integer option. */
  int(name: string): number | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new UsageError(`--${name} wants a non-negative integer, got "${v}"`, this.command);
    return Number(v);
  }

  /** One of the given words (lower-cased), or undefined when absent. */
  choice<T extends string>(name: string, allowed: readonly T[]): T | undefined {
    const v = this.string(name)?.toLowerCase();
    if (v === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}; got "${v}"`, this.command);
    return v as T;
  }

  /** The -o format (table by default). */
  output(): 'table' | 'json' | 'yaml' {
    return this.choice('output', ['table', 'json', 'yaml'] as const) ?? 'table';
  }

  /** Fails unless the number of positionals is within [min, max]. */
  expectPositionals(min: number, max = Infinity): string[] {
    const n = this.positionals.length;
    if (n < min) throw new UsageError(`${this.command} needs ${min === 1 ? 'an argument' : `at least ${min} arguments`}`, this.command);
    if (n > max) throw new UsageError(`${this.command} takes at most ${max} argument${max === 1 ? '' : 's'}, got ${n}`, this.command);
    return this.positionals;
  }
}

/** "k=v" pairs into a record; `what` names the flag in errors. */
export function keyValues(pairs: string[], what: string, command?: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`${what} wants KEY=VALUE, got "${pair}"`, command);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function optionConfig(options: Record<string, OptionSpec>): NonNullable<ParseArgsConfig['options']> {
  const config: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, spec] of Object.entries(options)) {
    config[name] = { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) };
  }
  return config;
}

/**
 * Splits argv where the verbatim tail starts: at a "--", or at the positional after the first
 * `leading` positionals. Options before that point are the command's own.
 */
export function splitVerbatim(argv: string[], options: Record<string, OptionSpec>, leading: number): { head: string[]; tail: string[] } {
  const takesValue = new Set<string>();
  for (const [name, spec] of Object.entries(options)) {
    if (spec.type === 'string') {
      takesValue.add(`--${name}`);
      if (spec.short) takesValue.add(`-${spec.short}`);
    }
  }
  let seen = 0;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return { head: argv.slice(0, i), tail: argv.slice(i + 1) };
    if (arg.startsWith('-') && arg !== '-') {
      if (takesValue.has(arg)) i++;
      continue;
    }
    if (seen === leading) return { head: argv.slice(0, i), tail: argv.slice(i) };
    seen++;
  }
  return { head: argv, tail: [] };
}

/** Parses a command's argv; throws UsageError for unknown options or missing values. */
export function parseCommandArgs(command: Command, argv: string[]): Args {
  const options = { ...COMMON_OPTIONS, ...command.options };
  const { head, tail } = command.verbatimAfter !== undefined ? splitVerbatim(argv, options, command.verbatimAfter) : { head: argv, tail: [] };
  try {
    const { values, positionals } = parseArgs({ args: head, options: optionConfig(options), allowPositionals: true, strict: true });
    return new Args(command.name, values as Record<string, unknown>, positionals, tail);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (err instanceof TypeError && typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      throw new UsageError(err.message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, ''), command.name);
    }
    throw err;
  }
}

/** The help text of one command. */
export function commandHelp(command: Command): string {
  const options = { ...command.options, ...COMMON_OPTIONS };
  const rows = Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`;
    return { flag, text: spec.description + (spec.multiple ? ' (repeatable)' : '') };
  });
  const width = Math.max(...rows.map((r) => r.flag.length));
  const lines = [
    `Usage: nodelet ${command.name} [OPTIONS]${command.usage ? ` ${command.usage}` : ''}`,
    '',
    command.summary,
    '',
    'Options:',
    ...rows.map((r) => `  ${r.flag.padEnd(width)}   ${r.text}`),
  ];
  return lines.join('\n') + '\n';
}
