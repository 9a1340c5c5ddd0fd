import { stringify } from 'smol-toml';
import { SCHEMA, type SectionSpec, type LeafSpec } from './schema.js';
import type { BerthConfig } from './schema.js';

function comment(text: string): string {
  return text
    .split('\n')
    .map((line) => `# ${line}`)
    .join('\n');
}

function leafLine(name: string, spec: LeafSpec, value: unknown): string {
  const note = spec.reloadable ? `${spec.doc} (reloaded by SIGHUP)` : spec.doc;
  const oneOf = spec.oneOf ? ` One of: ${spec.oneOf.join(', ')}.` : '';
  return `${comment(note + oneOf)}\n${stringify({ [name]: value }).trim()}\n`;
}

function quoteKey(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
}

function section(spec: SectionSpec, value: Record<string, unknown>, path: string[]): string {
  const parts: string[] = [];
  const nested: string[] = [];
  for (const [name, field] of Object.entries(spec.fields)) {
    if (field.kind === 'leaf') {
      parts.push(leafLine(name, field, value[name]));
    } else if (field.kind === 'section') {
      const header = [...path, name].map(quoteKey).join('.');
      nested.push(
        `${comment(field.doc)}\n[${header}]\n${section(field, value[name] as Record<string, unknown>, [...path, name])}`,
      );
    } else {
      const entries = value[name] as Record<string, Record<string, unknown>>;
      const names = Object.keys(entries).sort();
      if (names.length === 0) {
        nested.push(`${comment(field.doc)}\n# (none configured)\n`);
      }
      for (const entryName of names) {
        const header = [...path, name, entryName].map(quoteKey).join('.');
        const entrySpec: SectionSpec = { kind: 'section', doc: field.doc, fields: field.entry };
        nested.push(`${comment(field.doc)}\n[${header}]\n${section(entrySpec, entries[entryName], [])}`);
      }
    }
  }
  return [...parts, ...nested].join('\n');
}

/** The effective configuration as commented TOML that berth itself can load back. */
export function renderConfig(config: BerthConfig): string {
  return `# berth effective configuration\n\n${section(SCHEMA, config as unknown as Record<string, unknown>, [])}`;
}
