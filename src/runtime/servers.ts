/**
 * Server commands (`set server`, `add/del server`, `enable/disable health`) and the
 * `show servers state` parser. Modelled on client-native `runtime/servers.go`.
 */
import { replyLines } from './lines.js';
import { ReplyParseError } from '../errors.js';
import { SRV_ADMIN, SRV_OP, adminIsMaint, adminIsDrain, formatAddrPort } from '../model.js';
import {
  assertBackendName,
  assertInt,
  assertIp,
  assertOneOf,
  assertPort,
  assertWeight,
  makeCommand,
  serverRef,
  type Command,
} from './command.js';

// ---------------------------------------------------------------- builders

/** `show servers state [<backend>]` (version-1 format, also what the state file holds). */
export function showServersState(backend?: string): Command {
  return makeCommand(backend === undefined ? 'show servers state' : `show servers state ${assertBackendName(backend)}`);
}

/**
 * `set server b/s addr <ip> port <port>`. IP literals only (host names are refused by
 * HAProxy too). Clearing a slot is `setServerAddr(b, s, '0.0.0.0', 1)`: port 0 would mean
 * "port mapping" and survive a reload as such.
 */
export function setServerAddr(backend: string, server: string, addr: string, port: number): Command {
  return makeCommand(`set server ${serverRef(backend, server)} addr ${assertIp(addr)} port ${assertPort(port)}`);
}

export type ServerAdminState = 'ready' | 'drain' | 'maint';
export function setServerState(backend: string, server: string, state: ServerAdminState): Command {
  return makeCommand(`set server ${serverRef(backend, server)} state ${assertOneOf(state, ['ready', 'drain', 'maint'], 'state')}`);
}

/** Absolute weight 0–256 (`static-rr`/`source` backends accept only 0% and 100%). */
export function setServerWeight(backend: string, server: string, weight: number): Command {
  return makeCommand(`set server ${serverRef(backend, server)} weight ${assertWeight(weight)}`);
}

/** Forces the health state until the next check result; only meaningful outside maint. */
export type ServerHealth = 'up' | 'stopping' | 'down';
export function setServerHealth(backend: string, server: string, health: ServerHealth): Command {
  return makeCommand(`set server ${serverRef(backend, server)} health ${assertOneOf(health, ['up', 'stopping', 'down'], 'health')}`);
}

export interface AddServerOptions {
  addr: string;
  port: number;
  /** Default: HAProxy's (1). `default-server` is NOT applied to dynamic servers. */
  weight?: number;
  /** Declare a health check. Default false. Checks only run after `enableHealth`. */
  check?: boolean;
  /** Check interval in ms. Default: HAProxy's (2000). */
  inter?: number;
  /** Check interval during UP/DOWN transitions, ms. Default: `inter`. */
  fastinter?: number;
  /** Check interval while DOWN, ms. Default: `inter`. */
  downinter?: number;
  /** Default: HAProxy's (2). */
  rise?: number;
  /** Default: HAProxy's (3). */
  fall?: number;
  /** Default: unlimited. */
  maxconn?: number;
}

/**
 * `add server b/s <addr>:<port> [...]`. Needs an admin socket and a dynamic balance
 * algorithm; the server starts in maintenance; it does not survive a reload.
 */
export function addServer(backend: string, server: string, o: AddServerOptions): Command {
  // HAProxy takes `[::1]:80` (and, ambiguously, `::1:80`); a bare `::1` is misread as an FQDN.
  const addr = formatAddrPort(assertIp(o.addr), assertPort(o.port));
  const words = [`add server ${serverRef(backend, server)} ${addr}`];
  if (o.weight !== undefined) words.push(`weight ${assertWeight(o.weight)}`);
  if (o.check) words.push('check');
  if (o.inter !== undefined) words.push(`inter ${assertInt(o.inter, 1, 3_600_000, 'inter')}`);
  if (o.fastinter !== undefined) words.push(`fastinter ${assertInt(o.fastinter, 1, 3_600_000, 'fastinter')}`);
  if (o.downinter !== undefined) words.push(`downinter ${assertInt(o.downinter, 1, 3_600_000, 'downinter')}`);
  if (o.rise !== undefined) words.push(`rise ${assertInt(o.rise, 1, 1000, 'rise')}`);
  if (o.fall !== undefined) words.push(`fall ${assertInt(o.fall, 1, 1000, 'fall')}`);
  if (o.maxconn !== undefined) words.push(`maxconn ${assertInt(o.maxconn, 0, 1_000_000, 'maxconn')}`);
  return makeCommand(words.join(' '));
}

