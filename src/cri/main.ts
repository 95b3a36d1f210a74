// nodelet-cri: parse flags, start the daemon, stop cleanly on SIGTERM/SIGINT.
import { loadConfig, USAGE } from '../config/config.js';
import { configureLogger } from '../common/log.js';
import { startDaemon } from './daemon.js';
import { NODELET_VERSION } from '../version.js';
import { errorMessage } from '../common/errors.js';

/**
 * The allocator settings of bin/nodelet-cri's #! line are for this process: conmon, runc, CNI plugins and the
 * rest of the children run with the environment the daemon was started with.
 */
function keepAllocatorToSelf(): void {
  if (process.env.LD_PRELOAD === 'libjemalloc.so.2') {
    delete process.env.LD_PRELOAD;
    delete process.env.MALLOC_CONF;
  }
}

export async function main(argv: string[]): Promise<void> {
  keepAllocatorToSelf();
  let parsed;
  try {
    parsed = loadConfig(argv);
  } catch (err) {
    process.stderr.write(`nodelet-cri: ${errorMessage(err)}\n\n${USAGE}`);
    process.exit(2);
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (parsed.version) {
    process.stdout.write(`nodelet-cri ${NODELET_VERSION}\n`);
    return;
  }
  const log = configureLogger(parsed.config.logLevel);
  let daemon;
  try {
    daemon = await startDaemon(parsed.config);
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, 'nodelet-cri failed to start');
    process.exit(1);
  }
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err: errorMessage(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
