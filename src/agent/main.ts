// nodelet-agent's entry point: flags → Agent; SIGTERM/SIGINT stop it, leaving the containers running.
import { configureLogger, logger } from '../common/log.js';
import { errorMessage } from '../common/errors.js';
import { AGENT_USAGE, parseAgentFlags } from './config.js';
import { Agent } from './agent.js';

export async function main(argv: string[]): Promise<void> {
  let config;
  try {
    config = parseAgentFlags(argv);
  } catch (err) {
    process.stderr.write(`nodelet-agent: ${errorMessage(err)}\n${AGENT_USAGE}\n`);
    process.exit(2);
  }
  if (config.help) {
    process.stdout.write(`${AGENT_USAGE}\n`);
    return;
  }
  configureLogger(config.logLevel);
  const log = logger({ component: 'nodelet-agent' });
  const agent = new Agent(config);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    agent.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  void agent.failed.then((err) => {
    log.fatal({ err: errorMessage(err) }, 'nodelet-agent cannot go on; exiting');
    agent.stop().finally(() => process.exit(1));
  });
  try {
    await agent.start();
    log.info('nodelet-agent running');
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, 'nodelet-agent failed to start');
    process.exit(1);
  }
}
