// The one logger of the daemons (pino). Modules take child loggers carrying their ids.
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger = pino({ level: process.env.NODELET_LOG_LEVEL ?? 'info', base: { pid: process.pid } });

export function configureLogger(level: string): Logger {
  root = pino({ level, base: { pid: process.pid } });
  return root;
}

export function logger(bindings?: Record<string, unknown>): Logger {
  return bindings ? root.child(bindings) : root;
}
