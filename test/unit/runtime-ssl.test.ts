/**
 * ssl cert / crt-list family: parsers on replies captured from HAProxy 2.6.12
 * (test/fixtures/runtime/ssl-*.txt, err-ssl-*.txt, err-crt-list-*.txt; paths rewritten to
 * /tmp/hu-tls), reply classification, and the payload path: PEM lines only, no empty line,
 * bounded by tune.bufsize, nothing smuggled, and nothing written when refused.
 */
import { test, after } from 'node:test';
import { readdir } from 'node:fs/promises';
import assert from 'node:assert/strict';
import * as E from '../../src/errors.js';
import * as R from '../../src/runtime/index.js';
import { fixture, startFakeSocket } from '../fixtures/runtime/fake-socket.js';

const fixtures = new Map<string, string>();
for (const f of await readdir(new URL('../fixtures/runtime/', import.meta.url))) {
  if (/^(ssl-|err-ssl-|err-crt-list-)/.test(f)) fixtures.set(f.replace(/\.txt$/, ''), await fixture(f.replace(/\.txt$/, '')));
}
/** A captured reply, synchronously (all loaded above). */
function fx(name: string): string {
  const v = fixtures.get(name);
  if (v === undefined) throw new Error(`no fixture ${name}`);
  return v;
}

const D = '/tmp/hu-tls/certs';
const L = '/tmp/hu-tls/crt.list';
const one = `${D}/one.test.pem`;
const two = `${D}/two.test.pem`;

test('show ssl cert: names, and the one open transaction', async () => {
  assert.deepEqual(R.parseSslCertList(await fixture('ssl-show-cert-list')), { transaction: null, certs: [`${D}/default.test.pem`] });
  assert.deepEqual(R.parseSslCertList(await fixture('ssl-show-cert-list-transaction')), {
    transaction: one,
    certs: [`${D}/default.test.pem`, one],
  });
  assert.throws(() => R.parseSslCertList('Unknown command\n'), E.ReplyParseError);
});

test('show ssl cert <name>: serial, dates, SANs, fingerprint; the transaction view is marked', async () => {
  const info = R.parseSslCertInfo(await fixture('ssl-show-cert-transaction'));
  assert.deepEqual(info, {
    filename: one,
    transaction: true,
    status: 'Unused',
    serial: '172DC47BD059222FC7947B496D7316B522B8F38B',
    notBefore: new Date('2026-12-02T10:18:25Z'),
    notAfter: new Date('2026-12-03T10:18:25Z'),
    subjectAltNames: ['DNS:one.test'],
    subject: '/CN=one.test',
    issuer: '/CN=one.test',
    algorithm: 'EC256',
    sha1: 'D0F86B8154910605AFB01030B39E648576B67CCE',
  });
  // This capture is the 2.6.12 single-transaction pitfall at work: `set ssl cert default…`
  // went into one.test's open transaction, so after the commit one.test.pem holds default.test.
  const committed = R.parseSslCertInfo(await fixture('ssl-show-cert'));
  assert.equal(committed.transaction, false);
  assert.equal(committed.status, 'Used');
  assert.deepEqual(committed.subjectAltNames, ['DNS:default.test']);
  assert.throws(() => R.parseSslCertInfo(fx('err-ssl-show-cert-unknown')), E.ReplyParseError);
});

