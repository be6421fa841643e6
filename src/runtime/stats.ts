/** `show stat` (CSV) and its parser. */
import { ReplyParseError } from '../errors.js';
import { assertBackendName, assertInt, makeCommand, type Command } from './command.js';
import { LazyColumns } from './servers.js';
import { replyLines } from './lines.js';

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
  // Fast path: HAProxy only quotes a field holding `,` or `"`, which is rare.
  if (!line.includes('"')) return line.split(',');
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
  const lines = replyLines(csv);
  const header = lines.next().value;
  if (!header?.startsWith('# pxname,')) throw new ReplyParseError('show stat: missing "# pxname,..." header', { reply: csv.slice(0, 200) });
  // Every line, header included, ends with a comma: drop the empty last column.
  const names = splitCsvLine(header.slice(2));
  if (names.at(-1) === '') names.pop();
  // Column positions once per reply (the last of duplicate names, as a record would keep);
  // `fields` is built only when read: at 16 000 servers, a 128-key record per row was
  // most of a daemon pass (parse + GC).
  const pos = (n: string) => names.lastIndexOf(n);
  const C = {
    pxname: pos('pxname'), svname: pos('svname'), type: pos('type'), iid: pos('iid'), sid: pos('sid'),
    qcur: pos('qcur'), qmax: pos('qmax'), scur: pos('scur'), smax: pos('smax'), slim: pos('slim'), stot: pos('stot'),
    econ: pos('econ'), eresp: pos('eresp'), status: pos('status'), weight: pos('weight'), act: pos('act'), bck: pos('bck'),
    chkfail: pos('chkfail'), chkdown: pos('chkdown'), lastchg: pos('lastchg'), downtime: pos('downtime'), lbtot: pos('lbtot'),
    check_status: pos('check_status'), check_code: pos('check_code'), check_duration: pos('check_duration'),
    check_desc: pos('check_desc'), check_rise: pos('check_rise'), check_fall: pos('check_fall'), check_health: pos('check_health'),
    last_chk: pos('last_chk'), hrsp_2xx: pos('hrsp_2xx'), hrsp_5xx: pos('hrsp_5xx'), addr: pos('addr'), mode: pos('mode'), uweight: pos('uweight'),
  };
  // Only the typed columns are cut out of a line (about 35 of HAProxy 2.6's 100): the
  // rest stays in the line until `fields` is read.
  const wanted = new Set(Object.values(C).filter((i) => i >= 0));
  const rows: StatRow[] = [];
  for (const line of lines) {
    const cells = pickCsvCells(line, wanted, names.length);
    if (!cells) throw new ReplyParseError('show stat: short line', { line, columns: names.length });
    const at = (i: number): string | undefined => (i < 0 ? undefined : cells[i]);
    rows.push(Object.assign(new StatColumns(names, line, splitCsvLine), {
      pxname: at(C.pxname) ?? '',
      svname: at(C.svname) ?? '',
      type: num(at(C.type)),
      iid: num(at(C.iid)),
      sid: num(at(C.sid)),
      qcur: num(at(C.qcur)),
      qmax: num(at(C.qmax)),
      scur: num(at(C.scur)),
      smax: num(at(C.smax)),
      slim: num(at(C.slim)),
      stot: num(at(C.stot)),
      econ: num(at(C.econ)),
      eresp: num(at(C.eresp)),
      status: at(C.status) ?? '',
      weight: num(at(C.weight)),
      act: num(at(C.act)),
      bck: num(at(C.bck)),
      chkfail: num(at(C.chkfail)),
      chkdown: num(at(C.chkdown)),
      lastchg: num(at(C.lastchg)),
      downtime: num(at(C.downtime)),
      lbtot: num(at(C.lbtot)),
      checkStatus: at(C.check_status) ?? '',
      checkCode: num(at(C.check_code)),
      checkDuration: num(at(C.check_duration)),
      checkDesc: at(C.check_desc) ?? '',
      checkRise: num(at(C.check_rise)),
      checkFall: num(at(C.check_fall)),
      checkHealth: num(at(C.check_health)),
      lastChk: at(C.last_chk) ?? '',
      hrsp2xx: num(at(C.hrsp_2xx)),
      hrsp5xx: num(at(C.hrsp_5xx)),
      addr: at(C.addr) ?? '',
      mode: at(C.mode) ?? '',
      uweight: num(at(C.uweight)),
    }) satisfies StatRow);
  }
  return rows;
}

/**
 * The cells of one CSV line at the `wanted` positions (a sparse array), or null when the
 * line has fewer than `columns` cells. Lines with a quoted field take the full split.
 */
export function pickCsvCells(line: string, wanted: ReadonlySet<number>, columns: number): string[] | null {
  if (line.includes('"')) {
    const all = splitCsvLine(line);
    return all.length < columns ? null : all;
  }
  const cells: string[] = [];
  let from = 0;
  let n = 0;
  for (;;) {
    const end = line.indexOf(',', from);
    if (wanted.has(n)) cells[n] = line.slice(from, end < 0 ? line.length : end);
    n++;
    if (end < 0) break;
    from = end + 1;
  }
  return n < columns ? null : cells;
}

class StatColumns extends LazyColumns {
  get fields(): Record<string, string> {
    return this.columns();
  }
}
