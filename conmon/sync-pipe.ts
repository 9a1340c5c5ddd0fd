/**
 * conmon's sync pipe protocol (--api-version 1): newline-terminated JSON
 * objects `{"data": N}` or `{"data": -1, "message": "…"}`. For a create, the
 * first object carries the container pid, or -1 and the runtime's stderr.
 */

export interface SyncMessage {
  data: number;
  message?: string;
}

/** Parses one line of the sync pipe; undefined when it is not a sync message. */
export function parseSyncLine(line: string): SyncMessage | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const record = parsed as Record<string, unknown>;
  // api-version 1 says "data"; legacy conmon said "pid" (create) or "exit_code" (exec).
  const value = record.data ?? record.pid ?? record.exit_code;
  if (typeof value !== 'number') return undefined;
  return typeof record.message === 'string' ? { data: value, message: record.message } : { data: value };
}

/**
 * Reads sync messages from a stream: resolves with the first one, or rejects
 * when the stream ends first (conmon died before reporting).
 */
export function readSyncMessage(stream: NodeJS.ReadableStream, signal?: AbortSignal): Promise<SyncMessage> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const cleanup = () => {
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      stream.removeListener('close', onEnd);
      stream.removeListener('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onData = (chunk: Buffer | string) => {
      buffer += chunk.toString();
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        const message = line ? parseSyncLine(line) : undefined;
        if (message) {
          cleanup();
          resolve(message);
          return;
        }
      }
    };
    const onEnd = () => {
      const last = buffer.trim() ? parseSyncLine(buffer.trim()) : undefined;
      cleanup();
      if (last) resolve(last);
      else reject(new Error('conmon closed its sync pipe without reporting'));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onAbort = () => {
      cleanup();
      reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}
