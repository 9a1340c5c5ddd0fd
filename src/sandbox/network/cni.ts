/**
 * Executes CNI plugins as the CNI spec (0.3.x, 0.4.0, 1.0.0) describes: one
 * process per plugin, network config on stdin, parameters in CNI_* variables,
 * result (or error) JSON on stdout. A network list is a chain: each plugin
 * gets the previous plugin's result as prevResult.
 */
import { access, constants, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { BerthError, DeadlineExceededError, errorMessage } from '../../errors.js';
import type { CniNetworkList } from '../cni-config.js';
import { run, type RunResult } from '../../util/run.js';

/** A plugin failure, named after the plugin, with its message and stderr. */
export class CniError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(GrpcStatus.UNKNOWN, message, options);
  }
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

/** Runtime parameters of one attachment (the CNI_* variables and capability args). */
export interface CniInvocation {
  containerId: string;
  /** Path of the netns; '' on DEL when the namespace is already gone. */
  netns: string;
  ifName: string;
  /** CNI_ARGS as ordered key/value pairs. */
  args: [string, string][];
  /** Values for plugins' declared capabilities (portMappings, ...), by capability name. */
  capabilityArgs: Record<string, unknown>;
}

export interface CniExecOptions {
  binDirs: string[];
  /** Kill a plugin that takes longer than this. */
  timeoutMs: number;
}

const MAX_OUTPUT = 4 * 1024 * 1024;

/** Compares dotted versions numerically: negative, zero or positive. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const pb = b.split('.').map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function pluginType(list: CniNetworkList, index: number): string {
  const type = list.plugins[index]!.type;
  if (typeof type !== 'string' || type === '' || type.includes('/') || type.startsWith('.')) {
    throw new CniError(`network "${list.name}" (${list.file}): plugin #${index + 1} has an invalid "type"`);
  }
  return type;
}

/** Finds the plugin executable in the bin dirs (first match wins, as libcni does). */
export async function findPlugin(type: string, binDirs: string[]): Promise<string> {
  for (const dir of binDirs) {
    const path = join(dir, type);
    try {
      if ((await stat(path)).isFile()) {
        await access(path, constants.X_OK);
        return path;
      }
    } catch {
      // not in this dir
    }
  }
  throw new CniError(`CNI plugin "${type}" not found in ${binDirs.join(', ') || '(no cni_bin_dirs)'}`);
}

/**
 * The config a plugin of the list receives: its own object plus the list's
 * name and cniVersion, prevResult when chaining, and runtimeConfig entries for
 * each capability the plugin declares and the runtime supplies.
 */
export function pluginConfig(
  list: CniNetworkList,
  index: number,
  prevResult: unknown,
  capabilityArgs: Record<string, unknown>,
): Record<string, unknown> {
  const plugin = list.plugins[index]!;
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  else delete conf.prevResult;
  const caps = plugin.capabilities;
  if (caps && typeof caps === 'object') {
    const runtimeConfig: Record<string, unknown> = {
      ...((plugin.runtimeConfig as Record<string, unknown> | undefined) ?? {}),
    };
    let any = false;
    for (const [cap, enabled] of Object.entries(caps as Record<string, unknown>)) {
      if (enabled === true && capabilityArgs[cap] !== undefined) {
        runtimeConfig[cap] = capabilityArgs[cap];
        any = true;
      }
    }
    if (any) conf.runtimeConfig = runtimeConfig;
  }
  return conf;
}

function cniEnv(command: CniCommand, inv: CniInvocation, binDirs: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  // Plugins run helpers (iptables, ip) from PATH; other CNI_* from our own
  // environment must not leak into theirs.
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('CNI_')) env[key] = value;
  env.CNI_COMMAND = command;
  env.CNI_PATH = binDirs.join(':');
  if (command !== 'VERSION') {
    env.CNI_CONTAINERID = inv.containerId;
    env.CNI_NETNS = inv.netns;
    env.CNI_IFNAME = inv.ifName;
    env.CNI_ARGS = inv.args.map(([k, v]) => `${k}=${v}`).join(';');
  }
  return env;
}

/** The CNI error object a failing plugin prints: {code, msg, details}. */
function describeFailure(stdout: string): string {
  try {
    const parsed = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (parsed && typeof parsed === 'object' && typeof parsed.msg === 'string') {
      const details = typeof parsed.details === 'string' && parsed.details ? ` (${parsed.details})` : '';
      const code = typeof parsed.code === 'number' ? ` [CNI error code ${parsed.code}]` : '';
      return `${parsed.msg}${details}${code}`;
    }
  } catch {
    // not JSON: shown as it is
  }
  return stdout.trim().slice(0, 2000);
}

/**
 * Runs one plugin; resolves with its parsed stdout (undefined when empty, as
 * for DEL), rejects with a CniError naming the plugin, the network, the
 * command, the plugin's message and its stderr.
 */
