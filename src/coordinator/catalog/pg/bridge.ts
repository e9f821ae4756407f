/**
 * A synchronous PostgreSQL connection for the synchronous Catalog interface (the synckit pattern): a
 * worker thread (worker.ts) owns one `pg` Client; `run` posts a script to it and blocks this thread with
 * Atomics.wait on a shared flag until the worker has replied (or the deadline, statementTimeoutMs,
 * passes), then takes the reply with receiveMessageOnPort. The event loop is blocked for the round trip
 * (README: per-call cost). A timeout or a lost connection is AppError UNAVAILABLE naming the database
 * host (never the password); the worker drops the connection and the next call reconnects.
 */
import path from "node:path";
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads";
import { AppError, Status } from "../../../common/errors";
import { FencedError } from "../leader-lease";
import type { Fence, Reply, Request, Step, StepResult, TxMode } from "./protocol";

/** An SQL error that is not the database being unreachable (`code` is the SQLSTATE). */
export class PgError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** "host:port/database" of a connection string, for messages (no user, no password). */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || "localhost"}:${u.port || "5432"}${u.pathname}`;
  } catch {
    return "(unparsable catalog.url)";
  }
}

export class SyncBridge {
  #worker!: Worker;
  #port!: MessagePort;
  #flag!: Int32Array;
  readonly #where: string;
  #seq = 0;
  #closed = false;
  /** The worker ended (it should not): the next call starts another. */
  #dead = false;
  /** The server's statement_timeout in the open transaction (SET LOCAL by an "open" with its own deadline). */
  #openTxTimeoutMs: number | undefined;

  constructor(
    private readonly url: string,
    readonly timeoutMs: number,
  ) {
    this.#where = describeUrl(url);
    this.#spawn();
  }

  #spawn(): void {
    const sab = new SharedArrayBuffer(4);
    this.#flag = new Int32Array(sab);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#dead = false;
    this.#worker = new Worker(path.join(__dirname, "worker.js"), {
      workerData: { url: this.url, statementTimeoutMs: this.timeoutMs, port: port2, flag: sab },
      transferList: [port2],
    });
    const w = this.#worker;
    w.on("error", () => {}); // reported as the exit below; the calls fail UNAVAILABLE meanwhile
    w.on("exit", () => {
      if (this.#worker === w) this.#dead = true;
    });
    // The worker only works while this thread waits on it: it must not keep the process alive.
    w.unref();
    port1.unref();
  }

  get where(): string {
    return this.#where;
  }

  /**
   * Runs the steps (see protocol.ts TxMode) and returns each one's result; throws on any failure.
   * `timeoutMs` overrides the deadline of this call (with "open": of the transaction's statements too).
   */
  run(steps: Step[], tx: TxMode = "none", fence?: Fence, timeoutMs = this.timeoutMs): StepResult[] {
    if (this.#closed) throw new AppError(Status.UNAVAILABLE, `the catalog at ${this.#where} is closed`);
    if (this.#dead) {
      this.#port.close();
      this.#spawn();
    }
    this.#seq = (this.#seq % 2_000_000_000) + 1;
    const id = this.#seq;
    const req: Request = { id, op: "run", steps, tx, fence };
    if (timeoutMs !== this.timeoutMs) req.longTimeoutMs = timeoutMs;
    // The server's own deadline for these statements: the session's, or the open transaction's.
    if (tx === "open") this.#openTxTimeoutMs = req.longTimeoutMs;
    const serverTimeoutMs =
      (tx === "open" || tx === "in" || tx === "commit" || tx === "rollback" ? this.#openTxTimeoutMs : undefined) ??
      this.timeoutMs;
    if (tx === "commit" || tx === "rollback") this.#openTxTimeoutMs = undefined;
    this.#port.postMessage(req);
    const reply = this.#await(id, timeoutMs);
    if (reply.ok) return reply.results;
    if ("fenced" in reply) throw new FencedError(fence?.token ?? 0);
    const { kind, message, code } = reply.error;
    // The server's statement_timeout (the same deadline, kept by the server) fired before this thread's
    // timer: the same failure, said the same way.
    if (code === "57014" && /statement timeout/i.test(message)) throw this.#deadlineError(serverTimeoutMs);
    if (kind === "unavailable")
      throw new AppError(Status.UNAVAILABLE, `the catalog database at ${this.#where} is unavailable: ${message}`);
    if (kind === "aborted")
      throw new AppError(Status.ABORTED, `the catalog database at ${this.#where} aborted the transaction: ${message}`);
    throw new PgError(kind === "unique" ? `UNIQUE constraint failed: ${message}` : message, code);
  }

  /** Convenience: one statement's rows. */
  query<R = Record<string, unknown>>(
    sql: string,
    params: unknown[] = [],
    tx: TxMode = "none",
    fence?: Fence,
    timeoutMs = this.timeoutMs,
  ): R[] {
    return (this.run([{ sql, params }], tx, fence, timeoutMs)[0]?.rows ?? []) as R[];
  }

  #await(id: number, timeoutMs: number): Reply {
    // The monotonic clock: a wall clock stepped back would stretch the wait (the event loop blocked past
    // the statement timeout), one stepped forward would cut it short.
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const v = Atomics.load(this.#flag, 0);
      if (v === id) break;
      const left = deadline - performance.now();
      if (left <= 0) {
        // Give up: the worker drops the connection (the server ends the statement and its transaction).
        this.#port.postMessage({ id: 0, op: "reset", steps: [], tx: "none" } satisfies Request);
        throw this.#deadlineError(timeoutMs);
      }
      Atomics.wait(this.#flag, 0, v, left);
    }
    for (;;) {
      const m = receiveMessageOnPort(this.#port);
      if (!m) throw new Error("catalog bridge: the worker signalled a reply that is not there");
      const r = m.message as Reply;
      if (r.id === id) return r;
      // A reply to a call that timed out earlier: dropped.
    }
  }

  #deadlineError(timeoutMs: number): AppError {
    return new AppError(
      Status.UNAVAILABLE,
      `the catalog database at ${this.#where} did not answer within ${timeoutMs} ms${timeoutMs === this.timeoutMs ? " (catalog.statementTimeoutMs)" : ""}`,
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#port.postMessage({ id: 0, op: "reset", steps: [], tx: "none" } satisfies Request);
    this.#port.close();
    void this.#worker.terminate();
  }
}
