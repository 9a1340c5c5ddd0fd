import { it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const MODULE = new URL('./gc-pacer.js', import.meta.url).href;

/**
 * Drops 4 MiB of Buffers, tells a pacer of `minorMiB` that 4 MiB went by and
 * reports how much of them is still held. In a process of its own with a
 * young generation large enough that V8 does not collect by itself meanwhile.
 */
async function survivingMiB(pacing: string, flags: readonly string[] = []): Promise<number> {
  const script = `
    const { gcPacer } = await import(${JSON.stringify(MODULE)});
    const pace = gcPacer(${pacing});
    const held = () => process.memoryUsage().arrayBuffers;
    const before = held();
    for (let i = 0; i < 64; i++) Buffer.alloc(64 * 1024).fill(i);
    pace(2 * 1024 * 1024);
    await new Promise((resolve) => setImmediate(resolve));
    pace(2 * 1024 * 1024);
    // Freed buffers are accounted for once swept (in the background), a little after the collection.
    for (let i = 0; i < 30 && held() - before > 1024 * 1024; i++) await new Promise((r) => setTimeout(r, 10));
    console.log((held() - before) / 1024 / 1024);`;
  const { stdout } = await run(process.execPath, [
    ...flags,
    '--max-semi-space-size=64',
    '--input-type=module',
    '-e',
    script,
  ]);
  return Number(stdout.trim());
}

// Without --expose-gc the pacer reaches gc() through a context of its own; the daemon starts with it.
for (const flags of [[], ['--expose-gc']]) {
  it(`collects the chunks handled once enough bytes went by (${flags.join(' ') || 'no flags'})`, async () => {
    // The control: a pace never reached leaves the garbage where it is.
    const unpaced = await survivingMiB('{ minorEveryBytes: 64 * 1024 * 1024 }', flags);
    assert.ok(unpaced >= 3.9, `without a collection only ${unpaced} MiB stayed (V8 collected on its own)`);
    const paced = await survivingMiB('{ minorEveryBytes: 4 * 1024 * 1024 }', flags);
    assert.ok(paced < 0.5, `${paced} MiB of dropped chunks survived the paced collection`);
  });
}

it('a full collection frees chunks that were promoted to the old generation', async () => {
  const script = `
    const { gcPacer } = await import(${JSON.stringify(MODULE)});
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const pace = gcPacer({ minorEveryBytes: 1024 * 1024, majorEveryBytes: 3 * 1024 * 1024 });
    const held = () => process.memoryUsage().arrayBuffers;
    const before = held();
    let chunks = Array.from({ length: 32 }, () => Buffer.alloc(64 * 1024));
    // Two young collections while still referenced: the chunks are promoted.
    pace(1024 * 1024);
    await turn();
    pace(1024 * 1024);
    await turn();
    chunks = [];
    pace(512 * 1024);
    await turn();
    const afterMinor = held() - before;
    pace(512 * 1024);
    for (let i = 0; i < 30 && held() - before > 1024 * 1024; i++) await new Promise((r) => setTimeout(r, 10));
    console.log(JSON.stringify({ afterMinor, afterMajor: held() - before, kept: chunks.length }));`;
  const { stdout } = await run(process.execPath, [
    '--max-semi-space-size=64',
    '--input-type=module',
    '-e',
    script,
  ]);
  const { afterMinor, afterMajor } = JSON.parse(stdout) as { afterMinor: number; afterMajor: number };
  const MiB = 1024 * 1024;
  assert.ok(
    afterMinor >= 1.9 * MiB,
    `promoted chunks already gone before the full collection (${afterMinor} bytes)`,
  );
  assert.ok(afterMajor < 0.5 * MiB, `${afterMajor} bytes of promoted chunks survived the full collection`);
});
