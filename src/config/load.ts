import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import {
  SCHEMA,
  type BerthConfig,
  type LeafSpec,
  type LeafValue,
  type Spec,
  type SectionSpec,
} from './schema.js';
import { errnoCode, errorMessage } from '../errors.js';

export const DEFAULT_CONFIG_FILE = '/etc/berth/berth.toml';

/** A configuration problem, naming where it came from, the key and what was expected. */
export class ConfigError extends Error {}

type Raw = Record<string, unknown>;

export interface LoadOptions {
  /** Main file; a missing default file is fine, a missing named file is an error. */
  file?: string;
  /** Drop-in directory; defaults to `<file>.d`. */
  dropInDir?: string;
  /** Overrides from the command line, keyed by dotted path. */
  flags?: Record<string, string | string[] | boolean>;
}

export interface LoadedConfig {
  config: BerthConfig;
  /** Files read, in the order applied. */
  files: string[];
}

function isTable(value: unknown): value is Raw {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  if (value instanceof Date) return 'date';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'float';
  if (typeof value === 'bigint') return 'integer';
  return typeof value;
}

function checkLeaf(spec: LeafSpec, value: unknown, where: string, key: string): LeafValue {
  const wrong = () =>
    new ConfigError(`${where}: key "${key}" must be ${article(spec.type)}, got ${describe(value)}`);
  let result: LeafValue;
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') throw wrong();
      result = value;
      break;
    case 'boolean':
      if (typeof value !== 'boolean') throw wrong();
      result = value;
      break;
    case 'integer': {
      const n = typeof value === 'bigint' ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw wrong();
      if (spec.min !== undefined && n < spec.min) {
        throw new ConfigError(`${where}: key "${key}" must be at least ${spec.min}, got ${n}`);
      }
      result = n;
      break;
    }
    case 'string[]':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw wrong();
      result = [...(value as string[])];
      break;
  }
  if (spec.oneOf && typeof result === 'string' && !spec.oneOf.includes(result)) {
    throw new ConfigError(`${where}: key "${key}" must be one of ${spec.oneOf.join(', ')}, got "${result}"`);
  }
  return result;
}

function article(type: LeafSpec['type']): string {
  return type === 'string[]' ? 'an array of strings' : type === 'integer' ? 'an integer' : `a ${type}`;
}

/** Validates one parsed document against the schema; returns a normalised copy. */
function validate(spec: SectionSpec, raw: Raw, where: string, prefix = ''): Raw {
  const out: Raw = {};
  for (const [name, value] of Object.entries(raw)) {
    const key = prefix ? `${prefix}.${name}` : name;
    const field: Spec | undefined = spec.fields[name];
    if (!field) throw new ConfigError(`${where}: unknown key "${key}"`);
    if (field.kind === 'leaf') {
      out[name] = checkLeaf(field, value, where, key);
    } else if (field.kind === 'section') {
      if (!isTable(value))
        throw new ConfigError(`${where}: key "${key}" must be a table, got ${describe(value)}`);
      out[name] = validate(field, value, where, key);
    } else {
      if (!isTable(value))
        throw new ConfigError(`${where}: key "${key}" must be a table, got ${describe(value)}`);
      const entries: Raw = {};
      for (const [entryName, entryValue] of Object.entries(value)) {
        const entryKey = `${key}.${JSON.stringify(entryName)}`;
        if (!isTable(entryValue)) {
          throw new ConfigError(`${where}: key "${entryKey}" must be a table, got ${describe(entryValue)}`);
        }
        entries[entryName] = validate(
          { kind: 'section', doc: '', fields: field.entry },
          entryValue,
          where,
          entryKey,
        );
      }
      out[name] = entries;
    }
  }
  return out;
}

/** Later documents win key by key; arrays are replaced, not appended. */
function merge(base: Raw, over: Raw): Raw {
  const out: Raw = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isTable(v) && isTable(out[k]) ? merge(out[k] as Raw, v) : v;
  }
  return out;
}

