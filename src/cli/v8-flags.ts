/**
 * V8 flags the daemon runs with that V8 reads only at start-up (see
 * main.ts): JavaScript optimised up to Maglev, not TurboFan.
 */
export const DAEMON_START_UP_FLAGS: readonly string[] = ['--max-opt=2'];