export async function execPlugin(
  type: string,
  path: string,
  command: CniCommand,
  conf: Record<string, unknown>,
  inv: CniInvocation,
  options: CniExecOptions,
): Promise<unknown> {
  const what = `CNI plugin "${type}" (${path}) ${command} for network "${String(conf.name)}"`;
  let outcome: RunResult;
  try {
    outcome = await run(path, [], {
      input: JSON.stringify(conf),
      env: cniEnv(command, inv, options.binDirs),
      timeoutMs: options.timeoutMs,
      maxOutputBytes: MAX_OUTPUT,
    });
  } catch (err) {
    throw new CniError(`${what} could not be started: ${errorMessage(err)}`, { cause: err });
  }
  const stderr = outcome.stderr.trim().slice(0, 2000);
  const stderrPart = stderr ? `; stderr: ${stderr}` : '';
  if (outcome.timedOut) {
    throw new DeadlineExceededError(
      `${what} did not finish within ${options.timeoutMs} ms and was killed${stderrPart}`,
    );
  }
  if (outcome.code !== 0) {
    const why = outcome.signal ? `was killed by ${outcome.signal}` : `failed (exit ${outcome.code})`;
    const msg = describeFailure(outcome.stdout);
    throw new CniError(`${what} ${why}${msg ? `: ${msg}` : ''}${stderrPart}`);
  }
  if (outcome.stdout.trim() === '') return undefined;
  try {
    return JSON.parse(outcome.stdout) as unknown;
  } catch {
    throw new CniError(
      `${what} printed a result that is not JSON: ${outcome.stdout.trim().slice(0, 500)}${stderrPart}`,
    );
  }
}

/** Resolves each plugin's executable, failing on the first missing one. */
export async function resolvePlugins(
  list: CniNetworkList,
  binDirs: string[],
): Promise<{ type: string; path: string }[]> {
  const resolved: { type: string; path: string }[] = [];
  for (let i = 0; i < list.plugins.length; i++) {
    const type = pluginType(list, i);
    try {
      resolved.push({ type, path: await findPlugin(type, binDirs) });
    } catch (err) {
      throw new CniError(`network "${list.name}" (${list.file}): ${errorMessage(err)}`, { cause: err });
    }
  }
  return resolved;
}

/** supportedVersions per plugin binary, keyed by path and mtime (a replaced binary is asked again). */
const versionCache = new Map<string, string[]>();

/**
 * Version negotiation: asks each plugin (CNI_COMMAND=VERSION) which spec
 * versions it speaks and refuses the list when one cannot speak its
 * cniVersion. Answers are cached per binary.
 */
export async function checkVersions(list: CniNetworkList, options: CniExecOptions): Promise<void> {
  if (compareVersions(list.cniVersion, '1.0.0') > 0) {
    throw new CniError(
      `network "${list.name}" (${list.file}): cniVersion ${list.cniVersion} is newer than berth supports (1.0.0)`,
    );
  }
  if (list.plugins.length > 1 && compareVersions(list.cniVersion, '0.3.0') < 0) {
    throw new CniError(
      `network "${list.name}" (${list.file}): cniVersion ${list.cniVersion} does not allow plugin chains (0.3.0 or newer needed)`,
    );
  }
  for (const { type, path } of await resolvePlugins(list, options.binDirs)) {
    const info = await stat(path);
    const key = `${path}\0${info.mtimeMs}\0${info.size}`;
    let supported = versionCache.get(key);
    if (!supported) {
      const inv: CniInvocation = { containerId: '', netns: '', ifName: '', args: [], capabilityArgs: {} };
      const answer = (await execPlugin(
        type,
        path,
        'VERSION',
        { cniVersion: list.cniVersion, name: list.name },
        inv,
        options,
      )) as { supportedVersions?: unknown } | undefined;
      const versions = answer?.supportedVersions;
      // Plugins from before 0.3.0 may not answer VERSION; they speak 0.1.0 and 0.2.0.
      supported = Array.isArray(versions)
        ? versions.filter((v): v is string => typeof v === 'string')
        : ['0.1.0', '0.2.0'];
      versionCache.set(key, supported);
    }
    if (!supported.includes(list.cniVersion)) {
      throw new CniError(
        `CNI plugin "${type}" (${path}) of network "${list.name}" does not support cniVersion ${list.cniVersion} (it supports ${supported.join(', ')})`,
      );
    }
  }
}

/**
 * ADD through the whole chain; returns the last plugin's result. When a
 * plugin fails, the plugins before it are deleted again (reverse order) so no
 * half-attached state remains, then the failure is thrown.
 */
