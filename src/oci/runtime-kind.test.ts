import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../config/load.js';
import { configuredHandlers } from './handlers.js';
import { kindFromName, runtimeKind } from './runtime-kind.js';

test('the runtime kind from the binary name: versioned and renamed copies count', () => {
  const cases: Array<[string, string]> = [
    ['/usr/sbin/runc', 'runc'],
    ['/usr/local/bin/runc-1.2.4', 'runc'],
    ['/usr/bin/runc.real', 'runc'],
    ['/usr/bin/runsc', 'runsc'],
    ['/usr/local/bin/runsc-20240101', 'runsc'],
    ['/usr/bin/crun', 'crun'],
    ['/opt/kata/bin/kata-runtime', 'other'],
    ['/usr/bin/runcible', 'other'],
    ['/usr/bin/my-runc', 'other'],
  ];
  for (const [path, kind] of cases) assert.equal(kindFromName(path), kind, path);
  // A handler built by hand without a kind falls back to its name.
  assert.equal(runtimeKind({ name: 'x', path: '/usr/bin/runsc', root: '/r', type: 'oci' }), 'runsc');
});

test('runtime.handlers.NAME.kind overrides the name; auto and unknown values', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-kind-'));
  try {
    const file = join(dir, 'berth.toml');
    await writeFile(
      file,
      [
        '[runtime.handlers.wrapped]',
        'path = "/opt/node/bin/oci-wrapper"',
        'kind = "runc"',
        '[runtime.handlers.versioned]',
        'path = "/usr/local/bin/runc-1.2"',
        '[runtime.handlers.plain]',
        'path = "/opt/node/bin/oci-wrapper"',
        '',
      ].join('\n'),
    );
    const { config } = await loadConfig({ file });
    const handlers = configuredHandlers(config);
    assert.equal(handlers.get('wrapped')?.kind, 'runc');
    assert.equal(handlers.get('versioned')?.kind, 'runc');
    assert.equal(handlers.get('plain')?.kind, 'other');

    await writeFile(file, '[runtime.handlers.bad]\npath = "/usr/sbin/runc"\nkind = "kata"\n');
    await assert.rejects(
      loadConfig({ file }),
      (err: unknown) =>
        err instanceof ConfigError && /kind.*one of auto, runc, crun, runsc, other/.test(err.message),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
