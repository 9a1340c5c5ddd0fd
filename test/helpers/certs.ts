/**
 * Self-signed certificates for tests, made by openssl: one key and
 * certificate pair, usable as its own trust anchor.
 */
import { join } from 'node:path';
import { runChecked } from '../../src/util/run.js';

export interface SelfSigned {
  key: string;
  cert: string;
}

/** Writes `<name>.key` and `<name>.crt` into `dir` and returns their paths. */
export async function selfSignedCert(
  dir: string,
  options: { commonName: string; ipAddress?: string; keyType?: 'rsa' | 'ec'; days?: number; name?: string },
): Promise<SelfSigned> {
  const name = options.name ?? 'self-signed';
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const keyArgs =
    options.keyType === 'ec'
      ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']
      : ['-newkey', 'rsa:2048'];
  const san = options.ipAddress ? ['-addext', `subjectAltName=IP:${options.ipAddress}`] : [];
  await runChecked('/usr/bin/openssl', [
    'req',
    '-x509',
    ...keyArgs,
    '-nodes',
    '-days',
    String(options.days ?? 1),
    '-subj',
    `/CN=${options.commonName}`,
    ...san,
    '-keyout',
    key,
    '-out',
    cert,
  ]);
  return { key, cert };
}
