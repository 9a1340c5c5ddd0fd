/**
 * Flags the daemon runs with that Node and V8 read only at start-up (see
 * main.ts): JavaScript optimised up to Maglev, not TurboFan; gc() on every
 * thread's global for the GC pacer (util/gc-pacer.ts), which otherwise makes
 * a V8 context per thread to reach it (3-5 ms on a pull's critical path);
 * the system's CAs in Node's default store (image/registry/trust.ts).
 */
export const SYSTEM_CA_FLAG = '--use-system-ca';

export const DAEMON_START_UP_FLAGS: readonly string[] = ['--max-opt=2', '--expose-gc', SYSTEM_CA_FLAG];
