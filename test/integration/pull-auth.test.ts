/**
 * PullImage against registries that want credentials: htpasswd Basic auth
 * and Bearer tokens from a realm the test serves (Basic credentials,
 * identity_token as OAuth2 refresh token, registry_token sent as is).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { startBerth, type RunningBerth } from '../helpers/berth-process.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, file, type BuiltImage } from '../helpers/image-builder.js';
import { AuthConfig, ImageSpec, PullImageRequest } from '../../src/generated/api.js';

let basic: TestRegistry;
let token: TestRegistry;
let berth: RunningBerth;
let image: BuiltImage;

const USER = 'kube';
const PASSWORD = 'pa55:word with spaces';
const IDENTITY = 'refresh-me-0123456789';

const grpcCode = (code: number, pattern?: RegExp) => (err: { code: number; details: string }) => {
  assert.equal(err.code, code, `${status[err.code]}: ${err.details}`);
  if (pattern) assert.match(err.details, pattern);
  // Credentials never show up in errors.
  assert.doesNotMatch(err.details, /pa55|refresh-me/);
  return true;
};

async function pull(ref: string, auth?: Partial<AuthConfig>): Promise<string> {
  const res = await berth.cri.image.pullImage(
    PullImageRequest.fromPartial({ image: ImageSpec.fromPartial({ image: ref }), ...(auth ? { auth } : {}) }),
  );
  return res.imageRef;
}

before(async () => {
  basic = await startRegistry({ mode: 'htpasswd', username: USER, password: PASSWORD });
  token = await startRegistry({ mode: 'token', username: USER, password: PASSWORD, identityToken: IDENTITY });
  berth = await startBerth({
    toml: `
[image.registries."${basic.host}"]
insecure = true

[image.registries."${token.host}"]
insecure = true
`,
  });
  image = await buildImage({ base: false, layers: [{ entries: [file('secret', 'private bits')] }] });
  await basic.push('private/app', 'v1', image);
  await token.push('private/app', 'v1', image);
});

after(async () => {
  await berth?.cleanup();
  await basic?.stop();
  await token?.stop();
});

test('htpasswd: no credentials and wrong ones are UNAUTHENTICATED; username/password and auth work', async () => {
  const ref = `${basic.host}/private/app:v1`;
  await assert.rejects(pull(ref), grpcCode(status.UNAUTHENTICATED, /needs credentials/));
  await assert.rejects(
    pull(ref, { username: USER, password: 'wrong' }),
    grpcCode(status.UNAUTHENTICATED, new RegExp(`${basic.host}.*not accepted`)),
  );
  assert.equal(await pull(ref, { username: USER, password: PASSWORD }), image.configDigest);
  const auth = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
  assert.equal(await pull(ref, { auth }), image.configDigest);
  // An `auth` that is not base64 of user:password.
  await assert.rejects(
    pull(ref, { auth: Buffer.from('nocolon').toString('base64') }),
    grpcCode(status.INVALID_ARGUMENT),
  );
  assert.doesNotMatch(berth.logs(), /pa55/);
});

test('token realm: Basic credentials and identity_token get a token; wrong ones are UNAUTHENTICATED', async () => {
  const ref = `${token.host}/private/app:v1`;
  await assert.rejects(pull(ref), grpcCode(status.UNAUTHENTICATED));
  await assert.rejects(
    pull(ref, { username: USER, password: 'nope' }),
    grpcCode(status.UNAUTHENTICATED, /token service.*refused/),
  );
  const issued = token.tokensIssued();
  assert.equal(await pull(ref, { username: USER, password: PASSWORD }), image.configDigest);
  assert.ok(token.tokensIssued() > issued, 'the realm issued a token');
  // A second pull reuses the cached token.
  const cached = token.tokensIssued();
  assert.equal(await pull(ref, { username: USER, password: PASSWORD }), image.configDigest);
  assert.equal(token.tokensIssued(), cached);
  assert.equal(await pull(ref, { identityToken: IDENTITY }), image.configDigest);
  await assert.rejects(pull(ref, { identityToken: 'refresh-me-wrong' }), grpcCode(status.UNAUTHENTICATED));
  assert.doesNotMatch(berth.logs(), /pa55|refresh-me|eyJ/);
});

test('registry_token is sent as the bearer token; a bad one is UNAUTHENTICATED', async () => {
  const ref = `${token.host}/private/app:v1`;
  // Mint a token the way a kubelet credential provider would hand it over.
  const realm = await fetch(`${token.url}/v2/`).then((r) => r.headers.get('www-authenticate') ?? '');
  const m = /realm="([^"]+)",service="([^"]+)"/.exec(realm);
  assert.ok(m, realm);
  const res = await fetch(`${m[1]}?service=${m[2]}&scope=repository:private/app:pull`, {
    headers: { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` },
  });
  const { token: jwt } = (await res.json()) as { token: string };
  const issued = token.tokensIssued();
  assert.equal(await pull(ref, { registryToken: jwt }), image.configDigest);
  assert.equal(token.tokensIssued(), issued, 'berth asked the realm for nothing');
  await assert.rejects(pull(ref, { registryToken: 'eyJnot.a.token' }), grpcCode(status.UNAUTHENTICATED));
});

test('blobs redirected to another origin are fetched there without the registry credentials', async () => {
  const redirecting = await startRegistry({ redirectBlobs: true });
  try {
    await redirecting.push('private/app', 'v1', image);
    // A fresh berth: the image is not in its store yet.
    const other = await startBerth({ toml: `\n[image.registries."${redirecting.host}"]\ninsecure = true\n` });
    try {
      const res = await other.cri.image.pullImage(
        PullImageRequest.fromPartial({
          image: ImageSpec.fromPartial({ image: `${redirecting.host}/private/app:v1` }),
          auth: { registryToken: 'a-bearer-for-the-registry-only' },
        }),
      );
      assert.equal(res.imageRef, image.configDigest);
      const fetched = redirecting.storageRequests();
      assert.deepEqual(
        fetched.map((r) => r.path.slice(r.path.lastIndexOf('/') + 1)).sort(),
        [image.configDigest, ...image.layers.map((l) => l.digest)].sort(),
      );
      assert.ok(
        fetched.every((r) => !r.authorization),
        'no Authorization header crossed to the other origin',
      );
    } finally {
      await other.cleanup();
    }
  } finally {
    await redirecting.stop();
  }
});
