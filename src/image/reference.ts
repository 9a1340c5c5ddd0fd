/**
 * Image references (the Docker/OCI distribution grammar): parsing, validation
 * and normalisation to fully qualified names, as kubelet and crictl send them.
 */
import { InvalidArgumentError } from '../errors.js';

export const DOCKER_HUB = 'docker.io';
const LEGACY_HUB_NAMES = new Set(['index.docker.io', 'registry-1.docker.io']);

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_HEX = /^[a-f0-9]{64}$/;
const MAX_NAME_LENGTH = 255;

/** A reference as written: the domain only when the text names one. */
export interface ParsedReference {
  domain?: string;
  path: string;
  tag?: string;
  digest?: string;
}

/** A fully qualified reference: registry, repository and a tag or digest (or both). */
export interface ImageReference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/** True for "sha256:<64 hex>" or a bare 64-hex image ID. */
export function isImageId(input: string): boolean {
  return SHA256_HEX.test(input) || (input.startsWith('sha256:') && SHA256_HEX.test(input.slice(7)));
}

function isDomain(text: string): boolean {
  // host[:port] where host is dotted components, localhost, or a bracketed IPv6 address.
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+)(?::(\d+))?$/.exec(text);
  if (!m) return false;
  if (m[2] !== undefined && (Number(m[2]) === 0 || Number(m[2]) > 65535)) return false;
  const host = m[1];
  if (host.startsWith('[')) return true;
  return host.split('.').every((c) => DOMAIN_COMPONENT.test(c));
}

function invalid(input: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`invalid image reference ${JSON.stringify(input)}: ${why}`);
}

/** Parses without normalising; throws InvalidArgumentError naming what is wrong. */
export function parseReference(input: string): ParsedReference {
  if (input === '') throw invalid(input, 'it is empty');
  if (/\s/.test(input)) throw invalid(input, 'it contains white space');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(input, `"${digest}" is not a digest (algorithm:hex)`);
    if (digest.startsWith('sha256:') && !SHA256_HEX.test(digest.slice(7))) {
      throw invalid(input, 'a sha256 digest needs 64 lowercase hex characters');
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(input, `"${tag}" is not a valid tag`);
  }
  if (rest === '') throw invalid(input, 'it has no repository name');
  const parts = rest.split('/');
  let domain: string | undefined;
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost')) {
    domain = parts.shift()!;
    if (!isDomain(domain)) throw invalid(input, `"${domain}" is not a valid registry host`);
  }
  for (const part of parts) {
    if (part !== part.toLowerCase() && PATH_COMPONENT.test(part.toLowerCase())) {
      throw invalid(input, 'repository names must be lowercase');
    }
    if (!PATH_COMPONENT.test(part))
      throw invalid(input, `"${part}" is not a valid repository path component`);
  }
  const path = parts.join('/');
  if ((domain ? domain.length + 1 : 0) + path.length > MAX_NAME_LENGTH) {
    throw invalid(input, `the name is longer than ${MAX_NAME_LENGTH} characters`);
  }
  return { domain, path, tag, digest };
}

function qualify(parsed: ParsedReference, registry: string): ImageReference {
  let host = LEGACY_HUB_NAMES.has(registry) ? DOCKER_HUB : registry;
  host = host.replace(/\/+$/, '');
  const repository =
    host === DOCKER_HUB && !parsed.path.includes('/') ? `library/${parsed.path}` : parsed.path;
  const tag = parsed.tag ?? (parsed.digest ? undefined : 'latest');
  return { registry: host, repository, tag, digest: parsed.digest };
}

/** True when the reference names no registry (so search registries apply). */
export function isShortName(input: string): boolean {
  return parseReference(input).domain === undefined;
}

/**
 * Fully qualifies a reference; a short name goes to docker.io (the default
 * registry). Adds `latest` when there is neither tag nor digest.
 */
export function normalizeReference(input: string, defaultRegistry = DOCKER_HUB): ImageReference {
  const parsed = parseReference(input);
  return qualify(parsed, parsed.domain ?? defaultRegistry);
}

/**
 * The references a pull should try, in order: the reference itself when it
 * names a registry, else one per unqualified-search registry.
 */
export function pullCandidates(input: string, searchRegistries: readonly string[]): ImageReference[] {
  const parsed = parseReference(input);
  if (parsed.domain !== undefined) return [qualify(parsed, parsed.domain)];
  if (searchRegistries.length === 0) {
    throw invalid(input, 'it is a short name and no unqualified-search registries are configured');
  }
  return searchRegistries.map((registry) => qualify(parsed, registry));
}

/** "registry/repository". */
export function repositoryName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** "registry/repository:tag", or undefined without a tag. */
export function taggedName(ref: ImageReference): string | undefined {
  return ref.tag === undefined ? undefined : `${repositoryName(ref)}:${ref.tag}`;
}

/** "registry/repository@digest". */
export function digestedName(ref: ImageReference, digest: string): string {
  return `${repositoryName(ref)}@${digest}`;
}

/** Canonical text: digest form when there is a digest, else tag form. */
export function formatReference(ref: ImageReference): string {
  return ref.digest ? digestedName(ref, ref.digest) : (taggedName(ref) ?? repositoryName(ref));
}