/** Only servers in maintenance without attached connections can be deleted. */
export function delServer(backend: string, server: string): Command {
  return makeCommand(`del server ${serverRef(backend, server)}`);
}

/**
 * `wait <ms> srv-removable <be>/<srv>` (capability `waitSrvRemovable`, 3.0+): returns `Done.`
 * as soon as `del server` would succeed (idle connections purged), `Failed.` after `ms`.
 * Sent right before `del server`, which on 3.3+ is likely refused without it.
 */
export function waitSrvRemovable(backend: string, server: string, timeoutMs: number): Command {
  return makeCommand(`wait ${assertInt(timeoutMs, 1, 60_000, 'timeoutMs')} srv-removable ${serverRef(backend, server)}`);
}

/** Starts health checks (needed after `add server ... check`; they then run even in maint). */
export function enableHealth(backend: string, server: string): Command {
  return makeCommand(`enable health ${serverRef(backend, server)}`);
}

export function disableHealth(backend: string, server: string): Command {
  return makeCommand(`disable health ${serverRef(backend, server)}`);
}

// ---------------------------------------------------------------- parser

/** `srv_admin_state` flags and `srv_op_state` values: their meaning is part of the model (src/model.ts). */
export { SRV_ADMIN, SRV_OP };


export interface ServerStateRow {
  beId: number;
  beName: string;
  srvId: number;
  srvName: string;
  /** IP literal; `-` when unset (e.g. a dynamic server added with an FQDN). */
  srvAddr: string;
  srvOpState: number;
  /** Bit set of `SRV_ADMIN` flags. */
  srvAdminState: number;
  srvUweight: number;
  srvIweight: number;
  srvTimeSinceLastChange: number;
  srvCheckStatus: number;
  srvCheckResult: number;
  srvCheckHealth: number;
  srvCheckState: number;
  srvAgentState: number;
  bkFForcedId: number;
  srvFForcedId: number;
  /** null for `-`. */
  srvFqdn: string | null;
  srvPort: number;
  srvrecord: string | null;
  srvUseSsl: number;
  srvCheckPort: number;
  srvCheckAddr: string | null;
  srvAgentAddr: string | null;
  srvAgentPort: number;
  /** Every column by its header name, verbatim (future columns included). */
  raw: Record<string, string>;
}

const NUMERIC: Record<string, keyof ServerStateRow> = {
  be_id: 'beId',
  srv_id: 'srvId',
  srv_op_state: 'srvOpState',
  srv_admin_state: 'srvAdminState',
  srv_uweight: 'srvUweight',
  srv_iweight: 'srvIweight',
  srv_time_since_last_change: 'srvTimeSinceLastChange',
  srv_check_status: 'srvCheckStatus',
  srv_check_result: 'srvCheckResult',
  srv_check_health: 'srvCheckHealth',
  srv_check_state: 'srvCheckState',
  srv_agent_state: 'srvAgentState',
  bk_f_forced_id: 'bkFForcedId',
  srv_f_forced_id: 'srvFForcedId',
  srv_port: 'srvPort',
  srv_use_ssl: 'srvUseSsl',
  srv_check_port: 'srvCheckPort',
  srv_agent_port: 'srvAgentPort',
};
const TEXT: Record<string, keyof ServerStateRow> = { be_name: 'beName', srv_name: 'srvName', srv_addr: 'srvAddr' };
const OPTIONAL_TEXT: Record<string, keyof ServerStateRow> = {
  srv_fqdn: 'srvFqdn',
  srvrecord: 'srvrecord',
  srv_check_addr: 'srvCheckAddr',
  srv_agent_addr: 'srvAgentAddr',
};
const REQUIRED = ['be_id', 'be_name', 'srv_id', 'srv_name', 'srv_addr', 'srv_op_state', 'srv_admin_state', 'srv_uweight', 'srv_port'];

