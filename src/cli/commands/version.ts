// `nodelet version` and `nodelet info`: what runtime answers on the endpoint.
import { NODELET_VERSION } from '../../version.js';
import { OUTPUT_OPTION, type Command } from '../command.js';
import { renderOutput, withDecodedInfo } from '../output.js';

export const versionCommand: Command = {
  name: 'version',
  summary: 'Show the client version and the runtime version',
  usage: '',
  options: { output: OUTPUT_OPTION },
  async run(ctx, args) {
    args.expectPositionals(0, 0);
    const format = args.output();
    const res = await ctx.client().runtime('Version', { version: 'v1' });
    ctx.stdout.write(
      renderOutput(format, res, () =>
        [
          `Client:             nodelet ${NODELET_VERSION}`,
          `Version:            ${res.version}`,
          `RuntimeName:        ${res.runtime_name}`,
          `RuntimeVersion:     ${res.runtime_version}`,
          `RuntimeApiVersion:  ${res.runtime_api_version}`,
          '',
        ].join('\n'),
      ),
    );
  },
};

export const infoCommand: Command = {
  name: 'info',
  summary: 'Show the runtime status and conditions (verbose Status)',
  usage: '',
  options: { output: { ...OUTPUT_OPTION, description: 'Output format: json (default) or yaml' } },
  async run(ctx, args) {
    args.expectPositionals(0, 0);
    const format = args.output() === 'yaml' ? 'yaml' : 'json';
    const res = await ctx.client().runtime('Status', { verbose: true });
    const decoded = withDecodedInfo(res);
    ctx.stdout.write(renderOutput(format, { status: decoded.status, info: decoded.info }, () => ''));
  },
};
