import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import {
  MEDIA_TYPES,
  parseManifest,
  platformRank,
  selectPlatform,
  type IndexManifest,
  type Platform,
} from './manifest.js';

const d = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;
const enc = (v: unknown) => Buffer.from(JSON.stringify(v));

function index(...platforms: (Platform | undefined)[]): IndexManifest {
  return {
    kind: 'index',
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: platforms.map((p, i) => ({
      mediaType: MEDIA_TYPES.ociManifest,
      digest: d(i + 1),
      size: 100 + i,
      ...(p ? { platform: p } : {}),
    })),
  };
}

const amd64: Platform = { os: 'linux', architecture: 'amd64' };
const arm64: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };
const armv7: Platform = { os: 'linux', architecture: 'arm', variant: 'v7' };

test('parseManifest: OCI and Docker manifests, by content type, declared type or shape', () => {
  const body = {
    schemaVersion: 2,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: d(1), size: 10 },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', digest: d(2), size: 20 },
      { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: d(3), size: 30 },
    ],
  };
  const m = parseManifest(enc(body), MEDIA_TYPES.ociManifest, 'm');
  assert.equal(m.kind, 'manifest');
  assert.equal(m.kind === 'manifest' && m.layers.length, 2);
  const docker = parseManifest(
    enc({ ...body, mediaType: MEDIA_TYPES.dockerManifest }),
    'application/json',
    'm',
  );
  assert.equal(docker.mediaType, MEDIA_TYPES.dockerManifest);
  const byShape = parseManifest(enc({ schemaVersion: 2, manifests: [] }), 'application/octet-stream', 'i');
  assert.equal(byShape.kind, 'index');
  const list = parseManifest(
    enc({
      schemaVersion: 2,
      manifests: [{ digest: d(4), size: 5, platform: { os: 'linux', architecture: 'amd64', variant: '' } }],
    }),
    MEDIA_TYPES.dockerList,
    'i',
  );
  assert.deepEqual(list.kind === 'index' && list.manifests[0].platform, amd64);
});