function defaults(spec: SectionSpec): Raw {
  const out: Raw = {};
  for (const [name, field] of Object.entries(spec.fields)) {
    if (field.kind === 'leaf') out[name] = structuredClone(field.default);
    else if (field.kind === 'section') out[name] = defaults(field);
    else out[name] = structuredClone(field.defaults);
  }
  return out;
}

/** Fills every map entry's missing fields with the entry defaults. */
function fillMapEntries(spec: SectionSpec, raw: Raw): void {
  for (const [name, field] of Object.entries(spec.fields)) {
    if (field.kind === 'section') fillMapEntries(field, raw[name] as Raw);
    if (field.kind !== 'map') continue;
    const entries = raw[name] as Record<string, Raw>;
    for (const entry of Object.values(entries)) {
      for (const [k, leafSpec] of Object.entries(field.entry)) {
        if (!(k in entry)) entry[k] = structuredClone(leafSpec.default);
      }
    }
  }
}

/**
 * Splits a dotted key path; a segment may be double-quoted to contain dots,
 * as in TOML: image.registries."gcr.io".insecure.
 */
export function splitDottedPath(path: string): string[] | undefined {
  const segments: string[] = [];
  let i = 0;
  while (i <= path.length) {
    if (path[i] === '"') {
      const close = path.indexOf('"', i + 1);
      if (close === -1) return undefined;
      segments.push(path.slice(i + 1, close));
      i = close + 1;
    } else {
      const dot = path.indexOf('.', i);
      const end = dot === -1 ? path.length : dot;
      segments.push(path.slice(i, end));
      i = end;
    }
    if (i === path.length) break;
    if (path[i] !== '.') return undefined;
    i++;
  }
  return segments.every((s) => s !== '') ? segments : undefined;
}

/** Finds the schema entry for a dotted flag path such as runtime.handlers.kata.path. */
export function leafForPath(path: string): { spec: LeafSpec; segments: string[] } | undefined {
  const segments = splitDottedPath(path);
  if (!segments) return undefined;
  let current: Spec = SCHEMA;
  for (let i = 0; i < segments.length; i++) {
    if (current.kind === 'section') {
      const next: Spec | undefined = current.fields[segments[i]];
      if (!next) return undefined;
      current = next;
    } else if (current.kind === 'map') {
      // segments[i] is the entry name, the next one the field.
      const fieldName = segments[i + 1];
      const spec = fieldName === undefined ? undefined : current.entry[fieldName];
      if (!spec || i + 2 !== segments.length) return undefined;
      return { spec, segments };
    } else {
      return undefined;
    }
  }
  return current.kind === 'leaf' ? { spec: current, segments } : undefined;
}

function flagValue(spec: LeafSpec, value: string | string[] | boolean, path: string): LeafValue {
  const where = 'command line';
  if (spec.type === 'boolean') {
    if (typeof value === 'boolean') return value;
    const text = Array.isArray(value) ? value[value.length - 1] : value;
    if (text === 'true' || text === '') return true;
    if (text === 'false') return false;
    throw new ConfigError(`${where}: flag --${path} must be true or false, got "${text}"`);
  }
  if (typeof value === 'boolean') throw new ConfigError(`${where}: flag --${path} needs a value`);
  if (spec.type === 'string[]') {
    const items = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(',')).map((v) => v.trim());
    return items.filter((v) => v !== '');
  }
  const text = Array.isArray(value) ? value[value.length - 1] : value;
  if (spec.type === 'integer') {
    if (!/^-?\d+$/.test(text))
      throw new ConfigError(`${where}: flag --${path} must be an integer, got "${text}"`);
    return checkLeaf(spec, Number(text), where, path);
  }
  return checkLeaf(spec, text, where, path);
}

