/** The process of a container: argv from config and image, env, working dir, stop signal. */
import { constants } from 'node:os';
import { posix } from 'node:path';
import { Signal, signalToJSON, type ContainerConfig } from '../../generated/api.js';
import type { ImageConfigFile } from '../../image/types.js';
import { InvalidArgumentError } from '../../errors.js';
import { DEFAULT_PATH_ENV } from './defaults.js';

/**
 * argv as Kubernetes defines it: `command` replaces the image's ENTRYPOINT and
 * drops its CMD; `args` alone replaces only CMD.
 */
export function processArgs(
  config: Pick<ContainerConfig, 'command' | 'args'>,
  image: ImageConfigFile,
  what: string,
): string[] {
  const command = config.command ?? [];
  const args = config.args ?? [];
  let argv: string[];
  if (command.length > 0) argv = [...command, ...args];
  else {
    let entrypoint = image.config?.Entrypoint ?? [];
    // Docker writes ENTRYPOINT [""] to clear an inherited entrypoint.
    if (entrypoint.length === 1 && entrypoint[0] === '') entrypoint = [];
    argv = [...entrypoint, ...(args.length > 0 ? args : (image.config?.Cmd ?? []))];
  }
  if (argv.length === 0) {
    throw new InvalidArgumentError(`${what}: no command given and the image has neither ENTRYPOINT nor CMD`);
  }
  return argv;
}

function envKey(entry: string): string {
  const eq = entry.indexOf('=');
  return eq < 0 ? entry : entry.slice(0, eq);
}

/**
 * Merges environment lists: a later value for a key replaces the earlier one
 * in its place. Empty keys are refused.
 */
export function mergeEnv(...lists: readonly (readonly string[])[]): string[] {
  const order: string[] = [];
  const values = new Map<string, string>();
  for (const list of lists) {
    for (const entry of list) {
      const key = envKey(entry);
      if (!values.has(key)) order.push(key);
      values.set(key, entry);
    }
  }
  return order.map((k) => values.get(k)!);
}

/**
 * The container's environment: PATH default, HOSTNAME, the image's, then the
 * config's (later wins), HOME from the user when nothing set it.
 */
export function containerEnv(
  config: Pick<ContainerConfig, 'envs'>,
  image: ImageConfigFile,
  options: { hostname: string; home: string },
  what: string,
): string[] {
  const fromConfig = (config.envs ?? []).map((kv) => {
    if (kv.key === '' || kv.key.includes('=') || kv.key.includes('\0')) {
      throw new InvalidArgumentError(`${what}: invalid environment variable name ${JSON.stringify(kv.key)}`);
    }
    if (kv.value.includes(0)) {
      throw new InvalidArgumentError(`${what}: environment variable ${kv.key} holds a NUL byte`);
    }
    // The value is bytes (a Secret's need not be UTF-8) but config.json is JSON: bytes
    // that are not UTF-8 become U+FFFD, as Go runtimes' JSON encoding does to them.
    return `${kv.key}=${Buffer.from(kv.value).toString('utf8')}`;
  });
  const env = mergeEnv(
    [DEFAULT_PATH_ENV],
    [`HOSTNAME=${options.hostname}`],
    image.config?.Env ?? [],
    fromConfig,
  );
  if (!env.some((e) => envKey(e) === 'HOME')) env.push(`HOME=${options.home}`);
  return env;
}

/** Working directory: the config's, else the image's, else /. Must be absolute. */
export function workingDir(
  config: Pick<ContainerConfig, 'workingDir'>,
  image: ImageConfigFile,
  what: string,
): string {
  const cwd = config.workingDir || image.config?.WorkingDir || '/';
  if (!posix.isAbsolute(cwd) || cwd.includes('\0')) {
    throw new InvalidArgumentError(
      `${what}: working directory ${JSON.stringify(cwd)} is not an absolute path`,
    );
  }
  return posix.normalize(cwd);
}

const RTMIN = 34;
const RTMAX = 64;

/** The CRI Signal enum name as a signal name runtimes accept ("SIGRTMIN+3" as its number). */
function criSignalName(signal: Signal): string {
  const name = signalToJSON(signal);
  const plus = /^SIGRTMINPLUS(\d+)$/.exec(name);
  if (plus) return String(RTMIN + Number(plus[1]));
  const minus = /^SIGRTMAXMINUS(\d+)$/.exec(name);
  if (minus) return String(RTMAX - Number(minus[1]));
  if (name === 'SIGRTMIN') return String(RTMIN);
  if (name === 'SIGRTMAX') return String(RTMAX);
  return name;
}

/**
 * Normalises an image StopSignal ("SIGTERM", "TERM", "15", "SIGRTMIN+3") to a
 * name (or a number for real-time signals); undefined when it is no signal.
 */
export function normalizeSignal(text: string): string | undefined {
  const t = text.trim().toUpperCase();
  if (t === '') return undefined;
  const signals = constants.signals as Record<string, number>;
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    if (n < 1 || n > RTMAX) return undefined;
    const name = Object.keys(signals).find((k) => signals[k] === n && k !== 'SIGIOT' && k !== 'SIGPOLL');
    return name ?? String(n);
  }
  const name = t.startsWith('SIG') ? t : `SIG${t}`;
  const rt = /^SIGRT(MIN|MAX)([+-]\d+)?$/.exec(name);
  if (rt) {
    const n = (rt[1] === 'MIN' ? RTMIN : RTMAX) + Number(rt[2] ?? 0);
    return n >= RTMIN && n <= RTMAX ? String(n) : undefined;
  }
  return name in signals ? name : undefined;
}

/**
 * Stop signal: the config's, else the image's StopSignal, else SIGTERM. An
 * image signal berth does not know is an error naming it.
 */
export function stopSignalOf(config: Signal, image: ImageConfigFile, what = 'container'): string {
  if (config !== Signal.RUNTIME_DEFAULT && config !== Signal.UNRECOGNIZED) return criSignalName(config);
  const fromImage = image.config?.StopSignal;
  if (!fromImage) return 'SIGTERM';
  const normalized = normalizeSignal(fromImage);
  if (!normalized)
    throw new InvalidArgumentError(
      `${what}: the image's stop signal ${JSON.stringify(fromImage)} is not a signal`,
    );
  return normalized;
}
