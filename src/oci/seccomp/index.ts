/**
 * linux.seccomp of a container or infra from its CRI SecurityProfile:
 * RuntimeDefault (berth's own profile), Unconfined, or Localhost (a profile
 * file on the host, validated and converted from the Docker format when
 * needed). Privileged containers run unconfined.
 */
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { posix } from 'node:path';
import { arch } from 'node:process';
import { SecurityProfile_ProfileType, type SecurityProfile } from '../../generated/api.js';
import { FailedPreconditionError, InvalidArgumentError, errnoCode, errorMessage } from '../../errors.js';
import { secureJoin } from '../../util/safe-path.js';
import type { OciSeccomp, OciSeccompArg, OciSeccompSyscall } from '../spec/types.js';
import { defaultSeccompProfile } from './default-profile.js';

export { defaultSeccompProfile } from './default-profile.js';

const ACTIONS = new Set([
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_LOG',
  'SCMP_ACT_NOTIFY',
]);
const OPERATORS = new Set([
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
]);
const FLAGS = new Set([
  'SECCOMP_FILTER_FLAG_TSYNC',
  'SECCOMP_FILTER_FLAG_LOG',
  'SECCOMP_FILTER_FLAG_SPEC_ALLOW',
  'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV',
]);
/** libseccomp arch of this machine, for Docker-format archMap entries. */
const NATIVE_ARCH: Record<string, string> = {
  x64: 'SCMP_ARCH_X86_64',
  arm64: 'SCMP_ARCH_AARCH64',
  arm: 'SCMP_ARCH_ARM',
  ia32: 'SCMP_ARCH_X86',
  ppc64: 'SCMP_ARCH_PPC64LE',
  s390x: 'SCMP_ARCH_S390X',
  riscv64: 'SCMP_ARCH_RISCV64',
};
const MAX_PROFILE_BYTES = 4 * 1024 * 1024;

/** The effective profile: the structured field, else the deprecated path string. */
export function effectiveProfile(
  profile: SecurityProfile | undefined,
  deprecatedPath: string,
  what: string,
): SecurityProfile {
  if (profile) return profile;
  const path = deprecatedPath ?? '';
  if (path === '' || path === 'unconfined')
    return { profileType: SecurityProfile_ProfileType.Unconfined, localhostRef: '' };
  if (path === 'runtime/default' || path === 'docker/default') {
    return { profileType: SecurityProfile_ProfileType.RuntimeDefault, localhostRef: '' };
  }
  if (path.startsWith('localhost/')) {
    return {
      profileType: SecurityProfile_ProfileType.Localhost,
      localhostRef: path.slice('localhost/'.length),
    };
  }
  throw new InvalidArgumentError(`${what}: unknown seccomp profile ${JSON.stringify(path)}`);
}

export interface SeccompOptions {
  privileged: boolean;
  /** The kernel supports seccomp filters. */
  seccompEnabled: boolean;
  /** The container's bounding set (the default profile opens calls per capability). */
  capabilities: readonly string[];
  /** Directory relative Localhost refs are resolved in ('' = only absolute refs). */
  profileRoot?: string;
  what: string;
}

/** linux.seccomp for the profile; undefined for unconfined. */
export async function seccompFor(
  profile: SecurityProfile,
  options: SeccompOptions,
): Promise<OciSeccomp | undefined> {
  if (options.privileged) return undefined;
  switch (profile.profileType) {
    case SecurityProfile_ProfileType.Unconfined:
      return undefined;
    case SecurityProfile_ProfileType.RuntimeDefault:
      if (!options.seccompEnabled) {
        throw new FailedPreconditionError(
          `${options.what}: seccomp profile RuntimeDefault asked for, but this kernel has no seccomp`,
        );
      }
      return defaultSeccompProfile(options.capabilities);
    case SecurityProfile_ProfileType.Localhost: {
      if (!options.seccompEnabled) {
        throw new FailedPreconditionError(
          `${options.what}: seccomp profile ${profile.localhostRef} asked for, but this kernel has no seccomp`,
        );
      }
      return loadLocalhostProfile(profile.localhostRef, options);
    }
    default:
      throw new InvalidArgumentError(`${options.what}: unknown seccomp profile type ${profile.profileType}`);
  }
}

