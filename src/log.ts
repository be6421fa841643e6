import { pino, type Logger } from 'pino';

/**
 * The root logger: pino JSON lines on stdout. Level from `LOG_LEVEL` (default `info`).
 * Each module takes one child: `const log = logger('runtime')`.
 */
export const rootLogger: Logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
  timestamp: pino.stdTimeFunctions.isoTime,
});

export function logger(module: string): Logger {
  return rootLogger.child({ module });
}

export type { Logger };
