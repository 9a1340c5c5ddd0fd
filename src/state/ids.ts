/**
 * Object ids (64 hex digits, like CRI-O and containerd) and lookup by unique
 * prefix, as crictl users type them.
 */
import { randomBytes } from 'node:crypto';
import { InvalidArgumentError, NotFoundError } from '../errors.js';

export function newId(): string {
  return randomBytes(32).toString('hex');
}

/**
 * The one id among `ids` equal to or starting with `idOrPrefix`. Unknown is
 * undefined; a prefix matching several is INVALID_ARGUMENT naming the count.
 */
export function matchPrefix(ids: Iterable<string>, idOrPrefix: string, what: string): string | undefined {
  if (idOrPrefix === '') throw new InvalidArgumentError(`${what} ID is empty`);
  const matches: string[] = [];
  for (const id of ids) {
    if (id === idOrPrefix) return id;
    if (id.startsWith(idOrPrefix)) matches.push(id);
  }
  if (matches.length > 1) {
    throw new InvalidArgumentError(
      `${what} ID prefix ${JSON.stringify(idOrPrefix)} is ambiguous: it matches ${matches.length} ${what}s`,
    );
  }
  return matches[0];
}

/** Like matchPrefix, but unknown is NOT_FOUND. */
export function resolvePrefix(ids: Iterable<string>, idOrPrefix: string, what: string): string {
  const id = matchPrefix(ids, idOrPrefix, what);
  if (id === undefined) throw new NotFoundError(`${what} ${JSON.stringify(idOrPrefix)} not found`);
  return id;
}