async function profilePath(ref: string, options: SeccompOptions): Promise<string> {
  if (ref === '' || ref.includes('\0'))
    throw new InvalidArgumentError(`${options.what}: Localhost seccomp profile has no path`);
  if (posix.isAbsolute(ref)) return ref;
  if (!options.profileRoot) {
    throw new InvalidArgumentError(
      `${options.what}: Localhost seccomp profile ${JSON.stringify(ref)} is not an absolute path`,
    );
  }
  return secureJoin(options.profileRoot, ref);
}

/** Reads, validates and converts a Localhost profile file. */
export async function loadLocalhostProfile(ref: string, options: SeccompOptions): Promise<OciSeccomp> {
  const path = await profilePath(ref, options);
  let text: string;
  try {
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile())
        throw new InvalidArgumentError(`${options.what}: seccomp profile ${path} is not a regular file`);
      if (info.size > MAX_PROFILE_BYTES)
        throw new InvalidArgumentError(`${options.what}: seccomp profile ${path} is too large`);
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    if (errnoCode(err) === 'ENOENT')
      throw new InvalidArgumentError(`${options.what}: seccomp profile ${path} does not exist`);
    throw new InvalidArgumentError(
      `${options.what}: cannot read seccomp profile ${path}: ${errorMessage(err)}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(
      `${options.what}: seccomp profile ${path} is not JSON: ${errorMessage(err)}`,
    );
  }
  return convertProfile(parsed, options.capabilities, `${options.what}: seccomp profile ${path}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringList(v: unknown, field: string, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
    throw new InvalidArgumentError(`${what}: ${field} must be a list of strings`);
  return v as string[];
}

function action(v: unknown, field: string, what: string): string {
  if (typeof v !== 'string' || !ACTIONS.has(v))
    throw new InvalidArgumentError(`${what}: ${field} ${JSON.stringify(v)} is not a seccomp action`);
  return v;
}

function errnoRet(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 4095)
    throw new InvalidArgumentError(`${what}: errnoRet ${JSON.stringify(v)} is not an errno`);
  return v;
}

/** Docker's includes/excludes: a rule applies only for some capabilities or architectures. */
function ruleApplies(rule: Record<string, unknown>, caps: ReadonlySet<string>): boolean {
  const native = NATIVE_ARCH[arch];
  const inc = isRecord(rule.includes) ? rule.includes : {};
  const exc = isRecord(rule.excludes) ? rule.excludes : {};
  const incCaps = Array.isArray(inc.caps) ? (inc.caps as unknown[]) : [];
  const excCaps = Array.isArray(exc.caps) ? (exc.caps as unknown[]) : [];
  const incArches = Array.isArray(inc.arches) ? (inc.arches as unknown[]) : [];
  const excArches = Array.isArray(exc.arches) ? (exc.arches as unknown[]) : [];
  const archName = (a: unknown) =>
    typeof a === 'string' ? (a.startsWith('SCMP_ARCH_') ? a : `SCMP_ARCH_${a.toUpperCase()}`) : '';
  if (incCaps.length > 0 && !incCaps.every((c) => typeof c === 'string' && caps.has(c))) return false;
  if (excCaps.some((c) => typeof c === 'string' && caps.has(c))) return false;
  if (incArches.length > 0 && !incArches.map(archName).includes(native)) return false;
  if (excArches.map(archName).includes(native)) return false;
  return true;
}

/**
 * Validates a profile in the OCI (linux.seccomp) or Docker format and returns
 * it as linux.seccomp.
 */
export function convertProfile(raw: unknown, capabilities: readonly string[], what: string): OciSeccomp {
  if (!isRecord(raw)) throw new InvalidArgumentError(`${what}: not a JSON object`);
  const caps = new Set(capabilities);
  const out: OciSeccomp = { defaultAction: action(raw.defaultAction, 'defaultAction', what) };
  const defaultErrno = errnoRet(raw.defaultErrnoRet, what);
  if (defaultErrno !== undefined) out.defaultErrnoRet = defaultErrno;
  let architectures = stringList(raw.architectures, 'architectures', what);
  if (Array.isArray(raw.archMap)) {
    architectures = [];
    for (const entry of raw.archMap as unknown[]) {
      if (!isRecord(entry) || typeof entry.architecture !== 'string')
        throw new InvalidArgumentError(`${what}: archMap entries need an architecture`);
      if (entry.architecture !== NATIVE_ARCH[arch]) continue;
      architectures.push(entry.architecture, ...stringList(entry.subArchitectures, 'subArchitectures', what));
    }
  }
  if (architectures.length > 0) out.architectures = architectures;
  const flags = stringList(raw.flags, 'flags', what);
  for (const f of flags)
    if (!FLAGS.has(f)) throw new InvalidArgumentError(`${what}: unknown seccomp flag ${JSON.stringify(f)}`);
  if (flags.length > 0) out.flags = flags;
  if (raw.listenerPath !== undefined) {
    if (typeof raw.listenerPath !== 'string' || !posix.isAbsolute(raw.listenerPath))
      throw new InvalidArgumentError(`${what}: listenerPath must be an absolute path`);
    out.listenerPath = raw.listenerPath;
  }
  const rules = raw.syscalls ?? [];
  if (!Array.isArray(rules)) throw new InvalidArgumentError(`${what}: syscalls must be a list`);
  const syscalls: OciSeccompSyscall[] = [];
  for (const [i, rule] of (rules as unknown[]).entries()) {
    if (!isRecord(rule)) throw new InvalidArgumentError(`${what}: syscalls[${i}] is not an object`);
    const names = [...stringList(rule.names, `syscalls[${i}].names`, what)];
    if (typeof rule.name === 'string') names.push(rule.name);
    if (names.length === 0 || names.some((n) => !/^[a-z0-9_]+$/.test(n))) {
      throw new InvalidArgumentError(`${what}: syscalls[${i}] needs syscall names`);
    }
    const act = action(rule.action, `syscalls[${i}].action`, what);
    if (!ruleApplies(rule, caps)) continue;
    const entry: OciSeccompSyscall = { names, action: act };
    const ret = errnoRet(rule.errnoRet, what);
    if (ret !== undefined) entry.errnoRet = ret;
    if (rule.args !== undefined && rule.args !== null) {
      if (!Array.isArray(rule.args))
        throw new InvalidArgumentError(`${what}: syscalls[${i}].args must be a list`);
      const args: OciSeccompArg[] = [];
      for (const a of rule.args as unknown[]) {
        if (
          !isRecord(a) ||
          typeof a.index !== 'number' ||
          !Number.isInteger(a.index) ||
          a.index < 0 ||
          a.index > 5
        ) {
          throw new InvalidArgumentError(`${what}: syscalls[${i}].args: index must be 0..5`);
        }
        if (typeof a.value !== 'number' || (a.valueTwo !== undefined && typeof a.valueTwo !== 'number')) {
          throw new InvalidArgumentError(`${what}: syscalls[${i}].args: value must be a number`);
        }
        if (typeof a.op !== 'string' || !OPERATORS.has(a.op)) {
          throw new InvalidArgumentError(
            `${what}: syscalls[${i}].args: unknown operator ${JSON.stringify(a.op)}`,
          );
        }
        args.push({
          index: a.index,
          value: a.value,
          ...(a.valueTwo !== undefined ? { valueTwo: a.valueTwo } : {}),
          op: a.op,
        });
      }
      if (args.length > 0) entry.args = args;
    }
    syscalls.push(entry);
  }
  if (syscalls.length > 0) out.syscalls = syscalls;
  return out;
}