function flagsToRaw(flags: Record<string, string | string[] | boolean>): Raw {
  const raw: Raw = {};
  for (const [path, value] of Object.entries(flags)) {
    const found = leafForPath(path);
    if (!found) throw new ConfigError(`command line: unknown flag --${path}`);
    let cursor = raw;
    for (const segment of found.segments.slice(0, -1)) {
      cursor[segment] ??= {};
      cursor = cursor[segment] as Raw;
    }
    cursor[found.segments[found.segments.length - 1]] = flagValue(found.spec, value, path);
  }
  return raw;
}

async function readToml(path: string, required: boolean): Promise<Raw | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (!required && errnoCode(err) === 'ENOENT') return undefined;
    throw new ConfigError(`${path}: cannot read: ${errorMessage(err)}`);
  }
  try {
    return parseToml(text) as Raw;
  } catch (err) {
    throw new ConfigError(`${path}: invalid TOML: ${errorMessage(err)}`);
  }
}

/** Resolves values that default to something derived from other keys. */
function finish(raw: Raw): BerthConfig {
  const config = raw as unknown as BerthConfig;
  for (const [name, handler] of Object.entries(config.runtime.handlers)) {
    if (!handler.path) throw new ConfigError(`runtime handler "${name}": key "path" is required`);
    if (!handler.root) handler.root = join(config.run_root, 'runtimes', name);
  }
  if (!config.runtime.container_exit_dir) config.runtime.container_exit_dir = join(config.run_root, 'exits');
  if (!(config.runtime.default_handler in config.runtime.handlers)) {
    throw new ConfigError(
      `runtime.default_handler "${config.runtime.default_handler}" is not a configured handler (configured: ${Object.keys(config.runtime.handlers).join(', ') || 'none'})`,
    );
  }
  for (const sysctl of config.runtime.default_sysctls) {
    if (!/^[^=\s]+=.*$/.test(sysctl)) {
      throw new ConfigError(`runtime.default_sysctls: "${sysctl}" is not of the form key=value`);
    }
  }
  return config;
}

/**
 * Reads the main file, then `<file>.d/*.toml` in lexical order, then flags;
 * the last value of each key wins. Every key is checked against the schema.
 */
export async function loadConfig(options: LoadOptions = {}): Promise<LoadedConfig> {
  const file = options.file ?? DEFAULT_CONFIG_FILE;
  const required = options.file !== undefined && options.file !== DEFAULT_CONFIG_FILE;
  const files: string[] = [];
  let raw = defaults(SCHEMA);
  const main = await readToml(file, required);
  if (main) {
    raw = merge(raw, validate(SCHEMA, main, file));
    files.push(file);
  }
  const dropInDir = options.dropInDir ?? `${file}.d`;
  let names: string[] = [];
  try {
    names = (await readdir(dropInDir)).filter((n) => n.endsWith('.toml')).sort();
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw new ConfigError(`${dropInDir}: cannot list: ${errorMessage(err)}`);
  }
  for (const name of names) {
    const path = join(dropInDir, name);
    const doc = await readToml(path, true);
    if (doc) {
      raw = merge(raw, validate(SCHEMA, doc, path));
      files.push(path);
    }
  }
  if (options.flags && Object.keys(options.flags).length > 0) raw = merge(raw, flagsToRaw(options.flags));
  fillMapEntries(SCHEMA, raw);
  return { config: finish(raw), files };
}

/** Dotted paths of reloadable keys whose values differ between two configs. */
export function reloadableChanges(before: BerthConfig, after: BerthConfig): string[] {
  const changed: string[] = [];
  const walk = (spec: SectionSpec, a: Raw, b: Raw, prefix: string) => {
    for (const [name, field] of Object.entries(spec.fields)) {
      const key = prefix ? `${prefix}.${name}` : name;
      if (field.kind === 'section') walk(field, a[name] as Raw, b[name] as Raw, key);
      else if (field.reloadable && JSON.stringify(a[name]) !== JSON.stringify(b[name])) changed.push(key);
    }
  };
  walk(SCHEMA, before as unknown as Raw, after as unknown as Raw, '');
  return changed;
}
