// Builds berth's native helper (native/berth-idmap.c -> native/build/berth-idmap)
// with gcc. Without gcc it says so and succeeds: berth then reports
// user_namespaces=false (the helper is what makes ID-mapped root filesystems).
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(repo, 'native', 'berth-idmap.c');
const outDir = join(repo, 'native', 'build');
const output = join(outDir, 'berth-idmap');

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -1;
  }
}

if (mtime(output) >= mtime(source)) process.exit(0);
const cc = process.env.CC || 'gcc';
if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.warn(
    `build-native: ${cc} not found; skipping ${source} (user namespaces will be reported unsupported)`,
  );
  process.exit(0);
}
mkdirSync(outDir, { recursive: true });
// Build to a temporary name and rename, so a running berth never sees half a binary.
const temp = `${output}.tmp-${process.pid}`;
const result = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-o', temp, source], {
  stdio: 'inherit',
});
if (result.status !== 0) {
  console.error(`build-native: compiling ${source} failed`);
  process.exit(1);
}
renameSync(temp, output);
