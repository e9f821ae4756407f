/**
 * A job as it is created, whoever creates it (the API's admission, the policy runner): its record in
 * the initial state (QUEUED, no attempt yet), the fingerprint of the request that made it (so the same
 * idempotency key with another request is told apart) and how a lost UNIQUE race is recognised.
 */
import { createHash, randomUUID } from "node:crypto";
import { type JobKind, JobState } from "../../gen/rbdbackup/v1/backup_service";
import type { JobOperation, JobRecord } from "../model";

/** Hash of a request (as JSON, idempotency key left out) under a kind, so equal requests match. */
export function fingerprint(kind: string, msg: unknown): string {
  return createHash("sha256").update(kind).update(JSON.stringify(msg)).digest("hex");
}

/** A map with its keys in order, so that equal maps have equal fingerprints. */
export function sortedMeta(m: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** SQLite's constraint codes, or PostgreSQL's unique_violation (SQLSTATE 23505, catalog/pg). */
export const isUniqueViolation = (e: unknown): boolean => {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" && (code.startsWith("SQLITE_CONSTRAINT") || code === "23505");
};

/** What a new job is; the rest of its record starts empty. */
export interface JobSpec {
  kind: JobKind;
  backupId: string;
  volume: JobRecord["volume"];
  operation: JobOperation;
  idempotencyKey: string;
  fingerprint: string;
  locks: string[];
  /** The cluster whose agent runs it, and the other cluster of a transfer ("" = none). */
  execCluster: string;
  peerCluster: string;
}

/** The job record of `spec` as it starts: QUEUED, no attempt, nothing reported. */
export function newJobRecord(spec: JobSpec, maxAttempts: number, nowMs: number = Date.now()): JobRecord {
  return {
    ...spec,
    id: randomUUID(),
    state: JobState.JOB_STATE_QUEUED,
    attempts: 0,
    maxAttempts,
    errorCode: "",
    errorMessage: "",
    agentId: "",
    waitingReason: "queued",
    createdAt: nowMs,
    startedAt: 0,
    finishedAt: 0,
    nextAttemptAt: 0,
    lease: null,
    cancelRequested: false,
    result: null,
    warnings: [],
    fence: [],
  };
}

/**
 * Idempotency keys the policy runner makes (policy/slots.ts, retention-jobs.ts, verify-runner.ts): derived
 * from public data, so API callers may not use them (admission.ts refuses them).
 */
/** A scheduled run's or a retention delete's key starts with it (policy/slots.ts, retention-jobs.ts). */
export const POLICY_RUN_KEY_PREFIX = "pol:";
/** A scheduled verification's key starts with it (policy/verify-runner.ts). */
export const POLICY_VERIFY_KEY_PREFIX = "policy-verify:";
export const RUNNER_KEY_PREFIXES: readonly string[] = [POLICY_RUN_KEY_PREFIX, POLICY_VERIFY_KEY_PREFIX];
