/**
 * The ssl cert / crt-list command family and its parsers (replies captured from HAProxy
 * 2.6.12 in test/fixtures/runtime/ssl-*.txt; the commands are unchanged up to 3.4).
 *
 * A certificate is changed in a transaction: `new ssl cert` (only for a name HAProxy does
 * not hold yet), `set ssl cert <name> <<` with the PEM as payload, `commit ssl cert`.
 * HAProxy keeps ONE transaction at a time, and on 2.6.12 a `set ssl cert B` while A's is
 * open loads B's PEM into A's transaction and answers "Transaction updated for certificate
 * A": `parseSetSslCert` therefore checks the name in the reply. Runtime changes are not
 * written to disk: whoever changes a crt-list here must also rewrite its file.
 */
import { InvalidArgumentError, ReplyParseError, SslTransactionError } from '../errors.js';
import { assertMapPath, assertInt, makeCommand, type Command, type SafetyOptions } from './command.js';

/** Absolute path of safe characters: names of certificates and crt-lists are paths we generate. */
const certPath = (p: unknown, argument = 'cert') => assertMapPath(p, argument);

/** A DNS name (or `*.` wildcard) used as an SNI filter in a crt-list line. */
const SNI_RE = /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export function assertSniFilter(value: unknown, argument = 'sni'): string {
  if (typeof value !== 'string' || value.length > 253 || !SNI_RE.test(value)) {
    throw new InvalidArgumentError(`invalid ${argument} ${JSON.stringify(value)}: expected a lowercase DNS name, optionally starting with *.`, { argument, value });
  }
  return value;
}

// ---------------------------------------------------------------- builders

/** `show ssl cert`: every certificate name, and the one open transaction if any. */
export function showSslCerts(): Command {
  return makeCommand('show ssl cert');
}

/** `show ssl cert [*]<name>`: details of the committed certificate, or of the transaction (`transaction: true`). */
export function showSslCert(path: string, opts: { transaction?: boolean } = {}): Command {
  return makeCommand(`show ssl cert ${opts.transaction ? '*' : ''}${certPath(path)}`);
}

/** `new ssl cert <name>`: an empty certificate store; refused when the name exists. */
export function newSslCert(path: string): Command {
  return makeCommand(`new ssl cert ${certPath(path)}`);
}

/**
 * `set ssl cert <name> <<` + PEM lines (certificate, chain, key; no empty line). Opens or
 * updates the transaction. The payload is refused unsent when over `payloadLimit(bufsize)`.
 */
export function setSslCert(path: string, pemLines: readonly string[], opts: SafetyOptions = {}): Command {
  return makeCommand(`set ssl cert ${certPath(path)} <<`, pemLines, opts);
}

/** `commit ssl cert <name>`: applies the open transaction to every bind using the certificate. */
export function commitSslCert(path: string): Command {
  return makeCommand(`commit ssl cert ${certPath(path)}`);
}

/** `abort ssl cert <name>`: drops the open transaction. */
export function abortSslCert(path: string): Command {
  return makeCommand(`abort ssl cert ${certPath(path)}`);
}

/** `del ssl cert <name>`: frees a certificate no crt-list uses any more. */
export function delSslCert(path: string): Command {
  return makeCommand(`del ssl cert ${certPath(path)}`);
}

export interface CrtListEntry {
  /** Certificate name (absolute path). */
  cert: string;
  /** SNI filters; none = the names in the certificate. */
  sni?: readonly string[];
}

/** The crt-list line for an entry (also the on-disk format): `<cert>[ <sni>...]`. */
export function crtListLine(entry: CrtListEntry, argument = 'entry'): string {
  const sni = (entry.sni ?? []).map((s, i) => assertSniFilter(s, `${argument}.sni[${i}]`));
  return [certPath(entry.cert, `${argument}.cert`), ...sni].join(' ');
}

