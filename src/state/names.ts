/**
 * Reserved names (pods and containers share one registry, as in CRI-O): a
 * second reservation of a name held by another id fails with an error that
 * names the holder, so kubelet can see which object to remove.
 */
import { AlreadyExistsError } from '../errors.js';

export class NameRegistry {
  private readonly byName = new Map<string, string>();

  constructor(private readonly kind = 'name') {}

  /** Reserves `name` for `id`; reserving again for the same id is fine. */
  reserve(name: string, id: string, what = this.kind): void {
    const holder = this.byName.get(name);
    if (holder !== undefined && holder !== id) {
      throw new AlreadyExistsError(
        `${what} ${JSON.stringify(name)} is already reserved for ${holder}; remove ${holder} before reusing the name`,
      );
    }
    this.byName.set(name, id);
  }

  /** Releases `name` if `id` holds it (or unconditionally when id is omitted). */
  release(name: string, id?: string): void {
    if (id === undefined || this.byName.get(name) === id) this.byName.delete(name);
  }

  holder(name: string): string | undefined {
    return this.byName.get(name);
  }

  get size(): number {
    return this.byName.size;
  }
}
