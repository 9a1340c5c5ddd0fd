/**
 * CheckpointContainer: a running container's process tree saved by CRIU
 * (through the OCI runtime's `checkpoint --leave-running`) into one tar
 * archive at `location`, in the layout CRI-O and Podman use: checkpoint/
 * (CRIU images), spec.dump (the OCI spec), config.dump (berth's container
 * record) and rootfs-diff.tar (the writable layer). The container keeps
 * running. Needs a CRIU that works on the host; `criu check` decides.
 */
import { mkdtemp, rename, rm, stat, writeFile, copyFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { CheckpointContainerResponse } from '../generated/api.js';
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
} from '../errors.js';
import { stateOf } from '../container/record.js';
import { rootfsPaths } from '../container/rootfs.js';
import { runtimeGlobalArgs } from '../oci/runtime.js';
import { fsyncDir, fsyncFile } from '../util/atomic-file.js';
import { run } from '../util/run.js';
import type { ServerContext } from './context.js';
import type { RuntimeImpl } from './rpc.js';

export const CRIU = '/usr/sbin/criu';
const DEFAULT_TIMEOUT_S = 120;

/** Whether CRIU works here; the first error line of `criu check` when it doesn't. Asked once. */
let criuCheck: Promise<{ ok: true } | { ok: false; reason: string }> | undefined;
export function checkCriu(): Promise<{ ok: true } | { ok: false; reason: string }> {
  criuCheck ??= run(CRIU, ['check'], { timeoutMs: 30_000 }).then(
    (result) => {
      if (result.code === 0) return { ok: true as const };
      const line = `${result.stderr}\n${result.stdout}`.split('\n').find((l) => /error/i.test(l));
      return { ok: false as const, reason: (line ?? `exit code ${result.code}`).trim() };
    },
    (err: unknown) => ({ ok: false as const, reason: `cannot run ${CRIU}: ${String(err)}` }),
  );
  return criuCheck;
}

function checkLocation(location: string, containerId: string): string {
  if (!location) throw new InvalidArgumentError(`checkpoint of container ${containerId}: location is empty`);
  if (!isAbsolute(location) || normalize(location) !== location || location.endsWith('/'))
    throw new InvalidArgumentError(
      `checkpoint of container ${containerId}: location ${JSON.stringify(location)} must be a clean absolute file path`,
    );
  return location;
}

async function runOrThrow(file: string, args: string[], what: string, timeoutMs: number): Promise<void> {
  const result = await run(file, args, { timeoutMs });
  // run() kills on timeout; nothing else signals these children.
  if (result.signal)
    throw new DeadlineExceededError(`${what} did not finish within ${timeoutMs / 1000}s (${result.signal})`);
  if (result.code !== 0)
    throw new InternalError(`${what} failed (exit ${result.code}): ${result.stderr.trim().slice(-2000)}`);
}

export function containerCheckpointRpcs(ctx: ServerContext): RuntimeImpl {
  return {
    checkpointContainer: async (request) => {
      const record = ctx.containers.get(request.containerId);
      const what = `checkpoint of container ${record.id} (${record.name})`;
      const location = checkLocation(request.location, record.id);
      const parent = await stat(dirname(location)).catch(() => undefined);
      if (!parent?.isDirectory())
        throw new InvalidArgumentError(`${what}: directory ${dirname(location)} does not exist`);
      if (stateOf(record) !== 'running')
        throw new FailedPreconditionError(`${what}: the container is ${stateOf(record)}, not running`);
      const criu = await checkCriu();
      if (!criu.ok)
        throw new FailedPreconditionError(
          `${what}: needs CRIU, and \`criu check\` fails on this host: ${criu.reason}`,
        );
      const timeoutMs = Number(request.timeout > 0n ? request.timeout : BigInt(DEFAULT_TIMEOUT_S)) * 1000;
      const handler = ctx.containers.handlerOf(record);
      const work = await mkdtemp(join(dirname(location), '.berth-checkpoint-'));
      try {
        const images = join(work, 'checkpoint');
        await runOrThrow(
          handler.path,
          [
            ...runtimeGlobalArgs(handler),
            'checkpoint',
            '--image-path',
            images,
            '--work-path',
            join(work, 'criu-work'),
            '--leave-running',
            '--tcp-established',
            '--file-locks',
            record.id,
          ],
          `${what}: ${handler.name} checkpoint`,
          timeoutMs,
        );
        await copyFile(join(record.bundleDir, 'config.json'), join(work, 'spec.dump'));
        await writeFile(join(work, 'config.dump'), JSON.stringify(record, null, 2));
        await runOrThrow(
          'tar',
          [
            '--create',
            '--file',
            join(work, 'rootfs-diff.tar'),
            '--numeric-owner',
            '--xattrs',
            '--directory',
            rootfsPaths(record.containerDir).upper,
            '.',
          ],
          `${what}: archiving the writable layer`,
          timeoutMs,
        );
        const partial = join(work, 'archive.tar');
        await runOrThrow(
          'tar',
          [
            '--create',
            '--file',
            partial,
            '--numeric-owner',
            '--directory',
            work,
            'checkpoint',
            'spec.dump',
            'config.dump',
            'rootfs-diff.tar',
          ],
          `${what}: writing the archive`,
          timeoutMs,
        );
        // Whole or nothing at `location`, after a power loss too.
        await fsyncFile(partial);
        await rename(partial, location);
        await fsyncDir(dirname(location));
      } finally {
        await rm(work, { recursive: true, force: true });
      }
      return CheckpointContainerResponse.fromPartial({});
    },
  };
}