export async function addNetworkList(
  list: CniNetworkList,
  inv: CniInvocation,
  options: CniExecOptions,
): Promise<unknown> {
  const plugins = await resolvePlugins(list, options.binDirs);
  let prevResult: unknown;
  for (let i = 0; i < plugins.length; i++) {
    const { type, path } = plugins[i]!;
    try {
      const result = await execPlugin(
        type,
        path,
        'ADD',
        pluginConfig(list, i, prevResult, inv.capabilityArgs),
        inv,
        options,
      );
      if (result === undefined || typeof result !== 'object' || result === null) {
        throw new CniError(`CNI plugin "${type}" (${path}) ADD for network "${list.name}" printed no result`);
      }
      prevResult = result;
    } catch (err) {
      try {
        await delNetworkList(list, inv, options, prevResult, i + 1);
      } catch (undoErr) {
        throw new CniError(
          `${errorMessage(err)}; undoing the plugins before it also failed: ${errorMessage(undoErr)}`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
  }
  return prevResult;
}

/**
 * DEL through the chain in reverse order (only the first `count` plugins
 * when undoing a partial ADD). prevResult is passed from 0.4.0 on. Every
 * plugin is tried even when one fails, so as much as possible is released;
 * the failures are then reported together.
 */
export async function delNetworkList(
  list: CniNetworkList,
  inv: CniInvocation,
  options: CniExecOptions,
  prevResult?: unknown,
  count = list.plugins.length,
): Promise<void> {
  const plugins = await resolvePlugins(list, options.binDirs);
  const withPrev = compareVersions(list.cniVersion, '0.4.0') >= 0 && prevResult !== undefined;
  const failures: string[] = [];
  for (let i = count - 1; i >= 0; i--) {
    const { type, path } = plugins[i]!;
    try {
      await execPlugin(
        type,
        path,
        'DEL',
        pluginConfig(list, i, withPrev ? prevResult : undefined, inv.capabilityArgs),
        inv,
        options,
      );
    } catch (err) {
      failures.push(errorMessage(err));
    }
  }
  if (failures.length) throw new CniError(failures.join('; '));
}

/** CHECK (0.4.0 and newer): every plugin verifies the attachment against prevResult. */
export async function checkNetworkList(
  list: CniNetworkList,
  inv: CniInvocation,
  options: CniExecOptions,
  prevResult: unknown,
): Promise<void> {
  if (compareVersions(list.cniVersion, '0.4.0') < 0) {
    throw new CniError(
      `network "${list.name}": CHECK needs cniVersion 0.4.0 or newer (it is ${list.cniVersion})`,
    );
  }
  const plugins = await resolvePlugins(list, options.binDirs);
  for (let i = 0; i < plugins.length; i++) {
    const { type, path } = plugins[i]!;
    await execPlugin(
      type,
      path,
      'CHECK',
      pluginConfig(list, i, prevResult, inv.capabilityArgs),
      inv,
      options,
    );
  }
}

function stripPrefix(address: string): string {
  const slash = address.indexOf('/');
  return slash === -1 ? address : address.slice(0, slash);
}

/**
 * The pod's IPs from a CNI result of any version: `ips` (0.3.0+, limited to
 * addresses on interfaces inside the sandbox when interfaces are listed) or
 * `ip4`/`ip6` (0.1.0/0.2.0). IPv4 first, as kubelet takes the first as primary.
 */
export function resultIps(result: unknown): string[] {
  if (!result || typeof result !== 'object') return [];
  const r = result as {
    ips?: { address?: unknown; interface?: unknown }[];
    interfaces?: { sandbox?: unknown }[];
    ip4?: { ip?: unknown };
    ip6?: { ip?: unknown };
  };
  const found: string[] = [];
  if (Array.isArray(r.ips)) {
    for (const ip of r.ips) {
      if (typeof ip?.address !== 'string') continue;
      if (typeof ip.interface === 'number' && Array.isArray(r.interfaces)) {
        const iface = r.interfaces[ip.interface];
        if (iface && !(typeof iface.sandbox === 'string' && iface.sandbox !== '')) continue;
      }
      found.push(stripPrefix(ip.address));
    }
  } else {
    if (typeof r.ip4?.ip === 'string') found.push(stripPrefix(r.ip4.ip));
    if (typeof r.ip6?.ip === 'string') found.push(stripPrefix(r.ip6.ip));
  }
  const unique = [...new Set(found)];
  return [...unique.filter((ip) => !ip.includes(':')), ...unique.filter((ip) => ip.includes(':'))];
}

/** The loopback network every pod gets, as CRI-O and containerd give it: not part of any conflist. */
export function loopbackNetwork(cniVersion: string): CniNetworkList {
  const plugin = { type: 'loopback' };
  return {
    cniVersion,
    name: 'cni-loopback',
    plugins: [plugin],
    file: '(built in)',
    raw: { cniVersion, name: 'cni-loopback', plugins: [plugin] },
  };
}

/** True when the configured chain brings `lo` up itself. */
export function chainHasLoopback(list: CniNetworkList): boolean {
  return list.plugins.some((plugin) => plugin.type === 'loopback');
}
