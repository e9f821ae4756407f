/**
 * A change notifier: state owners call `notify()` whenever something a waiter may care about changed
 * (an attempt finished, an outcome was acknowledged, the link went down), and `until(cond, ms)` waits
 * for a condition without polling. Every wait has a deadline.
 */
export class Changes {
  #waiters = new Set<() => void>();

  notify(): void {
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves once `cond()` holds (checked after every change) or after `ms`, whichever comes first. */
  async until(cond: () => boolean, ms: number): Promise<boolean> {
    if (cond()) return true;
    const deadline = Date.now() + ms;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.#waiters.add(done);
      });
    }
    return true;
  }
}