test('success replies of new / set / commit / add / del / abort parse; mismatched names do not', async () => {
  R.parseNewSslCert(await fixture('ssl-new-cert'), one);
  assert.equal(R.parseSetSslCert(await fixture('ssl-set-cert-created'), one), 'created');
  assert.equal(R.parseSetSslCert(await fixture('ssl-set-cert-updated'), one), 'updated');
  R.parseCommitSslCert(await fixture('ssl-commit-cert'), one);
  R.parseCommitSslCert(`Committing ${one}.....\nSuccess!\n`, one);
  R.parseAddSslCrtList(await fixture('ssl-add-crt-list-payload'), L, one);
  R.parseSslConfirmation(await fixture('ssl-del-crt-list'), 'del-crt-list', one);
  R.parseSslConfirmation(await fixture('ssl-del-cert'), 'del-cert', one);
  R.parseSslConfirmation(await fixture('ssl-abort-cert'), 'abort', two);

  assert.throws(() => R.parseNewSslCert(fx('ssl-new-cert'), two), E.ReplyParseError);
  assert.throws(() => R.parseCommitSslCert(fx('err-ssl-commit-mismatch'), two), E.ReplyParseError);
  assert.throws(() => R.parseAddSslCrtList(fx('ssl-add-crt-list-payload'), L, two), E.ReplyParseError);
  assert.throws(() => R.parseSslConfirmation(fx('ssl-del-cert'), 'del-cert', two), E.ReplyParseError);
  // 2.6.12: `set ssl cert default…` while one.test's transaction was open answered this.
  const other = await fixture('err-ssl-transaction-other');
  assert.throws(
    () => R.parseSetSslCert(other, `${D}/default.test.pem`),
    (err: unknown) => err instanceof E.SslTransactionError && err.context.transaction === one,
  );
});

test('show ssl crt-list: list names, and entries with line numbers and SNI filters', async () => {
  assert.deepEqual(R.parseSslCrtLists(await fixture('ssl-show-crt-list-all')), [L]);
  assert.deepEqual(R.parseSslCrtList(await fixture('ssl-show-crt-list-n')), {
    list: L,
    entries: [
      { cert: `${D}/default.test.pem`, line: 1, options: '', sni: [] },
      { cert: one, line: 2, options: '', sni: ['one.test'] },
    ],
  });
  // Line numbers are not renumbered after a deletion (line 2 was deleted here).
  assert.deepEqual(
    R.parseSslCrtList(await fixture('ssl-show-crt-list-n-dup')).entries.map((e) => e.line),
    [1, 3],
  );
  const withOpts = R.parseSslCrtList('# /l\n/c/e.pem:4 [verify none allow-0rtt] localhost !www.test1.com\n');
  assert.deepEqual(withOpts.entries[0], { cert: '/c/e.pem', line: 4, options: 'verify none allow-0rtt', sni: ['localhost', '!www.test1.com'] });
  // Without -n the lines have no number: the parser says so instead of guessing.
  assert.throws(() => R.parseSslCrtList(fx('ssl-show-crt-list')), E.ReplyParseError);
});

