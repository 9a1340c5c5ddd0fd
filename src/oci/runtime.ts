/**
 * The driver for OCI runtime binaries (runc, runsc, crun share this CLI):
 * `--root R <verb> … ID`. Every error names the handler and the container.
 */
import { run, type RunResult } from '../util/run.js';
import { FailedPreconditionError, InternalError, NotFoundError, UnavailableError } from '../errors.js';
import type { RuntimeHandler, RuntimeState } from './types.js';

/** How long a runtime verb may take before berth gives up on it. */
const VERB_TIMEOUT_MS = 60_000;

/** Global flags placed before the verb: --root plus the handler's extra flags. */
export function runtimeGlobalArgs(handler: RuntimeHandler): string[] {
  return [`--root=${handler.root}`, ...(handler.runtimeArgs ?? [])];
}

/** The runtime's own words from a failed run: its last error line, without log noise. */
export function runtimeMessage(result: RunResult): string {
  const text = (result.stderr.trim() || result.stdout.trim()).slice(-4000);
  const lines = text.split('\n').filter(Boolean);
  // runc and crun log JSON lines or `level=error msg="…"`; keep the message part.
  const last = lines.at(-1) ?? '';
  try {
    const parsed = JSON.parse(last) as { msg?: unknown };
    if (typeof parsed.msg === 'string') return parsed.msg;
  } catch {
    // not JSON
  }
  const logfmt = /msg="((?:[^"\\]|\\.)*)"/.exec(last);
  if (logfmt) return logfmt[1].replace(/\\"/g, '"');
  if (result.signal) return `killed by ${result.signal}`;
  return last || `exited with ${result.code}`;
}

/** True when the runtime says the container is unknown to it. */
export function isNotExist(result: RunResult): boolean {
  return /does not exist|not found|no such file or directory|container .* is not exist/i.test(
    result.stderr + result.stdout,
  );
}

function describe(handler: RuntimeHandler, id: string): string {
  return `container ${id} (runtime handler ${JSON.stringify(handler.name)}, ${handler.path})`;
}

/** Runs one verb of the handler's runtime. Rejects only when the binary cannot be started. */
export async function runtimeRun(
  handler: RuntimeHandler,
  verbArgs: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  try {
    return await run(handler.path, [...runtimeGlobalArgs(handler), ...verbArgs], {
      input: options.input,
      timeoutMs: options.timeoutMs ?? VERB_TIMEOUT_MS,
    });
  } catch (err) {
    throw new UnavailableError(
      `runtime handler ${JSON.stringify(handler.name)}: cannot run ${handler.path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** `runtime state ID`; undefined when the runtime does not know the container. */
export async function runtimeState(handler: RuntimeHandler, id: string): Promise<RuntimeState | undefined> {
  const result = await runtimeRun(handler, ['state', id]);
  if (result.code !== 0) {
    if (isNotExist(result)) return undefined;
    throw new InternalError(`state of ${describe(handler, id)} failed: ${runtimeMessage(result)}`);
  }
  let parsed: { status?: unknown; pid?: unknown };
  try {
    parsed = JSON.parse(result.stdout) as { status?: unknown; pid?: unknown };
  } catch (err) {
    throw new InternalError(
      `state of ${describe(handler, id)}: unparsable output ${result.stdout.slice(0, 200)}`,
      {
        cause: err,
      },
    );
  }
  const status = parsed.status;
  if (
    status !== 'creating' &&
    status !== 'created' &&
    status !== 'running' &&
    status !== 'stopped' &&
    status !== 'paused'
  ) {
    throw new InternalError(`state of ${describe(handler, id)}: unknown status ${JSON.stringify(status)}`);
  }
  return { status, pid: typeof parsed.pid === 'number' ? parsed.pid : 0 };
}

/** `runtime start ID`: runs the user process of a created container. */
export async function runtimeStart(handler: RuntimeHandler, id: string): Promise<void> {
  const result = await runtimeRun(handler, ['start', id]);
  if (result.code === 0) return;
  if (isNotExist(result))
    throw new NotFoundError(`start of ${describe(handler, id)}: the runtime does not know it`);
  throw new FailedPreconditionError(`start of ${describe(handler, id)} failed: ${runtimeMessage(result)}`);
}

/**
 * `runtime kill [--all] ID SIGNAL`. A container that already stopped is not an
 * error (stopping is idempotent); one the runtime does not know is NotFound.
 */
export async function runtimeKill(
  handler: RuntimeHandler,
  id: string,
  signal: string,
  all = false,
): Promise<void> {
  const sig = signal.replace(/^SIG/, '');
  const result = await runtimeRun(handler, ['kill', ...(all ? ['--all'] : []), id, sig]);
  if (result.code === 0) return;
  const text = result.stderr + result.stdout;
  if (/not running|process already finished|no such process|container .*stopped/i.test(text)) return;
  if (isNotExist(result))
    throw new NotFoundError(`kill of ${describe(handler, id)}: the runtime does not know it`);
  // runc refuses `kill` (without --all) of a stopped container with a vague error; look again.
  const state = await runtimeState(handler, id).catch(() => undefined);
  if (state?.status === 'stopped') return;
  throw new InternalError(`kill ${sig} of ${describe(handler, id)} failed: ${runtimeMessage(result)}`);
}

/** `runtime delete [--force] ID`; idempotent for a container the runtime does not know. */
export async function runtimeDelete(handler: RuntimeHandler, id: string, force: boolean): Promise<void> {
  const result = await runtimeRun(handler, ['delete', ...(force ? ['--force'] : []), id]);
  if (result.code === 0 || isNotExist(result)) return;
  throw new FailedPreconditionError(`delete of ${describe(handler, id)} failed: ${runtimeMessage(result)}`);
}

/** `runtime update --resources - ID` with linux.resources JSON on stdin. */
export async function runtimeUpdate(
  handler: RuntimeHandler,
  id: string,
  resources: Record<string, unknown>,
): Promise<void> {
  const result = await runtimeRun(handler, ['update', '--resources', '-', id], {
    input: JSON.stringify(resources),
  });
  if (result.code === 0) return;
  if (isNotExist(result))
    throw new NotFoundError(`update of ${describe(handler, id)}: the runtime does not know it`);
  throw new FailedPreconditionError(`update of ${describe(handler, id)} failed: ${runtimeMessage(result)}`);
}

/** `runtime ps --format json ID`: host pids of the container's processes. */
export async function runtimePs(handler: RuntimeHandler, id: string): Promise<number[]> {
  const result = await runtimeRun(handler, ['ps', '--format', 'json', id]);
  if (result.code !== 0) {
    if (isNotExist(result))
      throw new NotFoundError(`ps of ${describe(handler, id)}: the runtime does not know it`);
    throw new InternalError(`ps of ${describe(handler, id)} failed: ${runtimeMessage(result)}`);
  }
  const pids = JSON.parse(result.stdout || '[]') as unknown;
  return Array.isArray(pids) ? pids.filter((p): p is number => typeof p === 'number') : [];
}
