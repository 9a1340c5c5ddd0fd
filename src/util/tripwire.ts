/**
 * Ends waits early when `failed` rejects. One reaction on `failed` serves
 * every wait: racing each wait against it with Promise.race would add a
 * reaction per wait, each keeping that wait's result alive until `failed`
 * settles (for a layer being unpacked: every chunk of it, i.e. the whole
 * layer in memory).
 */
export class Tripwire {
  private tripped?: { error: unknown };
  private readonly waiting = new Set<(error: unknown) => void>();

  constructor(failed: Promise<never>) {
    failed.catch((error: unknown) => {
      this.tripped = { error };
      for (const reject of this.waiting) reject(error);
      this.waiting.clear();
    });
  }

  wait<T>(work: Promise<T>): Promise<T> {
    if (this.tripped) {
      work.catch(() => undefined);
      return Promise.reject(this.tripped.error);
    }
    return new Promise<T>((resolve, reject) => {
      this.waiting.add(reject);
      work.then(
        (value) => {
          this.waiting.delete(reject);
          resolve(value);
        },
        (err: unknown) => {
          this.waiting.delete(reject);
          reject(err);
        },
      );
    });
  }
}

/** The items of `source`, or the tripwire's error as soon as it comes. */
export async function* raced<T>(source: AsyncIterable<T>, tripwire: Tripwire): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await tripwire.wait(it.next());
      if (next.done) return;
      yield next.value;
    }
  } finally {
    // Stopped early: let the source clean up without waiting for it.
    void it.return?.()?.catch(() => undefined);
  }
}
