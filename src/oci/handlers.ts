/**
 * RuntimeClass handlers from the config, and the daemon's engine.
 */
import { join } from 'node:path';
import type { BerthConfig } from '../config/schema.js';
import { InvalidArgumentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CgroupDriver } from './cgroup-driver.js';
import { ConmonEngine } from './engine.js';
import { kindFromName } from './runtime-kind.js';
import type { RuntimeHandler } from './types.js';

/** Every configured handler, with defaults filled in (root: <run_root>/runtimes/NAME). */
export function configuredHandlers(config: BerthConfig): Map<string, RuntimeHandler> {
  const handlers = new Map<string, RuntimeHandler>();
  for (const [name, h] of Object.entries(config.runtime.handlers)) {
    handlers.set(name, {
      name,
      path: h.path,
      root: h.root || join(config.run_root, 'runtimes', name),
      type: h.type,
      kind: h.kind === 'auto' || h.kind === undefined ? kindFromName(h.path) : h.kind,
      runtimeArgs: h.runtime_args ?? [],
    });
  }
  return handlers;
}

/**
 * The handler a pod asks for (empty: runtime.default_handler). An unknown name
 * is INVALID_ARGUMENT listing the configured ones.
 */
export function resolveHandler(config: BerthConfig, requested: string): RuntimeHandler {
  const name = requested || config.runtime.default_handler;
  const handler = configuredHandlers(config).get(name);
  if (!handler) {
    const known = Object.keys(config.runtime.handlers).sort().join(', ') || '(none)';
    throw new InvalidArgumentError(
      `unknown runtime handler ${JSON.stringify(name)}; configured handlers: ${known}`,
    );
  }
  return handler;
}

/** runtime.container_exit_dir, defaulting to <run_root>/exits. */
export function exitDir(config: BerthConfig): string {
  return config.runtime.container_exit_dir || join(config.run_root, 'exits');
}

export function createOciEngine(config: BerthConfig, log: Logger, cgroupDriver: CgroupDriver): ConmonEngine {
  return new ConmonEngine({
    conmonPath: config.runtime.conmon_path,
    runRoot: config.run_root,
    exitDir: exitDir(config),
    cgroupDriver,
    log: log.child({ component: 'oci' }),
    conmonLogLevel: config.log_level === 'debug' || config.log_level === 'trace' ? 'debug' : 'info',
  });
}
