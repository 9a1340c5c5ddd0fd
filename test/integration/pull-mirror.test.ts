/**
 * Registry mirrors: tried in order before the registry; mirror_only never
 * falls back to the registry itself. Two docker-registry instances stand for
 * the registry and its mirror; a mirror-only docker.io proves short names
 * resolve through mirrors without any traffic leaving 127.0.0.1.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, file, type BuiltImage } from '../helpers/image-builder.js';
import { ImageSpec, ImageStatusRequest, PullImageRequest } from '../../src/generated/api.js';

let origin: TestRegistry;
let mirror: TestRegistry;
let fallbackOrigin: TestRegistry;
let berth: RunningBerth;
let fromOrigin: BuiltImage;
let fromMirror: BuiltImage;

const grpcCode = (code: number, pattern?: RegExp) => (err: { code: number; details: string }) => {
  assert.equal(err.code, code, `${status[err.code]}: ${err.details}`);
  if (pattern) assert.match(err.details, pattern);
  return true;
};

async function pull(ref: string): Promise<string> {
  const res = await berth.cri.image.pullImage(
    PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
  );
  return res.imageRef;
}

before(async () => {
  [origin, mirror, fallbackOrigin] = await Promise.all([
    startRegistry({ mode: 'open' }),
    startRegistry({ mode: 'open' }),
    startRegistry({ mode: 'open' }),
  ]);
  // The mirror is listed twice behind a dead one: order matters, failures move on.
  berth = await startBerth({
    toml: `
[image]
unqualified_search_registries = ["${origin.host}", "docker.io"]

[image.registries."${origin.host}"]
insecure = true
mirrors = ["${mirror.host}"]

[image.registries."${fallbackOrigin.host}"]
insecure = true
mirror_only = true
mirrors = ["${mirror.host}"]

[image.registries."docker.io"]
mirror_only = true
mirrors = ["${mirror.host}"]

[image.registries."${mirror.host}"]
insecure = true
`,
  });
  fromOrigin = await buildImage({ base: false, layers: [{ entries: [file('from', 'origin')] }] });
  fromMirror = await buildImage({ base: false, layers: [{ entries: [file('from', 'mirror')] }] });
});

after(async () => {
  await berth?.cleanup();
  await Promise.all([origin?.stop(), mirror?.stop(), fallbackOrigin?.stop()]);
});

test('the mirror is tried first; the registry answers what the mirror lacks', async () => {
  await origin.push('app/web', 'v1', fromOrigin);
  await mirror.push('app/web', 'v1', fromMirror);
  const ref = await pull(`${origin.host}/app/web:v1`);
  assert.equal(ref, fromMirror.configDigest);
  // The image keeps the registry's name, not the mirror's.
  const st = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }) }),
  );
  assert.deepEqual(st.image?.repoTags, [`${origin.host}/app/web:v1`]);
  assert.ok(
    !(await origin.requests()).some((r) => r.method === 'GET' && r.path.startsWith('/v2/app/web/')),
    'origin not asked',
  );

  await origin.push('app/only-origin', 'v1', fromOrigin);
  assert.equal(await pull(`${origin.host}/app/only-origin:v1`), fromOrigin.configDigest);
  assert.ok(
    (await mirror.requests()).some((r) => r.path === '/v2/app/only-origin/manifests/v1' && r.status === 404),
  );
});

test('mirror_only: the registry itself is never contacted', async () => {
  await fallbackOrigin.push('app/db', 'v1', fromOrigin);
  await assert.rejects(pull(`${fallbackOrigin.host}/app/db:v1`), grpcCode(status.NOT_FOUND, /mirror/));
  assert.deepEqual(
    (await fallbackOrigin.requests()).filter((r) => r.method === 'GET' && r.path.startsWith('/v2/app/')),
    [],
  );
  await mirror.push('app/db', 'v1', fromMirror);
  assert.equal(await pull(`${fallbackOrigin.host}/app/db:v1`), fromMirror.configDigest);
});

test('a short name tries each search registry in order: docker.io through its mirror-only mirror (library/ added)', async () => {
  await mirror.push('library/busybox', '1.36', fromMirror);
  const ref = await pull('busybox:1.36');
  assert.equal(ref, fromMirror.configDigest);
  const st = await berth.cri.image.imageStatus(
    ImageStatusRequest.fromPartial({
      image: ImageSpec.fromPartial({ image: 'docker.io/library/busybox:1.36' }),
    }),
  );
  assert.ok(st.image?.repoTags.includes('docker.io/library/busybox:1.36'));
});

test('a short name found in no search registry: NOT_FOUND naming every candidate', async () => {
  await assert.rejects(
    pull('nothing/here:v1'),
    grpcCode(
      status.NOT_FOUND,
      new RegExp(`${origin.host}/nothing/here:v1: .*not found.*docker\\.io/nothing/here:v1: .*not found`),
    ),
  );
});
