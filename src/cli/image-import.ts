import type { ParsedArgs } from './args.js';
import { UsageError } from './args.js';

/** `berth image import FILE`: implemented with the image store (src/image). */
export async function importImageCommand(args: ParsedArgs): Promise<void> {
  const file = args.positional[0];
  if (!file) throw new UsageError('image import needs a FILE');
  throw new Error(
    `berth image import: the image store is not available in this build; cannot import ${file}`,
  );
}