test('parseManifest: rejects schema 1, bad digests, foreign configs and unknown layer types', () => {
  const code = (c: number, re: RegExp) => (err: { code: number; message: string }) => {
    assert.equal(err.code, c);
    assert.match(err.message, re);
    return true;
  };
  assert.throws(
    () => parseManifest(enc({ schemaVersion: 1, fsLayers: [] }), '', 'x'),
    code(status.FAILED_PRECONDITION, /schema 1/),
  );
  assert.throws(() => parseManifest(Buffer.from('{nope'), '', 'x'), code(status.UNAVAILABLE, /not JSON/));
  assert.throws(
    () =>
      parseManifest(enc({ schemaVersion: 2, config: { digest: 'md5:abc', size: 1 }, layers: [] }), '', 'x'),
    code(status.UNAVAILABLE, /config has no sha256 digest/),
  );
  assert.throws(
    () => parseManifest(enc({ schemaVersion: 2, config: { digest: d(1), size: -1 }, layers: [] }), '', 'x'),
    code(status.UNAVAILABLE, /size/),
  );
  assert.throws(
    () =>
      parseManifest(
        enc({
          schemaVersion: 2,
          config: { digest: d(1), size: 1 },
          layers: [
            { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip+encrypted', digest: d(2), size: 1 },
          ],
        }),
        '',
        'enc',
      ),
    code(status.FAILED_PRECONDITION, /layer 0.*encrypted/),
  );
});

test('selectPlatform: the node platform, ignoring attestation entries and other OSes', () => {
  const chosen = selectPlatform(
    index({ os: 'unknown', architecture: 'unknown' }, arm64, { os: 'windows', architecture: 'amd64' }, amd64),
    amd64,
    'img',
  );
  assert.equal(chosen.digest, d(4));
});

test('selectPlatform: arm64 with or without v8; arm prefers the exact variant, runs lower ones', () => {
  assert.equal(selectPlatform(index(amd64, { os: 'linux', architecture: 'arm64' }), arm64, 'i').digest, d(2));
  assert.equal(
    selectPlatform(
      index({ os: 'linux', architecture: 'arm', variant: 'v6' }, armv7, {
        os: 'linux',
        architecture: 'arm',
        variant: 'v8',
      }),
      armv7,
      'i',
    ).digest,
    d(2),
  );
  assert.equal(
    selectPlatform(index({ os: 'linux', architecture: 'arm', variant: 'v6' }, amd64), armv7, 'i').digest,
    d(1),
  );
  assert.equal(platformRank({ os: 'linux', architecture: 'arm', variant: 'v8' }, armv7), undefined);
  // An exact match beats an entry without variant.
  assert.equal(selectPlatform(index({ os: 'linux', architecture: 'arm' }, armv7), armv7, 'i').digest, d(2));
  // amd64 micro-architecture levels are not assumed.
  assert.equal(platformRank({ os: 'linux', architecture: 'amd64', variant: 'v3' }, amd64), undefined);
  assert.equal(platformRank({ os: 'linux', architecture: 'amd64', variant: 'v1' }, amd64), 90);
});

test('selectPlatform: no match is NOT_FOUND listing every platform offered, once', () => {
  assert.throws(
    () =>
      selectPlatform(
        index(arm64, armv7, armv7, { os: 'linux', architecture: 's390x' }, undefined),
        amd64,
        'image x:1',
      ),
    (err: { code: number; message: string }) => {
      assert.equal(err.code, status.NOT_FOUND);
      assert.equal(
        err.message,
        'image x:1 has no image for linux/amd64; it offers linux/arm64/v8, linux/arm/v7, linux/s390x, unknown platform',
      );
      return true;
    },
  );
  assert.throws(() => selectPlatform(index(), amd64, 'empty'), /offers no platforms/);
});

test('OCI artifacts: told from images by artifactType or a config that is not an image config', () => {
  const weights = {
    mediaType: 'application/octet-stream',
    digest: d(2),
    size: 9,
    annotations: { 'org.opencontainers.image.title': 'model/weights.bin', 'not.a.string': 3 },
  };
  const parse = (doc: Record<string, unknown>, contentType: string = MEDIA_TYPES.ociManifest) =>
    parseManifest(enc({ schemaVersion: 2, ...doc }), contentType, 'x');
  const declared = parse({
    mediaType: MEDIA_TYPES.ociManifest,
    artifactType: 'application/vnd.example.model',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: d(1), size: 2 },
    layers: [weights],
  });
  assert.equal(declared.kind, 'manifest');
  if (declared.kind !== 'manifest') return;
  assert.equal(declared.artifactType, 'application/vnd.example.model');
  assert.deepEqual(declared.layers[0].annotations, { 'org.opencontainers.image.title': 'model/weights.bin' });
  // An image config with artifactType is still an artifact (image-spec: artifactType says so).
  const withImageConfig = parse({
    artifactType: 'application/vnd.example.sbom',
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: d(1), size: 2 },
    layers: [weights],
  });
  assert.equal(
    withImageConfig.kind === 'manifest' && withImageConfig.artifactType,
    'application/vnd.example.sbom',
  );
  // No artifactType: the config's media type names the kind (a Helm chart; layers of any type).
  const chart = parse({
    config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: d(1), size: 1 },
    layers: [{ mediaType: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip', digest: d(2), size: 1 }],
  });
  assert.equal(chart.kind === 'manifest' && chart.artifactType, 'application/vnd.cncf.helm.config.v1+json');
  // Images stay images: image or missing config media type, no artifactType.
  for (const configType of [MEDIA_TYPES.ociConfig, MEDIA_TYPES.dockerConfig, undefined]) {
    const image = parse({
      config: { mediaType: configType, digest: d(1), size: 1 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d(2), size: 1 }],
    });
    assert.equal(image.kind === 'manifest' && image.artifactType, undefined, String(configType));
  }
  // A Docker manifest never declares an artifactType; an image config keeps it an image.
  const docker = parse(
    {
      mediaType: MEDIA_TYPES.dockerManifest,
      artifactType: 'application/vnd.example.x',
      config: { mediaType: MEDIA_TYPES.dockerConfig, digest: d(1), size: 1 },
      layers: [],
    },
    MEDIA_TYPES.dockerManifest,
  );
  assert.equal(docker.kind === 'manifest' && docker.artifactType, undefined);
});
