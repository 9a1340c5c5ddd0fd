/**
 * The outcome of an exec or attach as the error stream carries it: protocol
 * v4 and later send a JSON metav1.Status (the exit code as a cause of reason
 * NonZeroExitCode); earlier protocols send only a failure's message as text.
 */

export type Outcome = { kind: 'exit'; exitCode: number } | { kind: 'error'; message: string };

export interface KubeStatus {
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: string;
  details?: { causes: { reason?: string; message: string }[] };
  code?: number;
}

export function outcomeStatus(outcome: Outcome): KubeStatus {
  if (outcome.kind === 'exit') {
    if (outcome.exitCode === 0) return { metadata: {}, status: 'Success' };
    return {
      metadata: {},
      status: 'Failure',
      message: `command terminated with non-zero exit code: exit status ${outcome.exitCode}`,
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: String(outcome.exitCode) }] },
    };
  }
  const message = `Internal error occurred: ${outcome.message}`;
  return {
    metadata: {},
    status: 'Failure',
    message,
    reason: 'InternalError',
    details: { causes: [{ message: outcome.message }] },
    code: 500,
  };
}

/** Bytes to write on the error stream (empty: write nothing). */
export function encodeOutcome(outcome: Outcome, jsonStatus: boolean): Buffer {
  const status = outcomeStatus(outcome);
  if (jsonStatus) return Buffer.from(JSON.stringify(status));
  if (status.status === 'Success') return Buffer.alloc(0);
  return Buffer.from(status.message ?? 'error');
}
