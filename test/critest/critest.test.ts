/**
 * cri-tools' critest against a real berth (see harness.ts): every spec must
 * pass except the AppArmor ones (this kernel has none) and "public image with
 * digest" (its digest is pinned upstream); the benchmark suite must run clean;
 * nothing may be left behind. Skipped when there is no critest on PATH or in
 * $CRITEST — it is built from cri-tools by hand, never shipped with berth.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findCritest, formatSummary, runCritest } from './harness.js';

const critest = findCritest();
const skip = critest ? false : 'no critest on PATH or in $CRITEST (build it from kubernetes-sigs/cri-tools)';
const root = process.getuid?.() === 0;
const reason = skip || (root ? false : 'critest needs root (berth runs pods)');

test('critest: the validation suite passes', { skip: reason, timeout: 3 * 3600_000 }, async (t) => {
  const result = await runCritest({ critest: critest! });
  t.diagnostic(formatSummary(result));
  assert.ok(result.passed.length > 0, `no spec passed; critest output tail:\n${result.output.slice(-4000)}`);
  assert.deepEqual(
    result.failed.map((f) => `${f.name}: ${f.message.split('\n')[0]}`),
    [],
    formatSummary(result),
  );
  assert.deepEqual(result.leftovers, [], 'the run left objects behind');
  assert.equal(result.exitCode, 0, `critest exit code; output tail:\n${result.output.slice(-4000)}`);
});

test('critest -benchmark runs clean', { skip: reason, timeout: 3 * 3600_000 }, async (t) => {
  const result = await runCritest({ critest: critest!, benchmark: true });
  t.diagnostic(formatSummary(result));
  assert.ok(result.passed.length > 0, `no benchmark ran; output tail:\n${result.output.slice(-4000)}`);
  assert.deepEqual(
    result.failed.map((f) => `${f.name}: ${f.message.split('\n')[0]}`),
    [],
    formatSummary(result),
  );
  assert.deepEqual(result.leftovers, [], 'the benchmark left objects behind');
  assert.ok(Object.keys(result.benchmarkFiles).length > 0, 'no benchmark result files were written');
});
