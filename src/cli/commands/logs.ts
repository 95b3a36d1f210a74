// `nodelet logs`: prints a container's CRI log file, stdout to stdout and stderr to stderr.
import { hasCode } from '../../common/errors.js';
import { CliError, type Command } from '../command.js';
import { readCriLog, renderRecord } from '../log-reader.js';
import { resolveContainerId } from '../resolve.js';

export const logsCommand: Command = {
  name: 'logs',
  summary: "Print a container's logs",
  usage: 'ID',
  options: {
    follow: { type: 'boolean', short: 'f', description: 'Keep printing new output until the container exits' },
    tail: { type: 'string', value: 'N', description: 'Only the last N lines already written' },
    timestamps: { type: 'boolean', short: 't', description: 'Prefix each line with its time' },
  },
  async run(ctx, args) {
    const [wanted] = args.expectPositionals(1, 1);
    const tail = args.int('tail');
    const timestamps = args.flag('timestamps');
    const client = ctx.client();
    const id = await resolveContainerId(client, wanted!);
    const { status } = await client.runtime('ContainerStatus', { container_id: id });
    if (!status?.log_path) throw new CliError(`container ${id} has no log path`);
    const exited = async () => {
      const res = await client.runtime('ContainerStatus', { container_id: id }).catch(() => undefined);
      return !res?.status || res.status.state === 'CONTAINER_EXITED' || res.status.state === 'CONTAINER_UNKNOWN';
    };
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    try {
      await readCriLog(
        status.log_path,
        (record) => (record.stream === 'stderr' ? ctx.stderr : ctx.stdout).write(renderRecord(record, timestamps)),
        {
          follow: args.flag('follow') && status.state !== 'CONTAINER_EXITED',
          shouldStop: exited,
          signal: stop.signal,
          pollIntervalMs: 250,
          ...(tail !== undefined ? { tail } : {}),
        },
      );
    } catch (err) {
      if (hasCode(err, 'ENOENT')) throw new CliError(`log file ${status.log_path} of container ${id} does not exist`);
      throw err;
    } finally {
      process.removeListener('SIGINT', onSignal);
    }
  },
};
