import { EventEmitter } from 'node:events';
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

// Keys whose values must never reach a log line (registry credentials, stream tokens).
const REDACT = [
  'auth.password',
  'auth.auth',
  'auth.identityToken',
  'auth.registryToken',
  '*.password',
  '*.auth',
  '*.identityToken',
  '*.registryToken',
  'token',
];

export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    { name: 'berth', level, redact: { paths: REDACT, censor: '[redacted]' }, base: { pid: process.pid } },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

/**
 * Waits (at most `timeoutMs`) until the line just logged and those before it
 * are written, or writing failed. Called before the process exits: pino's own
 * exit hook then has nothing left to flush. That hook's synchronous flush
 * retries a broken pipe forever (stderr's reader gone, as when journald
 * restarts), so a daemon that left lines to it never exited; an asynchronous
 * write reports the broken pipe instead, and pino stops writing.
 */
export function flushLog(log: Logger, timeoutMs: number): Promise<void> {
  const stream: unknown = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  if (!(stream instanceof EventEmitter)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stream.off('drain', done);
      stream.off('error', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    stream.once('drain', done);
    stream.once('error', done);
    log.flush();
  });
}

/** A logger that discards everything, for unit tests and library callers. */
export const silentLogger: Logger = pino({ level: 'silent' });
