/**
 * PullImage over HTTPS: a registry whose certificate comes from a CA only
 * the per-registry ca_file names; one whose CA is in the system store
 * (OpenSSL's SSL_CERT_FILE, which Node's system store reads); the same
 * without either (refused: the system CAs do not know it); and an insecure
 * registry (any certificate).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, file, type BuiltImage } from '../helpers/image-builder.js';
import { ImageSpec, PullImageRequest } from '../../src/generated/api.js';

let trusted: TestRegistry;
let unknown: TestRegistry;
let insecure: TestRegistry;
let systemTrusted: TestRegistry;
let berth: RunningBerth;
let image: BuiltImage;

async function pull(ref: string): Promise<string> {
  const res = await berth.cri.image.pullImage(
    PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
  );
  return res.imageRef;
}

before(async () => {
  [trusted, unknown, insecure, systemTrusted] = await Promise.all([
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
  ]);
  berth = await startBerth({
    env: { SSL_CERT_FILE: systemTrusted.caFile! },
    toml: `
[image.registries."${trusted.host}"]
ca_file = "${trusted.caFile}"

[image.registries."${insecure.host}"]
insecure = true
`,
  });
  image = await buildImage({ base: false, layers: [{ entries: [file('tls', 'yes')] }] });
  await Promise.all([trusted, unknown, insecure, systemTrusted].map((r) => r.push('tls/app', 'v1', image)));
});

after(async () => {
  await berth?.cleanup();
  await Promise.all([trusted?.stop(), unknown?.stop(), insecure?.stop(), systemTrusted?.stop()]);
});

test('HTTPS with the registry CA from ca_file', async () => {
  assert.match(trusted.url, /^https:/);
  assert.equal(await pull(`${trusted.host}/tls/app:v1`), image.configDigest);
});

test('HTTPS with an unknown CA is refused as UNAVAILABLE naming the certificate problem', async () => {
  await assert.rejects(pull(`${unknown.host}/tls/app:v1`), (err: { code: number; details: string }) => {
    assert.equal(err.code, status.UNAVAILABLE, err.details);
    assert.match(err.details, new RegExp(`${unknown.host}.*certificate`, 'i'));
    return true;
  });
});

test('an insecure registry accepts any certificate', async () => {
  assert.equal(await pull(`${insecure.host}/tls/app:v1`), image.configDigest);
});

test('HTTPS with the registry CA in the system store, no ca_file', async () => {
  assert.equal(await pull(`${systemTrusted.host}/tls/app:v1`), image.configDigest);
});
