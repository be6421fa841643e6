/**
 * The files HAProxy needs before the first certificate pass. HAProxy 2.6 to 3.4 all refuse
 * an ssl bind whose crt-list is empty ("no SSL certificate specified for bind"), and the
 * `--certs` directory may be empty or hold only bad files, so the updater keeps a
 * self-signed default certificate of its own in the state dir, pinned as the crt-list's
 * first line: it answers when no SNI matches and is never changed at runtime.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import { logger } from '../log.js';
import { atomicWrite } from '../reload/files.js';
import { parseCrtListFile, renderCrtList } from './crtlist.js';
import { validatePem } from './pem.js';

const log = logger('certs');

/** Where `run --certs` keeps its certificate files, all under the state dir. */
export function certPaths(stateDir: string, crtList: string): { crtList: string; storeDir: string; defaultCert: string } {
  return { crtList, storeDir: path.join(stateDir, 'certs'), defaultCert: path.join(stateDir, 'default-cert.pem') };
}

/**
 * Makes sure `defaultCert` exists (generated with openssl when missing or unusable) and that
 * `crtList` exists with it as first line, keeping entries of an earlier run whose copy is
 * still on disk (HAProxy loads them at start; CertSync then adopts them by fingerprint).
 */
export async function prepareCertFiles(o: { crtList: string; defaultCert: string; openssl?: string; now?: Date }): Promise<void> {
  const current = await readFile(o.defaultCert, 'utf8').catch(() => null);
  if (current === null || !validatePem(current, o.now ?? new Date()).ok) await generateDefault(o.defaultCert, o.openssl ?? 'openssl');
  const previous = await readFile(o.crtList, 'utf8').catch(() => null);
  let kept: { cert: string }[] = [];
  if (previous !== null) {
    try {
      kept = parseCrtListFile(previous).filter((e) => e.cert !== o.defaultCert && existsSync(e.cert));
    } catch (err) {
      log.warn({ err, crtList: o.crtList }, 'crt-list unreadable; starting from the default certificate alone');
    }
  }
  const text = renderCrtList(kept, o.defaultCert);
  if (text !== previous) await atomicWrite(o.crtList, text);
}

/** A self-signed P-256 certificate for `default.invalid` (a name no client asks for), 10 years. */
async function generateDefault(file: string, openssl: string): Promise<void> {
  const tmp = await mkdtemp(path.join(path.dirname(file), '.default-cert-'));
  try {
    const key = path.join(tmp, 'key.pem');
    const cert = path.join(tmp, 'cert.pem');
    const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '3650', '-subj', '/CN=default.invalid'];
    await new Promise<void>((resolve, reject) => {
      execFile(openssl, args, { timeout: 30_000, encoding: 'utf8' }, (err, _out, errOut) => {
        if (!err) return resolve();
        reject(
          new ConfigError(
            `--certs: cannot generate the default certificate ${file} with ${openssl} (${errOut.trim() || err.message}); install openssl or put a PEM (certificate + key) there`,
            { flag: 'certs', file },
            { cause: err },
          ),
        );
      });
    });
    await atomicWrite(file, (await readFile(cert, 'utf8')) + (await readFile(key, 'utf8')), 0o600);
    log.info({ file }, 'generated the self-signed default certificate (served when no SNI matches)');
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
