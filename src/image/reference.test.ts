import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseReference,
  normalizeReference,
  pullCandidates,
  formatReference,
  isImageId,
  isShortName,
  taggedName,
} from './reference.js';
import { InvalidArgumentError } from '../errors.js';

const D = 'sha256:' + 'a'.repeat(64);

test('normalises short names to docker.io/library with latest', () => {
  assert.deepEqual(normalizeReference('busybox'), {
    registry: 'docker.io',
    repository: 'library/busybox',
    tag: 'latest',
    digest: undefined,
  });
  assert.equal(formatReference(normalizeReference('foo/bar:1')), 'docker.io/foo/bar:1');
  assert.equal(
    formatReference(normalizeReference('index.docker.io/busybox')),
    'docker.io/library/busybox:latest',
  );
});

test('keeps explicit registries, ports and localhost', () => {
  assert.equal(
    formatReference(normalizeReference('registry.k8s.io/pause:3.10')),
    'registry.k8s.io/pause:3.10',
  );
  assert.equal(formatReference(normalizeReference('127.0.0.1:5000/a/b')), '127.0.0.1:5000/a/b:latest');
  assert.equal(formatReference(normalizeReference('localhost/x:y')), 'localhost/x:y');
  assert.equal(formatReference(normalizeReference('[::1]:5000/x')), '[::1]:5000/x:latest');
  // A first component without '.' or ':' is a path, not a host.
  assert.equal(normalizeReference('myhost/x').registry, 'docker.io');
});

test('digests: no default tag, tag and digest kept together', () => {
  assert.deepEqual(normalizeReference(`busybox@${D}`), {
    registry: 'docker.io',
    repository: 'library/busybox',
    tag: undefined,
    digest: D,
  });
  const both = normalizeReference(`gcr.io/x/y:1.0@${D}`);
  assert.equal(both.tag, '1.0');
  assert.equal(both.digest, D);
  assert.equal(formatReference(both), `gcr.io/x/y@${D}`);
  assert.equal(taggedName(both), 'gcr.io/x/y:1.0');
});

test('rejects malformed references with a message naming the input', () => {
  for (const bad of [
    '',
    ' ',
    'UPPER/case',
    'busybox:',
    'busybox@sha256:123',
    'a//b',
    '-a',
    'busybox:tag with space',
    'busybox:' + 'x'.repeat(129),
    'x'.repeat(256),
    'host:0/x',
    ':tag',
  ]) {
    assert.throws(
      () => parseReference(bad),
      (err: unknown) => err instanceof InvalidArgumentError && err.message.includes(JSON.stringify(bad)),
      bad,
    );
  }
});

test('pull candidates: search registries for short names only', () => {
  assert.deepEqual(pullCandidates('busybox:1', ['docker.io', 'quay.io']).map(formatReference), [
    'docker.io/library/busybox:1',
    'quay.io/busybox:1',
  ]);
  assert.deepEqual(pullCandidates('quay.io/a/b', ['docker.io']).map(formatReference), ['quay.io/a/b:latest']);
  assert.throws(() => pullCandidates('busybox', []), /no unqualified-search registries/);
  assert.equal(isShortName('library/busybox'), true);
  assert.equal(isShortName('docker.io/library/busybox'), false);
});

test('image IDs are recognised', () => {
  assert.equal(isImageId('a'.repeat(64)), true);
  assert.equal(isImageId(D), true);
  assert.equal(isImageId('sha256:abc'), false);
  assert.equal(isImageId('busybox'), false);
});
