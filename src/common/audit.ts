/**
 * The audit log both daemons write (issue 12): one JSON line per audited event, with `time`, the
 * caller's `identity`, the `method`, the `target` (what the request named, "" when unknown), the
 * `result` (OK or a status name) and, for a refusal, the `reason` and the `message` the caller got.
 * Each line goes to the daemon's logger marked `"audit": true` and, when a file is configured
 * (coordinator `auth.auditLog`, agent `audit.file`), is appended to that file too (O_APPEND, mode 0600;
 * a failed write is logged, never fatal). SIGHUP reopens it (`reopen`), so logrotate's default rename
 * works: the daemon then writes to a new file at the path, not into the rotated one forever. What is audited, the refusal metric and
 * its reason vocabulary stay with each daemon (src/coordinator/audit.ts, agents/transfer/authz-audit.ts).
 */
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import path from "node:path";
import type { Logger } from "./log";

export interface AuditLine {
  /** The caller: identity URI, "token:<role>", "none", "insecure". */
  identity: string;
  /** "/pkg.Service/Method". */
  method: string;
  /** What the call was about (volume, image, backup, job ids…); "" when unknown. */
  target: string;
  /** "OK" or the status name (PERMISSION_DENIED, …). */
  result: string;
  /** For a refusal: why (the refusal metric's reason label). */
  reason?: string;
  /** For a refusal or a failure: the message the caller got. */
  message?: string;
}

/** The audit file opened for appending (its directory made, mode 0700; the file 0600). */
function openAppend(file: string): number {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  return openSync(file, "a", 0o600);
}

export class AuditLog {
  #fd: number | null = null;

  constructor(
    readonly log: Logger,
    /** A file the lines are appended to too; "" = the logger only. */
    readonly file = "",
  ) {
    if (file) this.#fd = openAppend(file);
  }

  record(e: AuditLine): void {
    const line = { time: new Date().toISOString(), ...e };
    this.log.info("audit", { audit: true, ...line });
    if (this.#fd === null) return;
    try {
      writeSync(this.#fd, `${JSON.stringify(line)}\n`);
    } catch (err) {
      this.log.error("cannot append to the audit log", { file: this.file, err });
    }
  }

  /**
   * Opens the file at its path again (after a rotation renamed it) and closes the old descriptor. A
   * failed open keeps writing to the old one (logged): no line is lost to a bad reopen. Returns whether
   * it took (true with no file configured).
   */
  reopen(): boolean {
    if (!this.file || this.#fd === null) return true;
    let fd: number;
    try {
      fd = openAppend(this.file);
    } catch (err) {
      this.log.error("cannot reopen the audit log; still writing to the file opened before", { file: this.file, err });
      return false;
    }
    const old = this.#fd;
    this.#fd = fd;
    closeSync(old);
    return true;
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}