test('every ssl / crt-list refusal captured from 2.6.12 maps to its class', async () => {
  const table: Array<[string, Function, string]> = [
    ['err-ssl-cert-exists', E.SslCertExistsError, 'E_SSL_CERT_EXISTS'],
    ['err-ssl-cert-in-use', E.SslCertInUseError, 'E_SSL_CERT_IN_USE'],
    ['err-ssl-cert-unknown-del', E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND'],
    ['err-ssl-show-cert-unknown', E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND'],
    ['err-ssl-set-not-referenced', E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND'],
    ['err-crt-list-cert-unknown', E.SslCertNotFoundError, 'E_SSL_CERT_NOT_FOUND'],
    ['err-ssl-set-unreadable', E.SslCertRefusedError, 'E_SSL_CERT_REFUSED'],
    ['err-ssl-commit-mismatch', E.SslCertRefusedError, 'E_SSL_CERT_REFUSED'],
    ['err-ssl-commit-no-key', E.SslCertRefusedError, 'E_SSL_CERT_REFUSED'],
    ['err-ssl-no-transaction', E.SslTransactionError, 'E_SSL_TRANSACTION'],
    ['err-ssl-commit-no-transaction', E.SslTransactionError, 'E_SSL_TRANSACTION'],
    ['err-ssl-commit-other', E.SslTransactionError, 'E_SSL_TRANSACTION'],
    ['err-crt-list-unknown', E.CrtListError, 'E_CRT_LIST'],
    ['err-crt-list-show-unknown', E.CrtListError, 'E_CRT_LIST'],
    ['err-crt-list-entry-empty', E.CrtListError, 'E_CRT_LIST'],
    ['err-crt-list-ambiguous', E.CrtListError, 'E_CRT_LIST'],
  ];
  for (const [name, cls, code] of table) {
    const err = E.classifyReply(await fixture(name), 'cmd');
    assert.ok(err instanceof cls, `${name} → ${err?.name}`);
    assert.equal(err.code, code, name);
    assert.equal(err.recoverable, false, name);
  }
  for (const ok of ['ssl-new-cert', 'ssl-set-cert-created', 'ssl-commit-cert', 'ssl-add-crt-list-payload', 'ssl-del-crt-list', 'ssl-del-cert', 'ssl-abort-cert', 'ssl-show-cert']) {
    assert.equal(E.classifyReply(await fixture(ok), 'cmd'), null, ok);
  }
});

test('builders write the exact command lines', () => {
  assert.equal(R.showSslCerts().text, 'show ssl cert');
  assert.equal(R.showSslCert(one).text, `show ssl cert ${one}`);
  assert.equal(R.showSslCert(one, { transaction: true }).text, `show ssl cert *${one}`);
  assert.equal(R.newSslCert(one).text, `new ssl cert ${one}`);
  assert.equal(R.commitSslCert(one).text, `commit ssl cert ${one}`);
  assert.equal(R.abortSslCert(one).text, `abort ssl cert ${one}`);
  assert.equal(R.delSslCert(one).text, `del ssl cert ${one}`);
  assert.equal(R.delSslCrtList(L, one).text, `del ssl crt-list ${L} ${one}`);
  assert.equal(R.delSslCrtList(L, one, 3).text, `del ssl crt-list ${L} ${one}:3`);
  assert.equal(R.showSslCrtList().text, 'show ssl crt-list');
  assert.equal(R.showSslCrtList(L).text, `show ssl crt-list -n ${L}`);
  const add = R.addSslCrtList(L, { cert: one, sni: ['one.test', '*.one.test'] });
  assert.equal(add.text, `add ssl crt-list ${L} <<`);
  assert.deepEqual(add.payload, [`${one} one.test *.one.test`]);
  const set = R.setSslCert(one, PEM);
  assert.equal(set.text, `set ssl cert ${one} <<`);
  assert.deepEqual(set.payload, PEM);
});

// Shape of a real PEM payload (content irrelevant to the command layer).
const PEM = ['-----BEGIN CERTIFICATE-----', 'MIIBfTCCASOgAwIBAgIUZ3Vlc3Q=', '-----END CERTIFICATE-----', '-----BEGIN PRIVATE KEY-----', 'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49', '-----END PRIVATE KEY-----'];

const fake = await startFakeSocket({
  respond: (sock, soFar) => {
    // Only one command is ever let through (the last test): two prompts frame its reply.
    if (soFar.endsWith('quit\n')) sock.end('\n> '.repeat(2));
  },
});
after(() => fake.close());

test('injection: paths, SNI filters and PEM lines cannot smuggle a command; nothing reaches the socket', async () => {
  const client = new R.RuntimeClient({ path: fake.path }, { timeoutMs: 1000 });
  const badPaths = [`${one}; show info`, `${one}\nshow info`, 'relative.pem', `${D}/../x.pem`, `${one} <<`, `${one}#`, `${D}/a b.pem`, ''];
  const builders: Array<(p: string) => R.Command> = [
    (p) => R.showSslCert(p),
    (p) => R.newSslCert(p),
    (p) => R.setSslCert(p, PEM),
    (p) => R.commitSslCert(p),
    (p) => R.abortSslCert(p),
    (p) => R.delSslCert(p),
    (p) => R.delSslCrtList(p, one),
    (p) => R.delSslCrtList(L, p),
    (p) => R.addSslCrtList(p, { cert: one }),
    (p) => R.addSslCrtList(L, { cert: p }),
    (p) => R.showSslCrtList(p),
  ];
  for (const b of builders) for (const p of badPaths) assert.throws(() => b(p), E.InvalidArgumentError, `${b.toString()} ${JSON.stringify(p)}`);
  for (const sni of ['a.test b.test', 'a.test\nshow info', '[verify none]', 'A.TEST', 'a;b', '!a.test', '']) {
    assert.throws(() => R.addSslCrtList(L, { cert: one, sni: [sni] }), E.InvalidArgumentError, JSON.stringify(sni));
  }
  assert.throws(() => R.delSslCrtList(L, one, 0), E.InvalidArgumentError);
  const badPem: string[][] = [
    [...PEM.slice(0, 3), '', 'show info', ...PEM.slice(3)], // an empty line would end the payload
    [...PEM.slice(0, 3), 'set server b/s1 state maint', ...PEM.slice(3)],
    [...PEM.slice(0, 3), 'show info; show stat', ...PEM.slice(3)],
    [PEM[0]!, 'MIIB\nshow info', ...PEM.slice(2)],
    [PEM[0]!, 'MIIB\rshow info', ...PEM.slice(2)],
    [PEM[0]!, 'Proc-Type: 4,ENCRYPTED', ...PEM.slice(1)],
    [PEM[0]!, 'MIIB MIIB', ...PEM.slice(1)],
    [],
  ];
  for (const lines of badPem) assert.throws(() => R.setSslCert(one, lines), E.InvalidArgumentError, JSON.stringify(lines));
  // Forged commands (bypassing the builders) are refused centrally, before a connection.
  const forged = (text: string, payload?: string[]) => ({ text, payload }) as unknown as R.Command;
  const forgedBad = [
    forged(`set ssl cert ${one} <<`, [...PEM.slice(0, 3), '', 'show info']),
    forged(`set ssl cert ${one} <<`, ['show info']),
    forged(`show info <<`, PEM), // payload on a command that takes none
    forged(`set map ${L} k v <<`, ['x']),
    forged(`add ssl crt-list ${L} <<`, [one, `${two}`]), // one line only
    forged(`add ssl crt-list ${L} <<`, [`${one}\nshow info`]),
    forged(`set ssl cert ${one}`, PEM),
    forged(`set ssl cert ${one} <<`),
  ];
  for (const cmd of forgedBad) {
    assert.throws(() => R.assertSafeCommand(cmd), E.InvalidArgumentError, JSON.stringify(cmd));
    await assert.rejects(() => client.batch([R.showInfo(), cmd]), E.InvalidArgumentError);
  }
  assert.equal(fake.connections(), 0);
  assert.equal(fake.bytes(), 0);
});

test('payload size: refused unsent above tune.bufsize - 1 kB, with the limit named; a larger bufsize lets it through', async () => {
  const big = [PEM[0]!, ...Array.from({ length: 300 }, () => 'A'.repeat(64)), ...PEM.slice(2)]; // ~19.6 kB
  assert.throws(
    () => R.setSslCert(one, big),
    (err: unknown) => err instanceof E.PayloadTooLargeError && err.context.limit === 16384 - 1024 && (err.context.bytes as number) > 19_000,
  );
  const cmd = R.setSslCert(one, big, { bufsize: 32768 });
  // Built for a 32 kB buffer, but a client told HAProxy has the default refuses it unsent.
  const small = new R.RuntimeClient({ path: fake.path }, { timeoutMs: 1000 });
  await assert.rejects(() => small.batch([cmd]), E.PayloadTooLargeError);
  await assert.rejects(() => R.exchange({ path: fake.path }, [cmd]), E.PayloadTooLargeError);
  assert.equal(fake.connections(), 0);
  // The boundary: limit bytes go, limit + 1 do not.
  const limit = R.payloadLimit();
  const header = `set ssl cert ${one} <<`.length + 1;
  const fill = (n: number) => {
    const lines = [PEM[0]!];
    let left = n - header - (PEM[0]!.length + 1) - (PEM[2]!.length + 1);
    while (left > 0) {
      const l = Math.min(64, left - 1);
      lines.push('A'.repeat(l));
      left -= l + 1;
    }
    lines.push(PEM[2]!);
    return lines;
  };
  assert.equal(R.commandBytes(R.setSslCert(one, fill(limit))), limit);
  assert.throws(() => R.setSslCert(one, fill(limit + 1)), E.PayloadTooLargeError);
  // A client that knows HAProxy runs with tune.bufsize 32768 sends it.
  const large = new R.RuntimeClient({ path: fake.path }, { timeoutMs: 1000, bufsize: 32768 });
  const [res] = await large.batch([cmd]);
  assert.ok(res?.ok);
  assert.equal(fake.connections(), 1);
  assert.ok(fake.text().includes(`set ssl cert ${one} <<\n${big.join('\n')}\n\n`), 'payload ended by exactly one empty line');
});
