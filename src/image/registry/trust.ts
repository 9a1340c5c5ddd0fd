/**
 * TLS contexts for registry connections: whom berth trusts, parsed as few
 * times as possible. A context made from a `ca` list parses and stores every
 * CA in it (16-24 ms of the event loop and up to ~4.5 MiB for the ~260 of
 * Node's bundled roots and the system store), so registries that trust the
 * same share one context instead of making one per registry.
 *
 * Not `--use-system-ca` (Node's default store with the system CAs in it,
 * shared by every context): Node builds that store while the daemon's
 * modules load, which cost ~3 MiB of idle RSS whether or not anything is ever
 * pulled over HTTPS (bench/pull README).
 */
import { createSecureContext, getCACertificates, rootCertificates, type SecureContext } from 'node:tls';

let listed: string[] | undefined;
let contextsFromLists = 0;

/** How many contexts were made from a CA list, each parsing it all (tests). */
export function contextsMadeFromCaLists(): number {
  return contextsFromLists;
}

function fromList(ca: string[]): SecureContext {
  contextsFromLists++;
  return createSecureContext({ ca });
}

/** Node's bundled roots plus the system store as PEM, read once (reading blocks for a while). */
function trustedCAs(): string[] {
  listed ??= [...new Set([...rootCertificates, ...getCACertificates('system')])];
  return listed;
}

let verifying: SecureContext | undefined;
let acceptingAny: SecureContext | undefined;

/** The system store is read again for the next context (after `update-ca-certificates`, on SIGHUP). */
export function forgetRegistryTrust(): void {
  listed = undefined;
  verifying = undefined;
}

export interface RegistryTrust {
  /** Any certificate is accepted (the caller also stops rejecting unauthorized peers). */
  insecure: boolean;
  /** PEM of a CA trusted for this registry only, besides the others. */
  extraCa?: string;
}

/** The context for a registry's connections; registries that trust the same share one. */
export function registryTlsContext({ insecure, extraCa }: RegistryTrust): SecureContext {
  // Certificates do not matter there: an empty store, not the system's parsed for nothing.
  if (insecure) return (acceptingAny ??= createSecureContext({ ca: [] }));
  if (extraCa !== undefined) return fromList([...trustedCAs(), extraCa]);
  return (verifying ??= fromList(trustedCAs()));
}
