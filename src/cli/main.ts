#!/usr/bin/env node
/**
 * berth's entry point. The daemon's V8 settings are berth's own, so every
 * launcher (systemd unit, wrapper, tests, benchmarks) gets them.
 *
 * - JavaScript is optimised up to Maglev, not TurboFan: berth's hot paths are
 *   system calls, child processes and native code (zlib, hashing, TLS), and
 *   the top tier's compiler and code cost about 6 MiB of resident memory.
 *   V8 reads this only at start-up: `serve` re-executes itself (same pid)
 *   with it when started without.
 * - The young generation stays at its initial 1 MiB semi-space instead of
 *   growing to 16 MiB: a few MiB less resident memory, for one scavenge of
 *   about 1 ms per MiB allocated (a pod start allocates about one). Set at
 *   run time, before the other modules load (hence the dynamic import):
 *   measured lower than the same flag on the command line.
 * - Compiled code is cached on disk between starts (compile-cache.ts).
 */
import { setFlagsFromString } from 'node:v8';
import { DAEMON_START_UP_FLAGS } from './v8-flags.js';
import { enableDaemonCompileCache } from './compile-cache.js';

if (process.argv[2] === 'serve') {
  const missing = DAEMON_START_UP_FLAGS.filter((flag) => !process.execArgv.includes(flag));
  if (missing.length > 0 && typeof process.execve === 'function') {
    process.execve(process.execPath, [
      process.execPath,
      ...missing,
      ...process.execArgv,
      ...process.argv.slice(1),
    ]);
  }
  setFlagsFromString('--semi-space-growth-factor=1');
  enableDaemonCompileCache();
}
await import('./cli.js');
