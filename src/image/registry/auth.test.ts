import { test } from 'node:test';
import assert from 'node:assert/strict';
import { credentialsFrom, credentialsKey, parseChallenges } from './auth.js';

test('parseChallenges: Bearer with quoted params, Basic, several challenges', () => {
  assert.deepEqual(
    parseChallenges(
      'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example/token',
          service: 'registry.example',
          scope: 'repository:a/b:pull,push',
        },
      },
    ],
  );
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [
    { scheme: 'basic', params: { realm: 'Registry Realm' } },
  ]);
  assert.deepEqual(
    parseChallenges(['Basic realm="x"', 'Bearer realm="https://t/",error="invalid_token"']).map(
      (c) => c.scheme,
    ),
    ['basic', 'bearer'],
  );
  assert.deepEqual(parseChallenges('Bearer realm=https://t/x, service=reg'), [
    { scheme: 'bearer', params: { realm: 'https://t/x', service: 'reg' } },
  ]);
  assert.deepEqual(parseChallenges(undefined), []);
});

test('credentialsFrom: username/password, base64 auth, tokens; keys hide the secrets', () => {
  assert.deepEqual(credentialsFrom({ username: 'u', password: 'p' }), { username: 'u', password: 'p' });
  assert.deepEqual(credentialsFrom({ auth: Buffer.from('me:a:b').toString('base64') }), {
    username: 'me',
    password: 'a:b',
  });
  assert.deepEqual(credentialsFrom({ identityToken: 'id', registryToken: 'rt' }), {
    identityToken: 'id',
    registryToken: 'rt',
  });
  assert.throws(() => credentialsFrom({ auth: Buffer.from('x').toString('base64') }), /username:password/);
  assert.equal(credentialsKey({}), 'anonymous');
  const key = credentialsKey({ username: 'u', password: 'hunter2' });
  assert.doesNotMatch(key, /hunter2/);
  assert.notEqual(key, credentialsKey({ username: 'u', password: 'hunter3' }));
});
