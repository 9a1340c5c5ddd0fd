/**
 * What the streaming server needs from the rest of berth. The container and
 * sandbox managers implement StreamBackend; the server only resolves IDs
 * through it, at URL creation (to refuse early) and again when the client
 * connects (the container may have stopped in between).
 *
 * resolve* throw NotFoundError for unknown IDs and FailedPreconditionError
 * when the container or sandbox is not running.
 */
import type { ExecProcess } from '../oci/types.js';

export interface ExecTarget {
  /** Starts a process in the container; the server owns its stdio. */
  start(args: string[], tty: boolean): Promise<ExecProcess>;
}

export interface AttachTarget {
  /** conmon's attach socket (SOCK_SEQPACKET) of the container. */
  socketPath: string;
  /** conmon's control fifo (terminal resize). */
  ctlPath: string;
  /** The container was created with a terminal. */
  tty: boolean;
  /** The container keeps stdin open for attach (CRI `stdin`). */
  stdin: boolean;
  /** CRI `stdin_once`: the first attach that closes stdin closes the container's. */
  stdinOnce: boolean;
}

export interface PortForwardTarget {
  /** Network namespace of the pod (a bind-mounted nsfs file or /proc/PID/ns/net). */
  netnsPath: string;
}

export interface StreamBackend {
  resolveExec(containerId: string): Promise<ExecTarget>;
  resolveAttach(containerId: string): Promise<AttachTarget>;
  resolvePortForward(podSandboxId: string): Promise<PortForwardTarget>;
}

/** A validated request waiting for its client, keyed by token. */
export type PendingRequest =
  | {
      kind: 'exec';
      containerId: string;
      cmd: string[];
      tty: boolean;
      stdin: boolean;
      stdout: boolean;
      stderr: boolean;
    }
  | { kind: 'attach'; containerId: string; tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean }
  | { kind: 'portforward'; podSandboxId: string; ports: number[] };

/** Terminal size as clients send it on the resize stream. */
export interface TerminalSize {
  width: number;
  height: number;
}