/**
 * Parses `show servers state` (format version 1): a `1` line, a `# be_id be_name ...`
 * header, then one space-separated row per server. Columns are taken by header name.
 */
export function parseServersState(text: string): ServerStateRow[] {
  const lines = replyLines(text);
  if (lines.next().value?.trim() !== '1') {
    throw new ReplyParseError('show servers state: expected format version line "1"', { reply: text.slice(0, 200) });
  }
  const header = lines.next().value;
  if (!header?.startsWith('# ')) throw new ReplyParseError('show servers state: missing "# be_id ..." header', { reply: text.slice(0, 200) });
  const names = header.slice(2).trim().split(/\s+/);
  for (const r of REQUIRED) {
    if (!names.includes(r)) throw new ReplyParseError(`show servers state: header lacks ${r}`, { header });
  }
  // Column positions once per reply (the last of duplicate names, as a record would keep);
  // at 16 000 servers a record per row was most of a daemon pass (parse + GC).
  const pos = (n: string) => names.lastIndexOf(n);
  const numeric = Object.entries(NUMERIC).map(([col, key]) => [col, key, pos(col)] as const);
  const textCols = Object.entries(TEXT).map(([col, key]) => [key, pos(col)] as const);
  const optional = Object.entries(OPTIONAL_TEXT).map(([col, key]) => [key, pos(col)] as const);
  const rows: ServerStateRow[] = [];
  for (const line of lines) {
    const cells = splitStateLine(line);
    if (cells.length < names.length) throw new ReplyParseError('show servers state: short row', { line, columns: names.length });
    const row = new ServerStateColumns(names, line, splitStateLine) as unknown as Record<string, unknown>;
    for (const [col, key, i] of numeric) {
      const v = i < 0 ? undefined : cells[i];
      const n = v === undefined ? 0 : Number(v);
      if (!Number.isFinite(n)) throw new ReplyParseError(`show servers state: ${col} is not a number`, { line, value: v });
      row[key] = n;
    }
    for (const [key, i] of textCols) row[key] = (i < 0 ? undefined : cells[i]) ?? '';
    for (const [key, i] of optional) {
      const v = i < 0 ? undefined : cells[i];
      row[key] = v === undefined || v === '-' ? null : v;
    }
    rows.push(row as unknown as ServerStateRow);
  }
  return rows;
}

const splitStateLine = (line: string): string[] => line.trim().split(/\s+/);

/**
 * Base of parsed rows: keeps the reply's line and builds the `name → cell` record only
 * when it is read (`raw` / `fields`). On the prototype, so rows share one shape and
 * spreading or serializing a row does not build the record. The line, not its cells: at
 * 10 000 servers x 100 `show stat` columns, kept cells were a million small strings.
 */
export class LazyColumns {
  readonly #names: readonly string[];
  readonly #line: string;
  readonly #split: (line: string) => readonly string[];
  #record: Record<string, string> | undefined;
  constructor(names: readonly string[], line: string, split: (line: string) => readonly string[]) {
    this.#names = names;
    this.#line = line;
    this.#split = split;
  }
  protected columns(): Record<string, string> {
    if (!this.#record) {
      const cells = this.#split(this.#line);
      const rec: Record<string, string> = {};
      this.#names.forEach((n, i) => (rec[n] = cells[i] ?? ''));
      this.#record = rec;
    }
    return this.#record;
  }
}

class ServerStateColumns extends LazyColumns {
  get raw(): Record<string, string> {
    return this.columns();
  }
}

/** Maintenance of any kind that stops traffic (see adminIsMaint in src/model.ts). */
export function isMaint(row: Pick<ServerStateRow, 'srvAdminState'>): boolean {
  return adminIsMaint(row.srvAdminState);
}

/** Draining, forced or inherited (see adminIsDrain in src/model.ts). */
export function isDrain(row: Pick<ServerStateRow, 'srvAdminState'>): boolean {
  return adminIsDrain(row.srvAdminState);
}
