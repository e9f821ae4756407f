/**
 * A cluster whose ops finish on a clock the test owns (no timers), in one of two ways: "latency" — each
 * op takes `opMs` whatever else is in flight (round trips); "throughput" — one op finishes every `opMs`
 * (a cluster at its limit: latency grows with what is in flight). For the windows' widening tests.
 */
const turn = () => new Promise<void>((r) => setImmediate(r));

export class SlowCluster {
  clock = 0;
  readonly #pending: Array<{ started: number; done: () => void }> = [];
  #running = true;
  readonly #loop: Promise<void>;

  constructor(
    readonly kind: "latency" | "throughput",
    readonly opMs: number,
  ) {
    this.#loop = this.#run();
  }

  /** The test's clock, for the window's `now`. */
  readonly now = () => this.clock;

  /** An op starting now; `done` runs when the cluster finishes it. */
  start(done: () => void): void {
    this.#pending.push({ started: this.clock, done });
  }

  /** Stops once every op started is done. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (this.#running || this.#pending.length > 0) {
      await turn();
      if (this.kind === "latency") {
        this.clock += 5;
        for (const p of this.#pending.filter((x) => x.started + this.opMs <= this.clock)) {
          this.#pending.splice(this.#pending.indexOf(p), 1);
          p.done();
        }
      } else {
        this.clock += this.opMs;
        this.#pending.shift()?.done();
      }
    }
  }
}
