/**
 * PEM validation, pure: what `set ssl cert` will get, checked before anything is sent.
 * A file must hold a certificate (leaf first, then its chain in order) and exactly one
 * unencrypted private key that matches the leaf, and the leaf must be valid now. Text
 * outside the PEM blocks (openssl's "Bag Attributes", comments) is dropped, and so are
 * blank lines, since an empty line ends a Runtime API payload.
 */
import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';

/** Why a file was refused; `retry` marks content that a writer may still be completing. */
export type PemProblem =
  | 'empty'
  | 'truncated'
  | 'no-certificate'
  | 'no-private-key'
  | 'several-private-keys'
  | 'encrypted-key'
  | 'unsupported-block'
  | 'bad-certificate'
  | 'bad-private-key'
  | 'key-mismatch'
  | 'chain-order'
  | 'expired'
  | 'not-yet-valid';

export interface PemOk {
  ok: true;
  /** The payload lines for `set ssl cert` (blocks only, no blank lines). */
  lines: string[];
  /** sha256 of the normalised PEM: what "changed" means. */
  hash: string;
  /** Leaf SHA-1 fingerprint, hex upper case without colons (as `show ssl cert` prints it). */
  sha1: string;
  /** Leaf serial, hex upper case. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** DNS names: the subjectAltName DNS entries, or the CN when there are none. */
  names: string[];
  /** Certificates in the file (leaf + chain). */
  chainLength: number;
}

export interface PemBad {
  ok: false;
  problem: PemProblem;
  /** For people: what is wrong, one sentence. */
  reason: string;
}

export type PemResult = PemOk | PemBad;

const KEY_TYPES = new Set(['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY']);
/** Blocks HAProxy also reads from a certificate file and that are passed along unchanged. */
const EXTRA_TYPES = new Set(['DH PARAMETERS', 'EC PARAMETERS']);

const bad = (problem: PemProblem, reason: string): PemBad => ({ ok: false, problem, reason });

/** Problems that a writer still writing the file would cause: worth a second look later. */
export function mayBeIncomplete(problem: PemProblem): boolean {
  return problem === 'empty' || problem === 'truncated' || problem === 'no-private-key' || problem === 'no-certificate' || problem === 'bad-certificate' || problem === 'bad-private-key';
}

/** Validates a PEM file's text. `now` decides expiry (default: the current time). */
export function validatePem(text: string, now: Date = new Date()): PemResult {
  const lines = text.split(/\r?\n/).map((l) => l.trimEnd());
  if (lines.every((l) => l === '')) return bad('empty', 'the file is empty');
  const blocks: Array<{ type: string; lines: string[] }> = [];
  let open: { type: string; lines: string[] } | null = null;
  for (const line of lines) {
    const begin = /^-----BEGIN ([A-Z0-9 ]+)-----$/.exec(line);
    const end = /^-----END ([A-Z0-9 ]+)-----$/.exec(line);
    if (open) {
      if (begin) return bad('truncated', `${open.type} block not ended before the next BEGIN line`);
      if (line === '') continue;
      open.lines.push(line);
      if (end) {
        if (end[1] !== open.type) return bad('truncated', `${open.type} block ended by END ${end[1] ?? ''}`);
        blocks.push(open);
        open = null;
      } else if (/^Proc-Type:|^DEK-Info:/.test(line)) {
        return bad('encrypted-key', 'the private key is encrypted (HAProxy cannot ask for its passphrase at runtime)');
      } else if (!/^[A-Za-z0-9+/]{1,76}={0,2}$/.test(line)) {
        return bad(open.type === 'CERTIFICATE' ? 'bad-certificate' : 'bad-private-key', `${open.type} block has a line that is not base64`);
      }
    } else if (begin) {
      open = { type: begin[1] ?? '', lines: [line] };
    } else if (end) {
      return bad('truncated', `END ${end[1] ?? ''} without BEGIN`);
    }
  }
  if (open) return bad('truncated', `${open.type} block has no END line (file truncated or still being written)`);
  for (const b of blocks) {
    if (b.type === 'ENCRYPTED PRIVATE KEY') return bad('encrypted-key', 'the private key is encrypted (HAProxy cannot ask for its passphrase at runtime)');
    if (b.type !== 'CERTIFICATE' && !KEY_TYPES.has(b.type) && !EXTRA_TYPES.has(b.type)) return bad('unsupported-block', `unsupported PEM block ${b.type}`);
  }
  const certBlocks = blocks.filter((b) => b.type === 'CERTIFICATE');
  const keyBlocks = blocks.filter((b) => KEY_TYPES.has(b.type));
  if (certBlocks.length === 0) return bad('no-certificate', 'no CERTIFICATE block');
  if (keyBlocks.length === 0) return bad('no-private-key', 'no PRIVATE KEY block');
  if (keyBlocks.length > 1) return bad('several-private-keys', `${keyBlocks.length} private keys; one is expected`);

  const certs: X509Certificate[] = [];
  for (const [i, b] of certBlocks.entries()) {
    try {
      certs.push(new X509Certificate(b.lines.join('\n') + '\n'));
    } catch (err) {
      return bad('bad-certificate', `certificate ${i + 1} cannot be parsed (${(err as Error).message})`);
    }
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyBlocks[0]!.lines.join('\n') + '\n');
  } catch (err) {
    return bad('bad-private-key', `the private key cannot be parsed (${(err as Error).message})`);
  }
  const leaf = certs[0]!;
  if (!leaf.checkPrivateKey(key)) return bad('key-mismatch', 'the private key does not match the first certificate');
  for (let i = 1; i < certs.length; i++) {
    if (!certs[i - 1]!.checkIssued(certs[i]!)) return bad('chain-order', `certificate ${i + 1} did not issue certificate ${i} (the chain must follow the leaf in order)`);
  }
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (now.getTime() > notAfter.getTime()) return bad('expired', `the certificate expired on ${notAfter.toISOString()}`);
  if (now.getTime() < notBefore.getTime()) return bad('not-yet-valid', `the certificate is valid only from ${notBefore.toISOString()}`);

  // Leaf first, then chain, then key, then the rest: the order HAProxy documents.
  const ordered = [...certBlocks, ...keyBlocks, ...blocks.filter((b) => EXTRA_TYPES.has(b.type))];
  const out = ordered.flatMap((b) => b.lines);
  return {
    ok: true,
    lines: out,
    hash: createHash('sha256').update(out.join('\n')).digest('hex'),
    sha1: leaf.fingerprint.replaceAll(':', '').toUpperCase(),
    serial: leaf.serialNumber.toUpperCase(),
    notBefore,
    notAfter,
    names: certNames(leaf),
    chainLength: certs.length,
  };
}

/** DNS names a certificate answers for: subjectAltName DNS entries, else its CN. */
export function certNames(cert: X509Certificate): string[] {
  const san = (cert.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  if (san.length > 0) return san;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}
