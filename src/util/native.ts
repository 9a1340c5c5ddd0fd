/**
 * berth's native helpers (native/NAME.c), built into <repo>/native/build by
 * scripts/build-native.mjs; found from this compiled module (in dist/src/util).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function nativeHelper(
  name: 'berth-idmap' | 'berth-mount' | 'berth-runsc-shim' | 'berth-spawn',
): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'build', name);
}