/** `add ssl crt-list <list> <<` with the entry as the one payload line. */
export function addSslCrtList(list: string, entry: CrtListEntry): Command {
  return makeCommand(`add ssl crt-list ${certPath(list, 'crtList')} <<`, [crtListLine(entry)]);
}

/**
 * `del ssl crt-list <list> <cert>[:<line>]`. The line number (from `show ssl crt-list -n`)
 * is needed when the certificate is listed more than once.
 */
export function delSslCrtList(list: string, cert: string, line?: number): Command {
  const suffix = line === undefined ? '' : `:${assertInt(line, 1, 1_000_000, 'line')}`;
  return makeCommand(`del ssl crt-list ${certPath(list, 'crtList')} ${certPath(cert)}${suffix}`);
}

/** `show ssl crt-list`: names of every crt-list and crt directory; with a name, its entries with line numbers (`-n`). */
export function showSslCrtList(list?: string): Command {
  return makeCommand(list === undefined ? 'show ssl crt-list' : `show ssl crt-list -n ${certPath(list, 'crtList')}`);
}

// ---------------------------------------------------------------- parsers

export interface SslCertList {
  /** The certificate with an open transaction, if any (only one at a time). */
  transaction: string | null;
  certs: string[];
}

/** `show ssl cert`: `# transaction` / `*<name>` (optional), then `# filename` and one name per line. */
export function parseSslCertList(text: string): SslCertList {
  const out: SslCertList = { transaction: null, certs: [] };
  let section: 'transaction' | 'filename' | null = null;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (line === '# transaction') section = 'transaction';
    else if (line === '# filename') section = 'filename';
    else if (section === 'transaction' && line.startsWith('*')) out.transaction = line.slice(1);
    else if (section === 'filename') out.certs.push(line);
    else throw new ReplyParseError('show ssl cert: unexpected line', { line, reply: text.slice(0, 200) });
  }
  if (section === null && text.trim() !== '') throw new ReplyParseError('show ssl cert: no "# filename" header', { reply: text.slice(0, 200) });
  return out;
}

export interface SslCertInfo {
  filename: string;
  /** Details of an open transaction (`show ssl cert *<name>`). */
  transaction: boolean;
  /** `Used` or `Unused` (listed by a crt-list / bind or not). */
  status: string;
  /** Hex, upper case, as HAProxy prints it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** Subject alternative names as printed (`DNS:a.example`, `IP Address:...`). */
  subjectAltNames: string[];
  subject: string;
  issuer: string;
  algorithm: string;
  /** SHA-1 of the leaf certificate's DER, hex upper case: equal to X509Certificate.fingerprint without colons. */
  sha1: string;
}

/** `show ssl cert <name>`: `Key: value` lines. */
export function parseSslCertInfo(text: string): SslCertInfo {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(': ');
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 2));
    else if (line.endsWith(':')) fields.set(line.slice(0, -1), '');
  }
  const need = (k: string): string => {
    const v = fields.get(k);
    if (v === undefined) throw new ReplyParseError(`show ssl cert <name>: no "${k}"`, { reply: text.slice(0, 300) });
    return v;
  };
  const date = (k: string): Date => {
    const d = new Date(need(k));
    if (Number.isNaN(d.getTime())) throw new ReplyParseError(`show ssl cert <name>: bad ${k}`, { value: fields.get(k) });
    return d;
  };
  const filename = need('Filename');
  const san = fields.get('Subject Alternative Name') ?? '';
  return {
    filename: filename.replace(/^\*/, ''),
    transaction: filename.startsWith('*'),
    status: need('Status'),
    serial: need('Serial'),
    notBefore: date('notBefore'),
    notAfter: date('notAfter'),
    subjectAltNames: san === '' ? [] : san.split(/,\s*/),
    subject: need('Subject'),
    issuer: need('Issuer'),
    algorithm: fields.get('Algorithm') ?? '',
    sha1: need('SHA1 FingerPrint'),
  };
}

