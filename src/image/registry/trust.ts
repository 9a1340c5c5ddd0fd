/**
 * TLS contexts for registry connections: whom berth trusts, parsed as few
 * times as possible. A context given a `ca` list parses and stores every CA
 * in it (~20 ms of the event loop and ~4.5 MiB for the system's ~260), so
 * one list per registry pool cost that again for every registry pulled from.
 */
import { createSecureContext, getCACertificates, rootCertificates, type SecureContext } from 'node:tls';
import { SYSTEM_CA_FLAG } from '../../cli/v8-flags.js';

/**
 * The daemon starts with this flag: Node's default CA store then holds the
 * system's CAs besides its bundled ones, read once per process and shared by
 * every context made without a `ca` list.
 */
function systemCasInDefaultStore(): boolean {
  return process.execArgv.includes(SYSTEM_CA_FLAG);
}

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
  listed ??= systemCasInDefaultStore()
    ? getCACertificates('default')
    : [...new Set([...rootCertificates, ...getCACertificates('system')])];
  return listed;
}

let verifying: SecureContext | undefined;
let acceptingAny: SecureContext | undefined;

export interface RegistryTrust {
  /** Any certificate is accepted (the caller also stops rejecting unauthorized peers). */
  insecure: boolean;
  /** PEM of a CA trusted for this registry only, besides the system's. */
  extraCa?: string;
}

/** The context for a registry's connections; registries that trust the same share one. */
export function registryTlsContext({ insecure, extraCa }: RegistryTrust): SecureContext {
  // Certificates do not matter there: an empty store, not the system's parsed for nothing.
  if (insecure) return (acceptingAny ??= createSecureContext({ ca: [] }));
  if (extraCa !== undefined) return fromList([...trustedCAs(), extraCa]);
  verifying ??= systemCasInDefaultStore() ? createSecureContext() : fromList(trustedCAs());
  return verifying;
}
