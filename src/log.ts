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

/** A logger that discards everything, for unit tests and library callers. */
export const silentLogger: Logger = pino({ level: 'silent' });
