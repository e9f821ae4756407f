/**
 * The audit file: appended to, and reopened at its path on reopen() (SIGHUP) so that a rotation that
 * renamed it takes; a reopen that fails keeps writing to the file opened before (no line lost).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { AuditLog } from "../../../src/common/audit";
import type { Logger } from "../../../src/common/log";

const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-audit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const line = (target: string) => ({ identity: "none", method: "/m", target, result: "OK" });
const targets = (file: string) =>
  readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l).target);

describe("AuditLog", () => {
  const errors: string[] = [];
  const quiet = () => {};
  const log: Logger = {
    debug: quiet,
    info: quiet,
    warn: quiet,
    error: (msg: string) => errors.push(msg),
    child: () => log,
  };

  it("after a rotation renamed the file, reopen() writes to a new file at the path (mode 0600)", () => {
    const file = path.join(dir, "a", "audit.log");
    const a = new AuditLog(log, file);
    try {
      a.record(line("before"));
      renameSync(file, `${file}.1`);
      a.record(line("rotated, not yet reopened"));
      assert.equal(a.reopen(), true);
      a.record(line("after"));
      assert.deepEqual(targets(`${file}.1`), ["before", "rotated, not yet reopened"]);
      assert.deepEqual(targets(file), ["after"]);
      assert.equal(statSync(file).mode & 0o777, 0o600);
    } finally {
      a.close();
    }
  });

  it("a reopen that cannot open the path keeps the file opened before", () => {
    const file = path.join(dir, "b", "audit.log");
    const a = new AuditLog(log, file);
    try {
      a.record(line("one"));
      renameSync(path.join(dir, "b"), path.join(dir, "b-moved"));
      writeFileSync(path.join(dir, "b"), "a file where the directory was\n");
      assert.equal(a.reopen(), false);
      assert.match(errors.at(-1) ?? "", /cannot reopen the audit log/);
      a.record(line("two"));
      assert.deepEqual(targets(path.join(dir, "b-moved", "audit.log")), ["one", "two"]);
    } finally {
      a.close();
    }
  });

  it("without a file, reopen() does nothing", () => {
    const a = new AuditLog(log, "");
    assert.equal(a.reopen(), true);
    a.record(line("log only"));
    a.close();
  });
});
