/**
 * The coordinator's authentication and authorization logic without a server: the tokens file (roles,
 * line numbers of bad lines, reload keeping the old tokens when the new file is bad), who a call's
 * credentials make, the role table of every BackupService method, agent registrations bound to their
 * certificate, the audit log file and refusal counter, page tokens, and the catalog-disk statuses.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import type { Identity, Role } from "../../../src/common/identity";
import { ReloadMetrics } from "../../../src/common/reload-metrics";
import { reloadLogged } from "../../../src/common/reloadable-file";
import { certFingerprint, parseRevoked, RevocationList } from "../../../src/common/revocations";
import { catalogDiskError } from "../../../src/coordinator/api/error-status";
import { targetOf } from "../../../src/coordinator/api-audit";
import { Audit } from "../../../src/coordinator/audit";
import { establishCaller } from "../../../src/coordinator/auth";
import {
  authorizeApi,
  authorizeSession,
  type Caller,
  callerName,
  checkRegistration,
  METHOD_ROLES,
  MUTATING,
  REFUSAL_REASONS,
} from "../../../src/coordinator/authz";
import { SqliteCatalog } from "../../../src/coordinator/catalog/sqlite";
import { parseTokens, TokenStore } from "../../../src/coordinator/tokens";
import { BackupServiceDefinition } from "../../../src/gen/rbdbackup/v1/backup_service";
import { memoryLogger } from "./harness";

const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-auth-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const T = { reader: "reader-token-0123456789", operator: "operator-token-0123456789", admin: "admin-token-0123456789" };
const tokensText = `# API tokens\n\nreader ${T.reader}\n  operator   ${T.operator}  \nadmin ${T.admin}\n`;

describe("tokens file", () => {
  it("<role> <token> lines; comments and blank lines ignored", () => {
    const e = parseTokens(tokensText, "f");
    assert.deepEqual(
      e.map((x) => x.role),
      ["reader", "operator", "admin"],
    );
    const f = path.join(dir, "tokens-ok");
    writeFileSync(f, tokensText, { mode: 0o600 });
    const s = new TokenStore(f);
    assert.equal(s.roleOf(T.reader), "reader");
    assert.equal(s.roleOf(T.operator), "operator");
    assert.equal(s.roleOf(T.admin), "admin");
    assert.equal(s.roleOf("admin-token-0123456780"), null);
    assert.equal(s.roleOf(""), null);
  });

  it("a line without a role, an unknown role or a short token is refused, naming the line", () => {
    assert.throws(
      () => parseTokens(`# x\n${T.admin}\n`, "/etc/t"),
      /\/etc\/t line 2: expected "<role> <token> \[<name>\]"/,
    );
    assert.throws(() => parseTokens(`root ${T.admin}\n`, "f"), /f line 1: the first field is not a role/);
    // Written "<role> <name> <token>": the token would become the caller's name in the audit log.
    assert.throws(
      () => parseTokens(`operator cinder-backup-prod ${"ab12".repeat(16)}\n`, "f"),
      (e: Error) => /the third field looks like a token/.test(e.message) && !e.message.includes("ab12ab12"),
    );
    assert.equal(parseTokens(`operator ${T.operator} cinder-prod-01\n`, "f")[0]?.name, "cinder-prod-01");
    // Written the wrong way round, the line's error must not carry the token (it goes to the log).
    assert.throws(
      () => parseTokens(`${T.admin} admin\n`, "f"),
      (e: Error) => /the first field is not a role/.test(e.message) && !e.message.includes(T.admin),
    );
    assert.throws(() => parseTokens("\n\nadmin short\n", "f"), /f line 3: a token must be at least 16 characters/);
    assert.throws(() => parseTokens(`admin ${T.admin} a-name extra\n`, "f"), /f line 1: expected/);
    assert.throws(() => new TokenStore(path.join(dir, "missing")), /cannot read the API token file/);
  });

  it("reload (SIGHUP) takes the new file; a bad new file keeps the tokens in force", () => {
    const f = path.join(dir, "tokens-reload");
    writeFileSync(f, `reader ${T.reader}\n`, { mode: 0o600 });
    const s = new TokenStore(f);
    writeFileSync(f, `operator ${T.operator}\n`);
    assert.equal(s.reload(), 1);
    assert.equal(s.roleOf(T.reader), null, "the removed token no longer works");
    assert.equal(s.roleOf(T.operator), "operator");
    writeFileSync(f, `${T.admin}\n`);
    assert.throws(() => s.reload(), /line 1/);
    assert.equal(s.roleOf(T.operator), "operator", "the old tokens stay after a bad reload");
    assert.equal(s.roleOf(T.admin), null);
  });
});

describe("revoked certificates file", () => {
  const der = Buffer.from("a certificate's DER bytes");
  const fp = certFingerprint(der);
  const colons = (h: string) => (h.toUpperCase().match(/../g) ?? []).join(":");

  it("openssl's output, bare hex with or without colons; comments and blank lines ignored", () => {
    const other = certFingerprint(Buffer.from("another"));
    const third = certFingerprint(Buffer.from("a third"));
    const set = parseRevoked(
      `# revoked\n\nsha256 Fingerprint=${colons(fp)}\n  ${other}  # retired agent\n${colons(third)}\n`,
      "f",
    );
    assert.deepEqual([...set], [fp, other, third]);
  });

  it("a line that is not a fingerprint is refused, naming the line", () => {
    assert.throws(
      () => parseRevoked(`${fp}\n\nabcdef\n`, "/etc/r"),
      /\/etc\/r line 3: expected a certificate's SHA-256/,
    );
    assert.throws(() => parseRevoked(`SHA1 Fingerprint=${colons(fp.slice(0, 40))}\n`, "f"), /f line 1:/);
  });

  it("only a listed certificate is revoked; reload reads the file again, a bad file keeps the list", () => {
    const f = path.join(dir, "revoked");
    writeFileSync(f, `${fp}\n`);
    const r = new RevocationList(f);
    assert.equal(r.revoked(der), fp);
    assert.equal(r.revoked(Buffer.from("someone else")), null);
    writeFileSync(f, "not a fingerprint\n");
    assert.throws(() => r.reload(), /line 1/);
    assert.equal(r.revoked(der), fp, "the old list stays in force");
    writeFileSync(f, "# none\n");
    assert.equal(r.reload(), 0);
    assert.equal(r.revoked(der), null);
    assert.equal(new RevocationList("").revoked(der), null, "no file: none revoked");
  });

  it("a reload refuses a file read half-written: no final newline, or empty while revocations are in force; a lift is a warning, and the metric says what took", async () => {
    const f = path.join(dir, "revoked-halfway");
    const other = certFingerprint(Buffer.from("another"));
    writeFileSync(f, `${fp}\n${other}\n`);
    const r = new RevocationList(f);
    const log = memoryLogger();
    const metrics = new ReloadMetrics(["revocations"]);
    const took = async () =>
      (await metrics.successful.get()).values.find((v) => v.labels.file === "revocations")?.value;
    const reload = () =>
      reloadLogged(
        r,
        log,
        { what: "revoked certificates", count: "revoked", kept: "kept", file: "revocations" },
        metrics,
      );
    assert.equal(await took(), 1, "read at start");
    for (const half of ["", `${fp}\n${other.slice(0, 20)}`, `${fp}`]) {
      writeFileSync(f, half);
      assert.equal(reload(), false, JSON.stringify(half));
      assert.equal(r.revoked(der), fp, "the old list stays in force");
      assert.equal(r.has(other), true);
      assert.equal(await took(), 0);
    }
    assert.match(
      String(log.lines.findLast((l) => l.level === "error")?.fields?.err),
      /does not end with a newline: it may be half-written/,
    );
    writeFileSync(f, `${fp}\n`);
    assert.equal(reload(), true);
    assert.equal(await took(), 1);
    assert.deepEqual(log.lines.findLast((l) => l.level === "warn")?.fields?.removed, [other], "the lifted one named");
    writeFileSync(f, "# nothing revoked\n");
    assert.equal(reload(), true, "a comment line lifts them all on purpose");
    assert.equal(r.revoked(der), null);
    writeFileSync(f, "");
    assert.equal(reload(), true, "empty while none is revoked: nothing to lose");
  });

  it("a revoked certificate is UNAUTHENTICATED, even with a valid token beside it; others are as before", () => {
    const f = path.join(dir, "tokens-revoked");
    writeFileSync(f, tokensText, { mode: 0o600 });
    const opts = {
      insecure: false,
      tokens: new TokenStore(f),
      revoked: { has: (f: string) => f === fp },
    };
    for (const [auth, session] of [
      [undefined, false],
      [`Bearer ${T.admin}`, false],
      [undefined, true],
    ] as const) {
      const r = establishCaller(opts, der, auth, session);
      assert.ok(!("via" in r), "refused");
      assert.equal(r.code, Status.UNAUTHENTICATED);
      assert.equal(r.reason, "revoked_certificate");
      assert.match(r.message, new RegExp(`sha256 ${fp}\\) is revoked`));
      assert.equal(r.who, "no identity", "the audit line names whom the certificate names");
    }
    assert.deepEqual(establishCaller(opts, Buffer.from("x"), undefined, false), {
      via: "certificate",
      identity: null,
      fingerprint: certFingerprint(Buffer.from("x")),
      fingerprints: [certFingerprint(Buffer.from("x"))],
    });
  });
});

describe("who a call's credentials make", () => {
  const f = path.join(dir, "tokens-callers");
  writeFileSync(f, tokensText, { mode: 0o600 });
  const tokens = new TokenStore(f);
  it("TLS: a verified certificate is its identity (or none); else a known token; else UNAUTHENTICATED", () => {
    const tls = { insecure: false, tokens };
    const bogus = Buffer.from("not a certificate");
    assert.deepEqual(establishCaller(tls, bogus, undefined, false), {
      via: "certificate",
      identity: null,
      fingerprint: certFingerprint(bogus),
      fingerprints: [certFingerprint(bogus)],
    });
    assert.deepEqual(establishCaller(tls, undefined, `Bearer ${T.operator}`, false), {
      via: "token",
      role: "operator",
    });
    const bad = establishCaller(tls, undefined, "Bearer not-a-token-at-all-xxxx", false);
    assert.ok(!("via" in bad) && bad.code === Status.UNAUTHENTICATED && bad.reason === "bad_token");
    const none = establishCaller(tls, undefined, undefined, false);
    assert.ok(!("via" in none) && none.code === Status.UNAUTHENTICATED && none.reason === "no_credential");
    const sessionByToken = establishCaller(tls, undefined, `Bearer ${T.admin}`, true);
    assert.ok(!("via" in sessionByToken) && sessionByToken.code === Status.UNAUTHENTICATED, "a token is no agent");
  });

  it("insecure: tokens (when configured) still decide; without tokens anyone is 'insecure'", () => {
    assert.deepEqual(establishCaller({ insecure: true, tokens }, undefined, `Bearer ${T.reader}`, false), {
      via: "token",
      role: "reader",
    });
    const r = establishCaller({ insecure: true, tokens }, undefined, undefined, false);
    assert.ok(!("via" in r) && r.code === Status.UNAUTHENTICATED);
    assert.deepEqual(establishCaller({ insecure: true, tokens: new TokenStore("") }, undefined, undefined, false), {
      via: "insecure",
    });
  });
});

const client = (role: Role): Caller => ({ via: "certificate", identity: { kind: "client", role, name: role } });
const agent: Identity = { kind: "agent", cluster: "site-a", agentId: "agent-site-a" };
const CALLERS: Array<[string, Caller, Role | null]> = [
  ["reader cert", client("reader"), "reader"],
  ["operator cert", client("operator"), "operator"],
  ["admin cert", client("admin"), "admin"],
  ["reader token", { via: "token", role: "reader" }, "reader"],
  ["operator token", { via: "token", role: "operator" }, "operator"],
  ["admin token", { via: "token", role: "admin" }, "admin"],
  ["agent cert", { via: "certificate", identity: agent }, null],
  ["coordinator cert", { via: "certificate", identity: { kind: "coordinator", id: "c" } }, null],
  ["no-identity cert", { via: "certificate", identity: null }, null],
];
const RANK: Role[] = ["reader", "operator", "admin"];

describe("the role table", () => {
  it("names every BackupService method, and nothing else", () => {
    const methods = Object.values(BackupServiceDefinition.methods).map((m) => m.name);
    assert.deepEqual(Object.keys(METHOD_ROLES).sort(), [...methods].sort());
    for (const m of MUTATING) assert.notEqual(METHOD_ROLES[m], "reader", `${m} changes something`);
    assert.equal(METHOD_ROLES.RestoreBackup, "operator");
    assert.equal(METHOD_ROLES.DeleteBackup, "operator");
    assert.equal(METHOD_ROLES.ImportBackupRecord, "admin");
  });

  for (const [name, caller, role] of CALLERS) {
    it(`${name}: each method allowed or PERMISSION_DENIED naming the role it needs`, () => {
      for (const [method, needed] of Object.entries(METHOD_ROLES)) {
        const r = authorizeApi(`/rbdbackup.v1.BackupService/${method}`, caller);
        const allowed = role !== null && RANK.indexOf(role) >= RANK.indexOf(needed);
        if (allowed) assert.equal(r, null, `${name} may call ${method}`);
        else {
          assert.ok(r, `${name} may not call ${method}`);
          assert.equal(r.code, Status.PERMISSION_DENIED);
          assert.match(r.message, new RegExp(`${method} needs role ${needed}`));
          assert.equal(
            r.reason,
            role ? "wrong_role" : caller.via === "certificate" && !caller.identity ? "no_identity" : "wrong_kind",
          );
        }
      }
    });
  }

  it("unknown methods are refused; insecure mode allows everything", () => {
    assert.equal(
      authorizeApi("/rbdbackup.v1.BackupService/DropEverything", client("admin"))?.code,
      Status.UNIMPLEMENTED,
    );
    assert.equal(authorizeApi("/rbdbackup.v1.AgentService/DeleteBackup", client("admin"))?.code, Status.UNIMPLEMENTED);
    assert.equal(authorizeApi("/rbdbackup.v1.BackupService/DeleteBackup", { via: "insecure" }), null);
  });
});

describe("agent sessions", () => {
  it("only an agent certificate opens one", () => {
    assert.equal(authorizeSession({ via: "certificate", identity: agent }), null);
    for (const [name, caller] of CALLERS.filter(([n]) => n !== "agent cert")) {
      const r = authorizeSession(caller);
      assert.ok(r, name);
      assert.ok([Status.PERMISSION_DENIED, Status.UNAUTHENTICATED].includes(r.code), name);
    }
  });

  it("a registration must claim the certificate's agent id and cluster", () => {
    const c: Caller = { via: "certificate", identity: agent };
    assert.equal(checkRegistration(c, "agent-site-a", "site-a"), null);
    for (const [id, cl] of [
      ["agent-site-b", "site-a"],
      ["agent-site-a", "site-b"],
    ] as const) {
      const r = checkRegistration(c, id, cl);
      assert.equal(r?.code, Status.PERMISSION_DENIED);
      assert.equal(r?.reason, "identity_mismatch");
      assert.match(r?.message ?? "", /agent agent-site-a of cluster site-a.*claims agent .* of cluster /);
    }
  });

  it("the first registration of a cluster name pins its fsid (also for catalogs from before the pin)", () => {
    const f = path.join(dir, "pins.sqlite");
    const c1 = new SqliteCatalog(f);
    const fsid = "11111111-1111-4111-8111-111111111111";
    c1.upsertAgent({
      agentId: "old-agent",
      clusterName: "site-old",
      clusterFsid: fsid,
      version: "",
      transferAddress: "127.0.0.1:1",
      capacity: 1,
      defaultBackupPool: "",
      cephClientAddrs: "",
      lastSeen: 1,
    });
    assert.equal(c1.pinClusterFsid("site-a", fsid, "a1").fsid, fsid);
    assert.equal(c1.pinClusterFsid("site-a", "22222222-2222-4222-8222-222222222222", "a2").fsid, fsid);
    assert.equal(c1.pinClusterFsid("site-a", fsid, "a2").pinnedBy, "a1");
    c1.close();
    const c2 = new SqliteCatalog(f);
    assert.equal(c2.pinClusterFsid("site-old", "33333333-3333-4333-8333-333333333333", "x").fsid, fsid);
    assert.equal(c2.pinClusterFsid("site-a", "33333333-3333-4333-8333-333333333333", "x").fsid, fsid);
    c2.close();
  });
});

describe("audit", () => {
  it("lines go to the log with audit: true and to the file; refusals are counted by service and reason", async () => {
    const log = memoryLogger();
    const file = path.join(dir, "audit", "audit.log");
    const a = new Audit(log, file);
    a.record({
      identity: "token:operator",
      method: "/rbdbackup.v1.BackupService/DeleteBackup",
      target: "backup=b",
      result: "OK",
    });
    a.refused("rbdbackup.v1.BackupService", {
      identity: callerName({ via: "certificate", identity: agent }),
      method: "/rbdbackup.v1.BackupService/DeleteBackup",
      target: "",
      result: "PERMISSION_DENIED",
      reason: "wrong_kind",
    });
    a.close();
    const lines = readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.equal(lines[0].identity, "token:operator");
    assert.equal(lines[1].identity, "rbdbackup://agent/site-a/agent-site-a");
    assert.equal(lines[1].result, "PERMISSION_DENIED");
    assert.ok(typeof lines[0].time === "string");
    assert.equal(log.lines.filter((l) => l.fields?.audit === true).length, 2);
    a.refused("no.such.Service", {
      identity: "",
      method: "/no.such.Service/X",
      target: "",
      result: "UNIMPLEMENTED",
      reason: "unknown_method",
    });
    const m = await a.refusals.get();
    const counted = m.values.filter((v) => v.value > 0).map((v) => [v.labels, v.value]);
    assert.deepEqual(counted, [
      [{ service: "rbdbackup.v1.BackupService", reason: "wrong_kind" }, 1],
      [{ service: "other", reason: "unknown_method" }, 1],
    ]);
    // Every known service and reason is there from the start (at 0), and nothing a caller names.
    assert.equal(m.values.length, 2 * REFUSAL_REASONS.length + 1);
    assert.equal(REFUSAL_REASONS.length, 13);
  });

  it("the target names the request's volume, backup and job ids", () => {
    assert.equal(
      targetOf({
        volume: { cluster: "a", pool: "rbd", namespace: "", image: "v" },
        location: { cluster: "b", pool: "backups", namespace: "" },
      }),
      "volume=a/rbd/v location=b/backups",
    );
    assert.equal(
      targetOf({ backupId: "x", target: { cluster: "a", pool: "rbd", namespace: "n", image: "w" } }),
      "target=a/rbd/n/w backup=x",
    );
    assert.equal(targetOf({ jobId: "j" }), "job=j");
    assert.equal(
      targetOf({
        volume: { cluster: "a", pool: "rbd", namespace: "", image: "v" },
        source: { cluster: "b", pool: "rbd", namespace: "", image: "v-over" },
      }),
      "volume=a/rbd/v source=b/rbd/v-over",
      "FailbackVolume names the failed-over volume too",
    );
    assert.equal(
      targetOf({
        body: {
          $case: "header",
          value: {
            volume: { cluster: "a", pool: "rbd", namespace: "", image: "v" },
            location: { cluster: "b", pool: "backups", namespace: "" },
          },
        },
      }),
      "volume=a/rbd/v location=b/backups",
      "ImportBackup: its first message's header",
    );
    assert.equal(targetOf({ cluster: "b", pools: ["backups", "cold"], dryRun: false }), "cluster=b pools=backups,cold");
  });
});

describe("small fixes", () => {
  it("a page token this server did not issue is a RangeError (INVALID_ARGUMENT), never an SQL error", () => {
    const b64 = (s: string) => Buffer.from(s).toString("base64url");
    const c = new SqliteCatalog(":memory:");
    // The offset tokens of old, and garbage: refused (keyset tokens are signed; test/unit/catalog/paging.test.ts).
    for (const t of [b64("o:1e21"), b64("o:100"), "x", `${b64('{"c":1,"i":"x"}')}.AAAA`, "a.b.c"]) {
      assert.throws(() => c.listJobs({ state: 0, kind: 0, backupId: "" }, 10, t), RangeError, t);
      assert.throws(() => c.listBackups({}, 10, t), RangeError, t);
    }
    c.close();
  });

  it("a full catalog disk is RESOURCE_EXHAUSTED, an I/O error UNAVAILABLE, each naming the directory", () => {
    const sqlite = (code: string) => Object.assign(new Error("database or disk is full"), { code });
    const full = catalogDiskError(sqlite("SQLITE_FULL"), "/var/lib/rbdbackup/coordinator");
    assert.equal(full?.status, Status.RESOURCE_EXHAUSTED);
    assert.match(
      full?.message ?? "",
      /the catalog's disk is full: free space under \/var\/lib\/rbdbackup\/coordinator/,
    );
    const enospc = catalogDiskError(new AppError(Status.INTERNAL, "x", { cause: sqlite("ENOSPC") }), "/d");
    assert.equal(enospc?.status, Status.RESOURCE_EXHAUSTED, "found in the cause chain too");
    const io = catalogDiskError(sqlite("SQLITE_IOERR_WRITE"), "/d");
    assert.equal(io?.status, Status.UNAVAILABLE);
    assert.match(io?.message ?? "", /SQLITE_IOERR_WRITE.*under \/d/);
    assert.equal(catalogDiskError(sqlite("SQLITE_CONSTRAINT_UNIQUE"), "/d"), undefined);
    assert.equal(catalogDiskError(new Error("other"), "/d"), undefined);
  });
});