/** `new ssl cert`: `New empty certificate store '<name>'!`. */
export function parseNewSslCert(reply: string, path: string): void {
  if (reply.trim() !== `New empty certificate store '${path}'!`) throw new ReplyParseError('new ssl cert: unexpected reply', { path, reply: reply.slice(0, 200) });
}

/**
 * `set ssl cert`: `Transaction created|updated for certificate <name>!`. A reply naming
 * another certificate means HAProxy put the PEM into that one's open transaction (2.6.12):
 * `SslTransactionError`, and the caller must abort that transaction.
 */
export function parseSetSslCert(reply: string, path: string): 'created' | 'updated' {
  const m = /^Transaction (created|updated) for certificate (.*)!$/.exec(reply.trim());
  if (!m) throw new ReplyParseError('set ssl cert: unexpected reply', { path, reply: reply.slice(0, 200) });
  if (m[2] !== path) {
    throw new SslTransactionError(`set ssl cert ${path}: HAProxy applied it to the open transaction of ${m[2]}`, { path, transaction: m[2], reply: reply.trim() });
  }
  return m[1] as 'created' | 'updated';
}

/** `commit ssl cert`: `Committing <name>` (dots while binds are updated), then `Success!`. */
export function parseCommitSslCert(reply: string, path: string): void {
  const t = reply.trim();
  if (!t.startsWith(`Committing ${path}`) || !/\nSuccess!$/.test(t)) throw new ReplyParseError('commit ssl cert: no "Success!"', { path, reply: t.slice(0, 300) });
}

/** `add ssl crt-list`: `Inserting certificate '<name>' in crt-list '<list>'.` then `Success!`. */
export function parseAddSslCrtList(reply: string, list: string, cert: string): void {
  const t = reply.trim();
  if (!t.startsWith(`Inserting certificate '${cert}' in crt-list '${list}'`) || !/\nSuccess!$/.test(t)) {
    throw new ReplyParseError('add ssl crt-list: no "Success!"', { list, cert, reply: t.slice(0, 300) });
  }
}

/** Replies of the one-line confirmations: `del ssl crt-list`, `del ssl cert`, `abort ssl cert`. */
export function parseSslConfirmation(reply: string, kind: 'del-crt-list' | 'del-cert' | 'abort', path: string): void {
  const t = reply.trim();
  const ok =
    kind === 'del-crt-list'
      ? t.startsWith(`Entry '${path}' deleted in crtlist `)
      : kind === 'del-cert'
        ? t === `Certificate '${path}' deleted!`
        : t === `Transaction aborted for certificate '${path}'!`;
  if (!ok) throw new ReplyParseError(`${kind}: unexpected reply`, { path, reply: t.slice(0, 200) });
}

/** `show ssl crt-list` without a name: one crt-list (or directory) per line. */
export function parseSslCrtLists(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

export interface CrtListLine {
  cert: string;
  /** Line number in HAProxy's copy of the list (stable: not renumbered after a deletion). */
  line: number;
  /** `[ ... ]` ssl options as printed, without brackets, or '' */
  options: string;
  /** SNI filters (`!name` for exclusions). */
  sni: string[];
}

/** `show ssl crt-list -n <list>`: `# <list>`, then `<cert>:<line>[ [opts]][ filters]`. */
export function parseSslCrtList(text: string): { list: string; entries: CrtListLine[] } {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const head = lines[0];
  if (!head?.startsWith('# ')) throw new ReplyParseError('show ssl crt-list -n: missing "# <list>" header', { reply: text.slice(0, 200) });
  const entries = lines.slice(1).map((line) => {
    const m = /^(\S+):(\d+)(?: \[([^\]]*)\])?((?: \S+)*)$/.exec(line);
    if (!m) throw new ReplyParseError('show ssl crt-list -n: unexpected line (was -n given?)', { line });
    return { cert: m[1] ?? '', line: Number(m[2]), options: m[3] ?? '', sni: (m[4] ?? '').split(' ').filter(Boolean) };
  });
  return { list: head.slice(2), entries };
}
