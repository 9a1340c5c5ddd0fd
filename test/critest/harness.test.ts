/**
 * The critest harness's own parsing: ginkgo's JSON report, iptables rules,
 * berth log IDs, image references and benchmark files. (The harness itself
 * runs in critest.test.ts when a critest binary is available.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { idsInLog, parseGinkgoReport, splitRule, summarizeBenchmarks } from './harness.js';
import { repositoryAndTag, buildStandIns } from './images.js';

test('parseGinkgoReport sorts specs into passed, failed, skipped by the spec and not selected', () => {
  const report = [
    {
      SpecReports: [
        { LeafNodeType: 'BeforeSuite', State: 'passed' },
        {
          LeafNodeType: 'It',
          ContainerHierarchyTexts: ['[k8s.io] Image Manager'],
          LeafNodeText: 'pulls',
          State: 'passed',
          RunTime: 1_500_000_000,
        },
        {
          LeafNodeType: 'It',
          ContainerHierarchyTexts: ['[k8s.io] Idempotence', 'StopContainer'],
          LeafNodeText: 'should not return an error if not found',
          State: 'failed',
          Failure: {
            Message: 'rpc error: code = NotFound',
            Location: { FileName: '/src/cri-tools/pkg/validate/idempotence.go', LineNumber: 79 },
          },
        },
        {
          LeafNodeType: 'It',
          ContainerHierarchyTexts: ['[k8s.io] UserNamespaces'],
          LeafNodeText: 'POD',
          State: 'skipped',
          Failure: { Message: 'no runtime handler found which supports user namespaces' },
        },
        {
          LeafNodeType: 'It',
          ContainerHierarchyTexts: ['[k8s.io] AppArmor'],
          LeafNodeText: 'x',
          State: 'skipped',
        },
        { LeafNodeType: 'AfterSuite', State: 'panicked', Failure: { Message: 'boom' } },
      ],
    },
  ];
  const r = parseGinkgoReport(JSON.stringify(report));
  assert.deepEqual(
    r.passed.map((s) => [s.name, s.seconds]),
    [['[k8s.io] Image Manager pulls', 1.5]],
  );
  assert.deepEqual(
    r.failed.map((s) => [s.name, s.location, s.message]),
    [
      [
        '[k8s.io] Idempotence StopContainer should not return an error if not found',
        'pkg/validate/idempotence.go:79',
        'rpc error: code = NotFound',
      ],
      ['[AfterSuite]', '', 'boom'],
    ],
  );
  assert.deepEqual(
    r.skippedBySpec.map((s) => s.message),
    ['no runtime handler found which supports user namespaces'],
  );
  assert.deepEqual(
    r.filtered.map((s) => s.name),
    ['[k8s.io] AppArmor x'],
  );
});

test('splitRule keeps quoted comments whole and unescapes them', () => {
  assert.deepEqual(
    splitRule(
      'POSTROUTING -s 10.1.2.3/32 -m comment --comment "name: \\"critest-ab\\" id: \\"x\\"" -j CNI-1234',
    ),
    [
      'POSTROUTING',
      '-s',
      '10.1.2.3/32',
      '-m',
      'comment',
      '--comment',
      'name: "critest-ab" id: "x"',
      '-j',
      'CNI-1234',
    ],
  );
});

test('idsInLog finds the 64-hex pod and container IDs berth logged', () => {
  const a = 'a'.repeat(64);
  const b = '0123456789abcdef'.repeat(4);
  const log = [
    `{"level":20,"component":"network","podId":"${a}","msg":"CNI ADD done"}`,
    `{"level":20,"component":"container","container":"${b}","msg":"created"}`,
    `{"level":20,"image":"${'f'.repeat(63)}","msg":"short"}`,
  ].join('\n');
  assert.deepEqual([...idsInLog(log)].sort(), [b, a].sort());
});

test('repositoryAndTag splits critest references', () => {
  assert.deepEqual(repositoryAndTag('registry.k8s.io/e2e-test-images/busybox:1.29-2'), {
    host: 'registry.k8s.io',
    repository: 'e2e-test-images/busybox',
    tag: '1.29-2',
  });
  assert.deepEqual(repositoryAndTag('gcr.io/k8s-staging-cri-tools/test-image-latest'), {
    host: 'gcr.io',
    repository: 'k8s-staging-cri-tools/test-image-latest',
    tag: 'latest',
  });
});

test('summarizeBenchmarks gives median and p95 per operation', () => {
  const data = {
    operationsNames: ['CreatePod', 'RemovePod'],
    datapoints: Array.from({ length: 20 }, (_, i) => ({ operationsDurationsNs: [(i + 1) * 1e6, 5e6] })),
  };
  assert.deepEqual(summarizeBenchmarks({ 'pod_benchmark_data.json': JSON.stringify(data) }), [
    'pod (20 samples, median/p95): CreatePod 11.0/20.0 ms, RemovePod 5.0/5.0 ms',
  ]);
});

test('stand-ins: one image per critest reference; same-image tags share a digest, others differ', async () => {
  const standIns = await buildStandIns();
  const digest = (ref: string) => {
    const s = standIns.find((x) => x.ref === ref);
    assert.ok(s, `no stand-in for ${ref}`);
    return s.image.kind === 'index' ? s.image.indexDigest : s.image.manifestDigest;
  };
  const staging = 'gcr.io/k8s-staging-cri-tools/';
  assert.equal(digest(`${staging}test-image-tags:1`), digest(`${staging}test-image-tags:3`));
  const different = ['test-image-1:latest', 'test-image-2:latest', 'test-image-3:latest'].map((r) =>
    digest(staging + r),
  );
  assert.equal(new Set(different).size, 3);
  assert.notEqual(digest(`${staging}test-image-tag:test`), digest(`${staging}test-image-tag:all`));
  for (const ref of [
    'registry.k8s.io/e2e-test-images/busybox:1.29-2',
    'registry.k8s.io/e2e-test-images/nginx:1.14-2',
    'registry.k8s.io/e2e-test-images/httpd:2.4.39-4',
    'registry.k8s.io/e2e-test-images/nonewprivs:1.3',
    `${staging}hostnet-nginx-amd64:latest`,
    `${staging}test-image-predefined-group:latest`,
    `${staging}test-image-user-username-group:latest`,
    'public.ecr.aws/docker/library/busybox:1-glibc',
  ])
    digest(ref);
  // Every user image says who it runs as in its config.
  const users = standIns
    .filter((s) => s.ref.includes('test-image-user-'))
    .map((s) => {
      const img = s.image.kind === 'index' ? s.image.images[0] : s.image;
      return (JSON.parse(img.config.toString()) as { config: { User?: string } }).config.User;
    })
    .sort();
  assert.deepEqual(users, ['1002', '1003:1004', 'www-data', 'www-data:1004']);
});
