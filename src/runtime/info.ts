/** `show info` and its parser. */
import { ReplyParseError } from '../errors.js';
import { makeCommand, type Command } from './command.js';

export function showInfo(): Command {
  return makeCommand('show info');
}

/** `Key: value` lines → record (values verbatim; keys such as `Unstoppable Jobs` contain spaces). */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const i = line.indexOf(': ');
    if (i <= 0) {
      // `Name: HAProxy` lines only; anything else means this was not a `show info` reply.
      if (line.endsWith(':')) out[line.slice(0, -1)] = '';
      else throw new ReplyParseError('show info: line without "Key: value"', { line });
      continue;
    }
    out[line.slice(0, i)] = line.slice(i + 2);
  }
  if (out.Pid === undefined) throw new ReplyParseError('show info: no Pid line', { reply: text.slice(0, 200) });
  return out;
}

/** The fields the updater acts on, typed. */
export interface InfoSummary {
  /** Worker PID (tells old and new workers apart across reloads). */
  pid: number;
  uptimeSec: number;
  /** True on an old worker after a reload: reconnect (new connections reach the new worker). */
  stopping: boolean;
  currConns: number;
  version: string;
}

export function summarizeInfo(info: Record<string, string>): InfoSummary {
  const int = (key: string): number => {
    const v = info[key];
    const n = v === undefined ? NaN : Number(v);
    if (!Number.isInteger(n)) throw new ReplyParseError(`show info: ${key} is not an integer`, { key, value: v });
    return n;
  };
  return {
    pid: int('Pid'),
    uptimeSec: int('Uptime_sec'),
    stopping: int('Stopping') !== 0,
    currConns: int('CurrConns'),
    version: info.Version ?? '',
  };
}
