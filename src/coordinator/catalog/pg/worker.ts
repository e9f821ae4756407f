/**
 * The worker thread of the PostgreSQL catalog (bridge.ts): owns one `pg` Client and runs the scripts
 * the catalog's thread posts, one at a time, replying on the port and then waking the blocked caller
 * through the shared flag (the id of the reply just posted). The connection is made on first use and
 * again after it is lost; a "reset" (the caller gave up waiting) drops it at once, which also ends the
 * server's work on it (its transaction rolls back). statement_timeout and idle_in_transaction_session_timeout
 * are set on the server too.
 */
import { type MessagePort, workerData } from "node:worker_threads";
import { Client, types } from "pg";
import type { ErrorKind, Fence, Reply, Request, StepResult } from "./protocol";
import { FENCE_SQL } from "./protocol";

interface Data {
  url: string;
  statementTimeoutMs: number;
  port: MessagePort;
  flag: SharedArrayBuffer;
}

const { url, statementTimeoutMs, port, flag: sab } = workerData as Data;
const flag = new Int32Array(sab);
// BIGINT columns are epoch milliseconds and tokens: numbers, exact below 2^53.
types.setTypeParser(20, (v: string) => Number(v));

let client: Client | undefined;
/** +1 at each "reset": a request that began before one stops before its next statement. */
let epoch = 0;

async function connection(): Promise<Client> {
  if (client) return client;
  const c = new Client({
    connectionString: url,
    connectionTimeoutMillis: statementTimeoutMs,
    statement_timeout: statementTimeoutMs,
    // A session left idle inside a transaction (this process paused, or cut off from the server between
    // two statements of a fenced write) holds the leader row's lock: the server ends it after this long,
    // or a standby's takeover would wait for it until TCP keepalive gave up (hours).
    idle_in_transaction_session_timeout: statementTimeoutMs,
    application_name: "rbdbackup-coordinator",
    // A peer that vanished without a word (no RST) is noticed; a call also has its deadline.
    keepAlive: true,
  });
  c.on("error", () => drop(c));
  c.on("end", () => drop(c));
  try {
    await c.connect();
  } catch (e) {
    drop(c);
    throw e;
  }
  client = c;
  return c;
}

/** Forgets the connection (and closes its socket, which ends what the server was doing for it). */
function drop(c: Client | undefined): void {
  if (!c) return;
  if (client === c) client = undefined;
  const stream = (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
}

/** What kind of failure an error from pg is (SQLSTATE classes; no SQLSTATE = the network). */
function classify(e: unknown): { kind: ErrorKind; message: string; code: string } {
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err?.code === "string" ? err.code : "";
  const message = typeof err?.message === "string" ? err.message : String(e);
  let kind: ErrorKind = "sql";
  if (code === "23505") kind = "unique";
  else if (code.startsWith("40")) kind = "aborted";
  else if (!/^[0-9A-Z]{5}$/.test(code) || /^(08|53|57|58|28|3D)/.test(code)) kind = "unavailable";
  return { kind, message, code };
}

/** The connection whose transaction is open ("open" until "commit"/"rollback"); undefined = none. */
let txConn: Client | undefined;

const lostTx = (id: number): Reply => ({
  id,
  ok: false,
  error: {
    kind: "unavailable",
    code: "08006",
    message: "the transaction is no longer open (it failed, or its connection was lost)",
  },
});

/** `posted`: the epoch when the request came — one a reset abandoned while it waited never runs. */
async function run(req: Request, posted: number): Promise<Reply> {
  const { tx } = req;
  if (tx === "in" || tx === "commit" || tx === "rollback") {
    const lost = !txConn || txConn !== client;
    if (tx !== "in") txConn = undefined;
    if (lost) return tx === "rollback" ? { id: req.id, ok: true, results: [] } : lostTx(req.id);
  }
  let c: Client | undefined;
  const abandoned = () => Object.assign(new Error("the call was abandoned (deadline)"), { code: "57014" });
  const live = (conn: Client): Client => {
    if (epoch !== posted) throw abandoned();
    return conn;
  };
  try {
    if (epoch !== posted) throw abandoned(); // abandoned while it waited: no connection opened for it
    c = live(await connection());
    if (tx === "self" || tx === "open") {
      await c.query("BEGIN");
      if (tx === "open") txConn = c;
      if (tx === "open" && req.longTimeoutMs)
        await c.query(`SET LOCAL statement_timeout = ${Math.round(req.longTimeoutMs)}`);
      if (req.fence) {
        const r = await c.query(FENCE_SQL);
        const row = r.rows[0] as Fence | undefined;
        if (!row || row.holder !== req.fence.holder || Number(row.token) !== req.fence.token) {
          txConn = undefined;
          await c.query("ROLLBACK");
          return { id: req.id, ok: false, fenced: row ? { holder: row.holder, token: Number(row.token) } : null };
        }
      }
    }
    const results: StepResult[] = [];
    for (const s of req.steps) {
      const r = await live(c).query(s.sql, s.params);
      results.push({ rows: r.rows, rowCount: r.rowCount ?? 0 });
    }
    if (tx === "self" || tx === "commit") {
      // A transaction a failed statement aborted (its caller caught that failure and went on, as SQLite
      // allows) is ended by COMMIT with the tag ROLLBACK and no error: said as the failure it is.
      const done = await c.query("COMMIT");
      if (done.command !== "COMMIT") {
        const why =
          "the transaction was rolled back: a statement in it failed (its failure was caught and the transaction went on)";
        throw Object.assign(new Error(why), { code: "25P02" });
      }
    }
    if (tx === "rollback") await c.query("ROLLBACK");
    return { id: req.id, ok: true, results };
  } catch (e) {
    const error = classify(e);
    if (error.kind === "unavailable") drop(c);
    else if (c && tx !== "none" && tx !== "in") {
      await c.query("ROLLBACK").catch(() => drop(c));
    }
    if (tx === "self" || tx === "open") txConn = undefined;
    return { id: req.id, ok: false, error };
  }
}

let chain: Promise<void> = Promise.resolve();

port.on("message", (req: Request) => {
  if (req.op === "reset") {
    epoch++;
    drop(client);
    return;
  }
  // The epoch now: a request still queued behind a stuck one when its caller gave up (a reset) must not
  // run later under the next epoch — its caller was told UNAVAILABLE and moved on.
  const posted = epoch;
  chain = chain
    .then(() => run(req, posted))
    .catch((e): Reply => ({ id: req.id, ok: false, error: { kind: "sql", code: "", message: String(e) } }))
    .then((reply) => {
      port.postMessage(reply);
      Atomics.store(flag, 0, req.id);
      Atomics.notify(flag, 0);
    });
});
