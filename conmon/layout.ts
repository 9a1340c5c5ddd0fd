/**
 * Where berth and conmon keep per-container files. Everything lives under the
 * run root (volatile, like the containers themselves):
 *
 *   <run_root>/conmon/<id>/            conmon's --persist-dir (and its cwd)
 *     conmon.pid                       pid of the long-lived conmon (--conmon-pidfile)
 *     pidfile                          container init pid (runtime --pid-file)
 *     bundle -> <bundle dir>           berth's link to the bundle (ctl fifo, attach socket)
 *     exit, oom                        written by conmon when the container ends / hits OOM
 *     exec-<n>/                        one exec session (process.json, pid file)
 *   <run_root>/attach/<id> -> bundle   conmon's short link for the attach socket
 *   <exit_dir>/<id>                    exit code, written by conmon (watched by berth)
 */
import { join } from 'node:path';
import { InvalidArgumentError } from '../src/errors.js';

export interface ConmonLayout {
  runRoot: string;
  exitDir: string;
}

/** IDs become path components and runtime arguments: keep them boring. */
export function assertContainerId(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) {
    throw new InvalidArgumentError(
      `container ID ${JSON.stringify(id)} is not a valid ID ([A-Za-z0-9_.-], at most 128)`,
    );
  }
}

export const persistRoot = (layout: ConmonLayout): string => join(layout.runRoot, 'conmon');
export const persistDir = (layout: ConmonLayout, id: string): string => join(persistRoot(layout), id);
export const socketDir = (layout: ConmonLayout): string => join(layout.runRoot, 'attach');
export const containerPidFile = (layout: ConmonLayout, id: string): string =>
  join(persistDir(layout, id), 'pidfile');
export const conmonPidFile = (layout: ConmonLayout, id: string): string =>
  join(persistDir(layout, id), 'conmon.pid');
export const bundleLink = (layout: ConmonLayout, id: string): string =>
  join(persistDir(layout, id), 'bundle');
export const oomFile = (layout: ConmonLayout, id: string): string => join(persistDir(layout, id), 'oom');
export const exitFile = (layout: ConmonLayout, id: string): string => join(layout.exitDir, id);
/** conmon's control fifo lives in the bundle; reached through berth's link. */
export const ctlFifo = (layout: ConmonLayout, id: string): string => join(bundleLink(layout, id), 'ctl');
/** conmon's attach socket (SOCK_SEQPACKET), through conmon's own short link. */
export const attachSocket = (layout: ConmonLayout, id: string): string =>
  join(socketDir(layout), id, 'attach');
