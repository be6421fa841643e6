/** `show info` and its parser. */
import { ReplyParseError } from '../errors.js';
import { logger } from '../log.js';
import { makeCommand, type Command } from './command.js';
import { capabilitiesFor, KNOWN_BRANCHES, type VersionCapabilities } from './capabilities.js';

const log = logger('runtime');

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

export interface VersionTrackerOptions {
  /** Called when the version read differs from the previous one (also on the first read). */
  onChange?: (now: VersionCapabilities, previous: VersionCapabilities | null) => void;
}

/**
 * The running HAProxy's version and what the capability table grants it, read from `show
 * info` at start and after each reload (a reload may have started another binary). Until
 * the first read, and for a version the table does not know, the conservative set applies.
 */
export class VersionTracker {
  readonly #client: { run(cmd: Command): Promise<string> };
  readonly #onChange: VersionTrackerOptions['onChange'];
  #current: VersionCapabilities | null = null;

  constructor(client: { run(cmd: Command): Promise<string> }, opts: VersionTrackerOptions = {}) {
    this.#client = client;
    this.#onChange = opts.onChange;
  }

  get current(): VersionCapabilities {
    return this.#current ?? capabilitiesFor(null);
  }

  /** Reads `show info`; throws only what the socket throws (the previous reading stays). */
  async refresh(): Promise<VersionCapabilities> {
    const info = summarizeInfo(parseInfo(await this.#client.run(showInfo())));
    const now = capabilitiesFor(info.version);
    const previous = this.#current;
    this.#current = now;
    if (previous?.version?.raw !== now.version?.raw || previous === null) {
      const context = { version: info.version, branch: now.branch, capabilities: now.label, previous: previous?.version?.raw ?? null };
      if (now.branch === null) {
        log.warn(
          { ...context, known: KNOWN_BRANCHES },
          `HAProxy version "${info.version}" is not in the capability table: using the most conservative capabilities (show proc polling after reloads, reload for everything structural)`,
        );
      } else {
        log.info(context, 'haproxy version and capabilities');
      }
      this.#onChange?.(now, previous);
    }
    return now;
  }
}
