/**
 * The audit log: one JSON line per mutating API call (when it ended, allowed or refused), per agent
 * registration (accepted or refused) and per refused authorization. Each line goes to the logger with
 * `"audit": true` and, when `auth.auditLog` names a file, is appended to that file too (opened once,
 * O_APPEND; a failed write is logged, never fatal). Refusals also count in
 * rbdbackup_authorization_refusals_total{service, reason} (registered with the coordinator's metrics).
 */
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import path from "node:path";
import client from "prom-client";
import type { Logger } from "../common/log";
import type { RefusalReason } from "./authz";

export interface AuditEntry {
  /** The caller: identity URI, "token:<role>", "none", … (authz.ts callerName). */
  identity: string;
  /** "/pkg.Service/Method". */
  method: string;
  /** What the call was about: volume, backup, job or agent ids from the request ("" when unknown). */
  target: string;
  /** "OK" or the status name (PERMISSION_DENIED, …). */
  result: string;
  /** For a refusal: why (the metric's reason label). */
  reason?: RefusalReason;
  /** For a refusal or a failure: the message the caller got. */
  message?: string;
}

export class Audit {
  readonly refusals = new client.Counter({
    name: "rbdbackup_authorization_refusals_total",
    help: "Calls refused by authentication or authorization, by service and reason (no_credential, bad_token, no_identity, wrong_role, wrong_kind, identity_mismatch, fsid_mismatch, duplicate_session, unknown_method).",
    labelNames: ["service", "reason"],
    registers: [],
  });
  #fd: number | null = null;

  constructor(
    readonly log: Logger,
    readonly file = "",
  ) {
    if (file) {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      this.#fd = openSync(file, "a", 0o600);
    }
  }

  record(e: AuditEntry): void {
    const line = { time: new Date().toISOString(), ...e };
    this.log.info("audit", { audit: true, ...line });
    if (this.#fd === null) return;
    try {
      writeSync(this.#fd, `${JSON.stringify(line)}\n`);
    } catch (err) {
      this.log.error("cannot append to the audit log", { file: this.file, err });
    }
  }

  /** A refused call: counted by service and reason, and written. */
  refused(service: string, e: AuditEntry & { reason: RefusalReason }): void {
    this.refusals.labels(service || "unknown", e.reason).inc();
    this.record(e);
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}
