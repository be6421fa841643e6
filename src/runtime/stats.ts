/** `show stat` (CSV) and its parser. */
import { ReplyParseError } from '../errors.js';
import { assertBackendName, assertInt, makeCommand, type Command } from './command.js';

/** `type` bit mask of `show stat`: 1 frontends, 2 backends, 4 servers; -1 everything. */
export const STAT_TYPE = Object.freeze({ FRONTEND: 1, BACKEND: 2, SERVER: 4, ALL: -1 });

/**
 * `show stat [<proxy> <type> <sid>]`. HAProxy 2.6 ignores the filter unless all three are
 * given (`show stat b1` lists every proxy), so a proxy always comes with `type` (default
 * -1 = all) and `sid` (default -1 = all). `proxy` is a name, or a numeric id / -1.
 */
export function showStat(proxy?: string | number, type: number = STAT_TYPE.ALL, sid = -1): Command {
  if (proxy === undefined) return makeCommand('show stat');
  const px = typeof proxy === 'number' ? assertInt(proxy, -1, 2_147_483_647, 'proxy') : assertBackendName(proxy, 'proxy');
  const t = type === -1 ? -1 : assertInt(type, 1, 7, 'type');
  return makeCommand(`show stat ${px} ${t} ${assertInt(sid, -1, 2_147_483_647, 'sid')}`);
}

/** One CSV line, typed. Numeric fields are null when HAProxy leaves them empty. */
export interface StatRow {
  pxname: string;
  /** `FRONTEND`, `BACKEND`, or the server name. */
  svname: string;
  /** 0 frontend, 1 backend, 2 server, 3 listener. */
  type: number | null;
  iid: number | null;
  sid: number | null;
  qcur: number | null;
  qmax: number | null;
  scur: number | null;
  smax: number | null;
  slim: number | null;
  stot: number | null;
  econ: number | null;
  eresp: number | null;
  /** e.g. `UP`, `UP 1/2`, `DOWN`, `DOWN 1/2`, `DRAIN`, `MAINT`, `no check`, `OPEN`. */
  status: string;
  weight: number | null;
  act: number | null;
  bck: number | null;
  chkfail: number | null;
  chkdown: number | null;
  lastchg: number | null;
  downtime: number | null;
  lbtot: number | null;
  /** e.g. `L4OK`, `L7OK`, `L4CON`, `INI`; empty when no check. */
  checkStatus: string;
  checkCode: number | null;
  checkDuration: number | null;
  checkDesc: string;
  checkRise: number | null;
  checkFall: number | null;
  checkHealth: number | null;
  /** Last check output (e.g. `Connection refused`). */
  lastChk: string;
  hrsp2xx: number | null;
  hrsp5xx: number | null;
  /** `ip:port` of a server. */
  addr: string;
  mode: string;
  uweight: number | null;
  /** Every column keyed by its header name, verbatim. */
  fields: Record<string, string>;
}

const num = (v: string | undefined): number | null => {
  if (v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
};

/** Splits one CSV line; HAProxy quotes fields holding `,` or `"` (RFC 4180 style). */
export function splitCsvLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        if (i >= line.length) throw new ReplyParseError('show stat: unterminated quoted field', { line });
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            v += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        v += line[i];
        i++;
      }
      out.push(v);
    } else {
      const end = line.indexOf(',', i);
      out.push(line.slice(i, end === -1 ? line.length : end));
      i = end === -1 ? line.length : end;
    }
    if (i >= line.length) return out;
    if (line[i] !== ',') throw new ReplyParseError('show stat: garbage after quoted field', { line });
    i++;
  }
}

/** Parses `show stat` CSV: `# pxname,svname,...` header then one line per proxy/server. */
export function parseStat(csv: string): StatRow[] {
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  const header = lines[0];
  if (!header?.startsWith('# pxname,')) throw new ReplyParseError('show stat: missing "# pxname,..." header', { reply: csv.slice(0, 200) });
  // Every line, header included, ends with a comma: drop the empty last column.
  const names = splitCsvLine(header.slice(2));
  if (names.at(-1) === '') names.pop();
  return lines.slice(1).map((line) => {
    const cells = splitCsvLine(line);
    if (cells.length < names.length) throw new ReplyParseError('show stat: short line', { line, columns: names.length });
    const f: Record<string, string> = {};
    names.forEach((n, i) => (f[n] = cells[i] ?? ''));
    return {
      pxname: f.pxname ?? '',
      svname: f.svname ?? '',
      type: num(f.type),
      iid: num(f.iid),
      sid: num(f.sid),
      qcur: num(f.qcur),
      qmax: num(f.qmax),
      scur: num(f.scur),
      smax: num(f.smax),
      slim: num(f.slim),
      stot: num(f.stot),
      econ: num(f.econ),
      eresp: num(f.eresp),
      status: f.status ?? '',
      weight: num(f.weight),
      act: num(f.act),
      bck: num(f.bck),
      chkfail: num(f.chkfail),
      chkdown: num(f.chkdown),
      lastchg: num(f.lastchg),
      downtime: num(f.downtime),
      lbtot: num(f.lbtot),
      checkStatus: f.check_status ?? '',
      checkCode: num(f.check_code),
      checkDuration: num(f.check_duration),
      checkDesc: f.check_desc ?? '',
      checkRise: num(f.check_rise),
      checkFall: num(f.check_fall),
      checkHealth: num(f.check_health),
      lastChk: f.last_chk ?? '',
      hrsp2xx: num(f.hrsp_2xx),
      hrsp5xx: num(f.hrsp_5xx),
      addr: f.addr ?? '',
      mode: f.mode ?? '',
      uweight: num(f.uweight),
      fields: f,
    };
  });
}
