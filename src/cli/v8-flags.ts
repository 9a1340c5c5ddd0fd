/**
 * V8 flags the daemon runs with that V8 reads only at start-up (see
 * main.ts): JavaScript optimised up to Maglev, not TurboFan; gc() on every
 * thread's global for the GC pacer (util/gc-pacer.ts), which otherwise makes
 * a V8 context per thread to reach it (3-5 ms on a pull's critical path).
 */
export const DAEMON_START_UP_FLAGS: readonly string[] = ['--max-opt=2', '--expose-gc'];
