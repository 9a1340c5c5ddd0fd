import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const MODULE = new URL('./compile-cache.js', import.meta.url).href;
/** Any of berth's modules, loaded after the cache is on. */
const LATER = new URL('./v8-flags.js', import.meta.url).href;

/** Enables the cache in a fresh process (it can be enabled once per process) and reports the answer. */
async function enableIn(env: Record<string, string>): Promise<{ dir?: string; off?: string }> {
  const script =
    `const m = await import(${JSON.stringify(MODULE)}); const answer = m.enableDaemonCompileCache();` +
    `await import(${JSON.stringify(LATER)}); console.log(JSON.stringify(answer));`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
  });
  return JSON.parse(stdout) as { dir?: string; off?: string };
}

let base: string;
before(async () => {
  base = await mkdtemp(join(tmpdir(), 'berth-compile-cache-'));
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

it('creates a private directory and fills it with compiled code', async () => {
  const dir = join(base, 'fresh', 'compile');
  await mkdir(join(base, 'fresh'), { mode: 0o700 });
  const answer = await enableIn({ BERTH_COMPILE_CACHE: dir });
  assert.equal(answer.dir, dir);
  // Node writes the cache when the process exits: one subdirectory per Node version and flags.
  const versions = await readdir(dir);
  assert.equal(versions.length, 1);
  assert.ok((await readdir(join(dir, versions[0]))).length > 0, 'no compiled module was cached');
});

it('is not used where another user could write the code in', async () => {
  const shared = join(base, 'shared');
  await mkdir(shared);
  await chmod(shared, 0o777);
  const answer = await enableIn({ BERTH_COMPILE_CACHE: join(shared, 'compile') });
  assert.equal(answer.dir, undefined);
  assert.match(answer.off ?? '', /not the daemon user's alone/);

  const open = join(base, 'open');
  await mkdir(join(open, 'compile'), { recursive: true });
  await chmod(join(open, 'compile'), 0o777);
  assert.match((await enableIn({ BERTH_COMPILE_CACHE: join(open, 'compile') })).off ?? '', /alone/);
});

it('can be turned off', async () => {
  assert.deepEqual(await enableIn({ BERTH_COMPILE_CACHE: 'off' }), { off: 'BERTH_COMPILE_CACHE=off' });
});
