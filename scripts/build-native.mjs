// Builds berth's native helpers with gcc (native/NAME.c -> native/build/NAME):
//   berth-idmap  ID-mapped root filesystems (without it berth reports user_namespaces=false)
//   berth-mount  mounts, unmounts and netns as plain system calls (without it berth
//                uses util-linux mount(8), umount(8) and unshare(1), ~14 ms slower each)
//   berth-runsc-shim  conmon's runtime for containers joining a runsc (gVisor) pod sandbox
//   berth-spawn  starts CNI plugins, the mount helper and runtime commands without
//                forking the daemon (Node's spawn holds the event loop 5-15 ms each)
// Without gcc it says so and succeeds.
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(repo, 'native', 'build');
const helpers = {
  'berth-idmap': 'user namespaces will be reported unsupported',
  'berth-mount': 'mounts go through util-linux instead',
  'berth-runsc-shim': 'containers cannot join runsc pod sandboxes',
  'berth-spawn': "short-lived programs start through Node's spawn instead (slower, blocks the event loop)",
};

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -1;
  }
}

const cc = process.env.CC || 'gcc';
let haveCc;
for (const [name, without] of Object.entries(helpers)) {
  const source = join(repo, 'native', `${name}.c`);
  const output = join(outDir, name);
  if (mtime(output) >= mtime(source)) continue;
  haveCc ??= spawnSync(cc, ['--version'], { stdio: 'ignore' }).status === 0;
  if (!haveCc) {
    console.warn(`build-native: ${cc} not found; skipping ${source} (${without})`);
    continue;
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
}
