/** A throwaway test CA (openssl) issuing server and client certificates, for etcd over TLS. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execFileP } from './process.js';

/** PEM file paths for an etcd client (what `RegistryWatcher`'s `tls` option takes). */
export interface EtcdTlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface TestCa {
  /** CA certificate (PEM). */
  readonly cert: string;
  /** CA private key (PEM). */
  readonly key: string;
  /**
   * Issues a certificate signed by this CA into the CA's directory as `<name>.crt` /
   * `<name>.key`. `ips` become subjectAltName IP entries; `usage` the extendedKeyUsage.
   */
  issue(name: string, o?: { ips?: string[]; usage?: ('serverAuth' | 'clientAuth')[] }): Promise<{ cert: string; key: string }>;
}

const openssl = (args: string[]) => execFileP('openssl', args);
/** P-256 keys: generated in milliseconds, accepted by etcd (Go) and grpc-js alike. */
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A throwaway CA in `dir` (files `<name>-ca.crt` / `<name>-ca.key`), valid for a day. */
export async function createTestCa(dir: string, name = 'test'): Promise<TestCa> {
  const caCert = path.join(dir, `${name}-ca.crt`);
  const caKey = path.join(dir, `${name}-ca.key`);
  const caExt = path.join(dir, `${name}-ca.ext`);
  await writeFile(caExt, 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n');
  const caCsr = path.join(dir, `${name}-ca.csr`);
  await openssl(['req', '-new', ...EC_KEY, '-keyout', caKey, '-out', caCsr, '-subj', `/CN=haproxy-updater test CA ${name}`]);
  await openssl(['x509', '-req', '-in', caCsr, '-signkey', caKey, '-out', caCert, '-days', '1', '-extfile', caExt]);
  let serial = 1;
  return {
    cert: caCert,
    key: caKey,
    async issue(certName, o = {}) {
      const cert = path.join(dir, `${certName}.crt`);
      const key = path.join(dir, `${certName}.key`);
      const csr = path.join(dir, `${certName}.csr`);
      const ext = path.join(dir, `${certName}.ext`);
      const usage = o.usage ?? ['clientAuth'];
      const lines = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${usage.join(',')}`];
      if (o.ips?.length) lines.push(`subjectAltName=${o.ips.map((ip) => `IP:${ip}`).join(',')}`);
      await writeFile(ext, lines.join('\n') + '\n');
      await openssl(['req', '-new', ...EC_KEY, '-keyout', key, '-out', csr, '-subj', `/CN=${certName}`]);
      await openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', String(serial++), '-out', cert, '-days', '1', '-extfile', ext]);
      return { cert, key };
    },
  };
}
