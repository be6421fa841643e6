import { pino, type Logger } from 'pino';

/**
 * The root logger: pino JSON lines on stdout. Level from `LOG_LEVEL` (default `info`).
 * Each module takes one child: `const log = logger('runtime')`.
 *
 * `setLogFormat('pretty')` turns each line into `HH:MM:SS LEVEL module: msg key=value` for a
 * human (on stderr for one-off commands, whose stdout is their result); JSON stays the
 * default for a daemon whose output goes to a collector.
 */
export type LogFormat = 'json' | 'pretty';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMIT = new Set(['level', 'time', 'pid', 'module', 'msg']);

/** One pino line → one human line; the error's message (not its stack) stands for `err`. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : json + '\n';
  }
  const time = typeof o.time === 'string' ? o.time.slice(11, 19) : '';
  const extras = Object.entries(o)
    .filter(([k]) => !OMIT.has(k))
    .map(([k, v]) => {
      if (k === 'err' && v && typeof v === 'object') {
        const e = v as { message?: string; code?: string };
        return `err=${JSON.stringify(e.code ? `${e.code}: ${e.message ?? ''}` : (e.message ?? ''))}`;
      }
      return `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`;
    });
  const level = LEVELS[Number(o.level)] ?? String(o.level);
  return `${time} ${level.padEnd(5)} ${o.module ?? '-'}: ${String(o.msg ?? '')}${extras.length ? ' ' + extras.join(' ') : ''}\n`;
}

const sink = {
  format: 'json' as LogFormat,
  out: process.stdout as NodeJS.WritableStream,
  write(line: string): void {
    this.out.write(this.format === 'pretty' ? prettyLine(line.trimEnd()) : line);
  },
};

export const rootLogger: Logger = pino(
  {
    level: process.env.LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  sink,
);

/** Switches the format (and stream) of every logger from now on. Default: JSON on stdout. */
export function setLogFormat(format: LogFormat, out: NodeJS.WritableStream = process.stdout): void {
  sink.format = format;
  sink.out = out;
}

export function logger(module: string): Logger {
  return rootLogger.child({ module });
}

export type { Logger };
