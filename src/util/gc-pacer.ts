/**
 * Garbage collections paced by the bytes a thread moves. A Buffer's memory
 * lives outside V8's heap, and V8 collects it only when its own heap fills or
 * ~64 MiB of such memory has piled up; glibc then keeps that high-water mark
 * in the process's RSS. Streaming code that allocates a buffer per chunk
 * (socket reads, inflated output) calls the pacer with each chunk's size, and
 * a young-generation collection every few MiB frees the chunks while they are
 * few and cheap to find.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (options: { type: 'minor' | 'major'; execution: 'sync' }) => void;

let gc: Gc | undefined;

function collector(): Gc {
  if (!gc) {
    const global = (globalThis as { gc?: Gc }).gc; // the daemon starts with --expose-gc
    if (global) {
      gc = global;
    } else {
      // Exposes gc() to contexts made from now on; this thread's own globals stay as they are.
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as Gc;
    }
  }
  return gc;
}

export interface GcPacing {
  /** A young-generation collection after this many bytes. */
  minorEveryBytes: number;
  /** And a full one after this many (buffers old enough to have been promoted); never when absent. */
  majorEveryBytes?: number;
}

/** Returns the function to call with the size of every chunk handled. */
export function gcPacer({ minorEveryBytes, majorEveryBytes }: GcPacing): (bytes: number) => void {
  const collect = collector();
  let sinceMinor = 0;
  let sinceMajor = 0;
  return (bytes) => {
    sinceMinor += bytes;
    sinceMajor += bytes;
    if (sinceMinor < minorEveryBytes) return;
    sinceMinor = 0;
    if (majorEveryBytes !== undefined && sinceMajor >= majorEveryBytes) {
      sinceMajor = 0;
      collect({ type: 'major', execution: 'sync' });
    } else {
      collect({ type: 'minor', execution: 'sync' });
    }
  };
}
