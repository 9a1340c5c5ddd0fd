/**
 * berth's side of native/berth-runsc-shim, conmon's runtime for containers
 * that join a runsc (gVisor) pod sandbox: runsc reports the sandbox's pid
 * for them and gives them the stdio of `runsc start`, so the shim stays
 * behind as the process conmon watches, runs the start with conmon's pipes
 * when berth asks, and ends with the container (`runsc wait`).
 */
import { constants, open as openCallback, write as writeCallback, close as closeCallback } from 'node:fs';
import { access, lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runtimeKind } from './runtime-kind.js';
import { promisify } from 'node:util';
import { FailedPreconditionError, errnoCode } from '../errors.js';
import { openFifoForReading, readFifoToEnd } from '../util/fifo.js';
import { nativeHelper } from '../util/native.js';
import { runtimeGlobalArgs } from './runtime.js';
import type { RuntimeHandler } from './types.js';

const openFd = promisify(openCallback);
const writeFd = promisify(writeCallback);
const closeFd = promisify(closeCallback);

/** `runsc start` of a container in a running sandbox takes a few hundred ms. */
const START_TIMEOUT_MS = 60_000;

export const RUNSC_SHIM = nativeHelper('berth-runsc-shim');

export function isRunsc(handler: RuntimeHandler): boolean {
  return runtimeKind(handler) === 'runsc';
}

/** A runsc root's file names; none before runsc made the root. */
async function rootEntries(root: string): Promise<string[]> {
  try {
    return await readdir(root);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

/**
 * runsc keeps `<sandbox>_sandbox:<container>.state` and a `.lock` beside it in
 * its root. A runsc command that found the state file and takes the lock just
 * as a delete removes both creates the lock file again, and nothing removes it
 * later: one empty file per container, for ever. After a delete, the locks of
 * `id` (as a container, and as a sandbox: its containers') without a state
 * file are removed.
 */
export async function removeStaleRunscLocks(root: string, id: string): Promise<void> {
  const names = await rootEntries(root);
  const present = new Set(names);
  await Promise.all(
    names
      .filter(
        (name) =>
          name.endsWith('.lock') &&
          (name.startsWith(`${id}_sandbox:`) || name.endsWith(`_sandbox:${id}.lock`)) &&
          !present.has(`${name.slice(0, -'.lock'.length)}.state`),
      )
      .map((name) => rm(join(root, name), { force: true })),
  );
}

/**
 * Start-up: lock files in a runsc root that no state file stands beside and
 * whose sandbox and container IDs no berth record names (left by a delete
 * before berth removed them after each delete, or by a crash between runsc's
 * delete and that removal). Runs before berth serves, once half-made records
 * are undone, so no runsc command of berth's is in flight; the locks of IDs
 * a record names are left all the same, runsc may still be using them.
 */
export async function sweepStaleRunscLocks(root: string, knownIds: ReadonlySet<string>): Promise<string[]> {
  const names = await rootEntries(root);
  const present = new Set(names);
  const stale = names.filter((name) => {
    const match = /^(.+)_sandbox:(.+)\.lock$/.exec(name);
    if (!match || present.has(`${name.slice(0, -'.lock'.length)}.state`)) return false;
    return !knownIds.has(match[1]) && !knownIds.has(match[2]);
  });
  await Promise.all(stale.map((name) => rm(join(root, name), { force: true })));
  return stale;
}

/**
 * The runtime conmon runs for a container: the handler's binary, or the shim
 * in front of runsc for a container joining its pod's sandbox. `controlDir`
 * holds the shim's fifos (conmon's persist dir of the container).
 */
export async function conmonRuntime(
  handler: RuntimeHandler,
  joinsSandbox: boolean,
  controlDir: string,
  shim = RUNSC_SHIM,
): Promise<{ path: string; args: string[] }> {
  const args = runtimeGlobalArgs(handler);
  if (!joinsSandbox || !isRunsc(handler)) return { path: handler.path, args };
  try {
    await access(shim, constants.X_OK);
  } catch {
    throw new FailedPreconditionError(
      `runtime handler ${JSON.stringify(handler.name)} (${handler.path}): a container cannot join a runsc pod sandbox without ${shim} (built by npm run build with gcc)`,
    );
  }
  return { path: shim, args: [controlDir, handler.path, ...args] };
}

/**
 * Asks the shim monitoring container `id` to start it. Resolves false when
 * the container has no shim (start it through the runtime), true once runsc
 * started it; rejects with runsc's exit code when the start failed.
 */
export async function startThroughShim(controlDir: string, id: string, monitorPid: number): Promise<boolean> {
  const request = join(controlDir, 'start');
  try {
    if (!(await lstat(request)).isFIFO()) return false;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
  // Listen for the answer before asking, so the shim always finds a reader.
  const reply = await openFifoForReading(join(controlDir, 'started'));
  const stopListening = new AbortController();
  // Owns `reply` from here on (closes it when done).
  const answer = readFifoToEnd(reply, monitorPid, START_TIMEOUT_MS, stopListening.signal);
  let asked: number | undefined;
  try {
    asked = await openFd(request, constants.O_WRONLY | constants.O_NONBLOCK);
    await writeFd(asked, Buffer.from('s'));
  } catch (err) {
    // ENXIO: nobody reads the request fifo, so the shim is gone (or was started already).
    stopListening.abort();
    await answer;
    throw new FailedPreconditionError(
      `start of container ${id}: its runsc shim does not take requests (${errnoCode(err) ?? String(err)}); remove the container and create it again`,
    );
  } finally {
    if (asked !== undefined) await closeFd(asked).catch(() => undefined);
  }
  const text = (await answer).toString().trim();
  if (text === '0') return true;
  throw new FailedPreconditionError(
    text === ''
      ? `start of container ${id}: its runsc shim ended without starting it`
      : `runsc start of container ${id} failed (exit ${text}); runsc's message is in the container's log`,
  );
}

/** True while the shim of a container still waits for the start (its `start` fifo exists). */
export async function shimAwaitsStart(controlDir: string): Promise<boolean> {
  try {
    return (await lstat(join(controlDir, 'start'))).isFIFO();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}
