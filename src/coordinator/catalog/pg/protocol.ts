/**
 * The messages between the catalog's thread and its PostgreSQL worker (bridge.ts ↔ worker.ts). One
 * request is a short script run on the worker's one connection: optionally BEGIN and the fencing check,
 * then the statements in order, then optionally COMMIT (ROLLBACK when a step fails). The reply carries
 * every step's rows, or a classified error. Plain data only (structured clone).
 */

export interface Step {
  sql: string;
  params?: unknown[];
}

/** The lease a write transaction must still name (leader-lease.ts fencing). */
export interface Fence {
  holder: string;
  token: number;
}

/**
 * How a request relates to transactions:
 *  - "none": the steps run as they are (each its own transaction);
 *  - "self": BEGIN (+ fence check), the steps, COMMIT — ROLLBACK when a step fails;
 *  - "open": BEGIN (+ fence check), the steps, and the transaction stays open for the next requests;
 *  - "in": inside the open transaction (refused when its connection was lost meanwhile);
 *  - "commit" / "rollback": the steps (if any), then ends the open transaction.
 */
export type TxMode = "none" | "self" | "open" | "in" | "commit" | "rollback";

export interface Request {
  id: number;
  /** "reset": drop the connection now (a timed-out call); the next request reconnects. */
  op: "run" | "reset";
  steps: Step[];
  tx: TxMode;
  /** With "self"/"open": the lease row must still name this holder and token, else nothing runs. */
  fence?: Fence | undefined;
}

export interface StepResult {
  rows: Record<string, unknown>[];
  rowCount: number;
}

/** unavailable: connection lost/refused, timeout, server shutting down; unique: a UNIQUE violation. */
export type ErrorKind = "unavailable" | "unique" | "aborted" | "sql";

export type Reply =
  | { id: number; ok: true; results: StepResult[] }
  | { id: number; ok: false; fenced: Fence | null }
  | { id: number; ok: false; error: { kind: ErrorKind; message: string; code: string } };

/** SQL the fence check runs (the lease row, locked until the transaction ends). */
export const FENCE_SQL = "SELECT holder, token FROM coordinator_leader WHERE id = 1 FOR SHARE";
