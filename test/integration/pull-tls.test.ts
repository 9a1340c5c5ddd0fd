/**
 * PullImage over HTTPS: a registry whose certificate comes from a CA only
 * the per-registry ca_file names; one whose CA is in the system store
 * (OpenSSL's SSL_CERT_FILE, which Node's system store reads); the same
 * without either (refused: the system CAs do not know it); an insecure
 * registry (any certificate); and a ca_file whose content is replaced, which
 * SIGHUP makes berth read again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, file, type BuiltImage } from '../helpers/image-builder.js';
import { ImageSpec, PullImageRequest } from '../../src/generated/api.js';

let trusted: TestRegistry;
let unknown: TestRegistry;
let insecure: TestRegistry;
let systemTrusted: TestRegistry;
let rotated: TestRegistry;
/** rotated's ca_file: the wrong CA first. */
let rotatedCaFile: string;
let berth: RunningBerth;
let image: BuiltImage;

async function pull(ref: string): Promise<string> {
  const res = await berth.cri.image.pullImage(
    PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
  );
  return res.imageRef;
}

before(async () => {
  [trusted, unknown, insecure, systemTrusted, rotated] = await Promise.all([
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
    startRegistry({ tls: true }),
  ]);
  rotatedCaFile = join(await mkdtemp(join(tmpdir(), 'berth-ca-')), 'ca.crt');
  await copyFile(unknown.caFile!, rotatedCaFile);
  berth = await startBerth({
    env: { SSL_CERT_FILE: systemTrusted.caFile! },
    toml: `
[image.registries."${rotated.host}"]
ca_file = "${rotatedCaFile}"

[image.registries."${trusted.host}"]
ca_file = "${trusted.caFile}"

[image.registries."${insecure.host}"]
insecure = true
`,
  });
  image = await buildImage({ base: false, layers: [{ entries: [file('tls', 'yes')] }] });
  await Promise.all(
    [trusted, unknown, insecure, systemTrusted, rotated].map((r) => r.push('tls/app', 'v1', image)),
  );
});

after(async () => {
  await berth?.cleanup();
  await Promise.all([trusted, unknown, insecure, systemTrusted, rotated].map((r) => r?.stop()));
  if (rotatedCaFile) await rm(dirname(rotatedCaFile), { recursive: true, force: true });
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

test('a ca_file replaced on disk is read again on SIGHUP', async () => {
  await assert.rejects(pull(`${rotated.host}/tls/app:v1`), (err: { code: number; details: string }) => {
    assert.equal(err.code, status.UNAVAILABLE, err.details);
    return true;
  });
  await copyFile(rotated.caFile!, rotatedCaFile);
  // Without a reload the pool made for the first pull, with the old CA, is kept.
  await assert.rejects(pull(`${rotated.host}/tls/app:v1`));
  const reloads = (berth.logs().match(/configuration reloaded/g) ?? []).length;
  berth.process.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while ((berth.logs().match(/configuration reloaded/g) ?? []).length === reloads && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(await pull(`${rotated.host}/tls/app:v1`), image.configDigest);
});
