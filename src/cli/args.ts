import { leafForPath } from '../config/load.js';

export interface ParsedArgs {
  /** Config-key flags by dotted path. */
  configFlags: Record<string, string | string[] | boolean>;
  /** Non-config options (config, help, ...). */
  options: Record<string, string | boolean>;
  positional: string[];
}

export class UsageError extends Error {}

/**
 * Parses `--key value`, `--key=value` and bare boolean flags. Dotted keys
 * that name a config setting become config overrides; `known` lists the
 * command's own options (name -> takes a value).
 */
export function parseArgs(argv: readonly string[], known: Record<string, boolean>): ParsedArgs {
  const result: ParsedArgs = { configFlags: {}, options: {}, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      result.positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      if (arg === '-h') result.options.help = true;
      else result.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const inline = eq === -1 ? undefined : arg.slice(eq + 1);
    if (name in known) {
      if (!known[name]) {
        result.options[name] = true;
        continue;
      }
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      result.options[name] = value;
      continue;
    }
    const leaf = leafForPath(name);
    if (!leaf) throw new UsageError(`unknown flag --${name}`);
    let value: string | boolean;
    if (inline !== undefined) value = inline;
    else if (leaf.spec.type === 'boolean') {
      const next = argv[i + 1];
      value = next === 'true' || next === 'false' ? argv[++i] : true;
    } else {
      const next = argv[++i];
      if (next === undefined) throw new UsageError(`--${name} needs a value`);
      value = next;
    }
    const previous = result.configFlags[name];
    if (leaf.spec.type === 'string[]' && typeof value === 'string' && previous !== undefined) {
      result.configFlags[name] = [...(Array.isArray(previous) ? previous : [String(previous)]), value];
    } else {
      result.configFlags[name] = value;
    }
  }
  return result;
}
