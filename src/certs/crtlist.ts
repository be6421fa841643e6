/**
 * The crt-list file, pure. HAProxy reads it at (re)load; the updater keeps it in step with
 * what it changed at runtime so that a reload serves the same certificates. The first
 * line's certificate is the bind's default (served when no SNI matches), so a pinned
 * default certificate is always written first.
 */
import { ReplyParseError } from '../errors.js';
import { crtListLine, type CrtListEntry } from '../runtime/ssl.js';

/** The file's text: the default (if any) first, then the entries sorted by certificate path. */
export function renderCrtList(entries: readonly CrtListEntry[], defaultCert?: string): string {
  const sorted = [...entries].filter((e) => e.cert !== defaultCert).sort((a, b) => (a.cert < b.cert ? -1 : a.cert > b.cert ? 1 : 0));
  const all = defaultCert === undefined ? sorted : [{ cert: defaultCert }, ...sorted];
  return all.map((e, i) => crtListLine(e, `entries[${i}]`) + '\n').join('');
}

/** Reads a crt-list file written by `renderCrtList` (comments and blank lines skipped; ssl options refused). */
export function parseCrtListFile(text: string): CrtListEntry[] {
  const out: CrtListEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.includes('[')) throw new ReplyParseError('crt-list: ssl options are not supported in a list the updater keeps', { line });
    const [cert, ...sni] = line.split(/\s+/);
    out.push(sni.length > 0 ? { cert: cert ?? '', sni } : { cert: cert ?? '' });
  }
  return out;
}
