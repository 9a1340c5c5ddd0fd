/**
 * undici, loaded on first use: a daemon that never pulls does not carry its
 * two hundred modules (about 20 MiB of resident memory).
 */
import type * as Undici from 'undici';

let loading: Promise<typeof Undici> | undefined;

export function undici(): Promise<typeof Undici> {
  loading ??= import('undici');
  return loading;
}
