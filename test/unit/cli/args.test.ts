/** CLI argument parsing: volume and location specs, flag values, connection flags and their env fallbacks. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  checkAddress,
  connectionSettings,
  idempotencyKey,
  parseChoice,
  parseFlags,
  parseIntFlag,
  parseLocationSpec,
  parseMeta,
  parseVolumeSpec,
  positionals,
  splitLeadingGlobalFlags,
  UsageError,
} from "../../../src/cli/args";
import { DeadlineError, reportError } from "../../../src/cli/exit-codes";

function usageError(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UsageError, `expected a UsageError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

describe("volume spec", () => {
  it("3 parts: default namespace", () => {
    assert.deepEqual(parseVolumeSpec("site-a/volumes/vol-1"), {
      cluster: "site-a",
      pool: "volumes",
      namespace: "",
      image: "vol-1",
    });
  });

  it("4 parts: with a namespace", () => {
    assert.deepEqual(parseVolumeSpec("site-a/volumes/tenant1/vol-1"), {
      cluster: "site-a",
      pool: "volumes",
      namespace: "tenant1",
      image: "vol-1",
    });
  });

  it("rejects other shapes, naming the flag and the form", () => {
    usageError(
      () => parseVolumeSpec("site-a/vol-1", "--volume"),
      /--volume "site-a\/vol-1" must be CLUSTER\/POOL.*got 2/,
    );
    usageError(() => parseVolumeSpec("a/b/c/d/e"), /3 or 4 parts.*got 5/);
    usageError(() => parseVolumeSpec("site-a"), /got 1/);
    usageError(() => parseVolumeSpec(""), /must be/);
    usageError(() => parseVolumeSpec("site-a//vol-1"), /part 2 is empty/);
    usageError(() => parseVolumeSpec("site-a/volumes/vol-1/"), /part 4 is empty/);
  });
});

describe("location spec", () => {
  it("1 to 3 parts", () => {
    assert.deepEqual(parseLocationSpec("site-b"), { cluster: "site-b", pool: "", namespace: "" });
    assert.deepEqual(parseLocationSpec("site-b/backups"), { cluster: "site-b", pool: "backups", namespace: "" });
    assert.deepEqual(parseLocationSpec("site-b/backups/ns"), { cluster: "site-b", pool: "backups", namespace: "ns" });
  });

  it("rejects empty parts and too many", () => {
    usageError(() => parseLocationSpec("site-b/backups/ns/x", "--to"), /--to .*1 to 3 parts.*got 4/);
    usageError(() => parseLocationSpec("site-b/"), /part 2 is empty/);
    usageError(() => parseLocationSpec(""), /part 1 is empty/);
  });
});

describe("flag values", () => {
  it("integers in range", () => {
    assert.equal(parseIntFlag(undefined, "limit", 1, 1000), undefined);
    assert.equal(parseIntFlag("50", "limit", 1, 1000), 50);
    usageError(() => parseIntFlag("0", "limit", 1, 1000), /--limit must be an integer from 1 to 1000/);
    usageError(() => parseIntFlag("1001", "limit", 1, 1000), /--limit/);
    usageError(() => parseIntFlag("1.5", "limit", 1, 1000), /--limit/);
    usageError(() => parseIntFlag("-1", "max-snapshots", 0, 10), /--max-snapshots/);
    usageError(() => parseIntFlag("ten", "limit", 1, 1000), /--limit/);
  });

  it("choices, case-insensitive", () => {
    const modes = { auto: 0, full: 1, incremental: 2 };
    assert.equal(parseChoice(undefined, "mode", modes), undefined);
    assert.equal(parseChoice("full", "mode", modes), 1);
    assert.equal(parseChoice("AUTO", "mode", modes), 0);
    usageError(() => parseChoice("fast", "mode", modes), /--mode must be one of auto, full, incremental, got "fast"/);
    usageError(() => parseChoice("toString", "mode", modes), /--mode/);
  });

  it("--meta KEY=VALUE", () => {
    assert.deepEqual(parseMeta(undefined), {});
    assert.deepEqual(parseMeta(["a=1", "b=", "c=x=y"]), { a: "1", b: "", c: "x=y" });
    usageError(() => parseMeta(["novalue"]), /--meta must be KEY=VALUE/);
    usageError(() => parseMeta(["=v"]), /non-empty key/);
    usageError(() => parseMeta(["a=1", "a=2"]), /key "a" given twice/);
  });

  it("idempotency keys", () => {
    const made = idempotencyKey(undefined);
    assert.match(made, /^cli-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, "none given: made up");
    assert.notEqual(idempotencyKey(undefined), made, "a new one per call");
    const hint = reportError(new DeadlineError("no answer within 1 s")).message;
    assert.match(hint, /run it again with --idempotency-key cli-[0-9a-f-]{36} to get its job, not a second one/);
    assert.equal(idempotencyKey("req-1:a.b_c"), "req-1:a.b_c");
    usageError(() => idempotencyKey("has space"), /--idempotency-key/);
    usageError(() => idempotencyKey("x".repeat(129)), /--idempotency-key/);
    usageError(() => idempotencyKey(""), /--idempotency-key/);
  });

  it("addresses", () => {
    assert.equal(checkAddress("127.0.0.1:7300", "coordinator"), "127.0.0.1:7300");
    assert.equal(checkAddress("coord.example.org:443", "coordinator"), "coord.example.org:443");
    assert.equal(checkAddress("[::1]:7300", "coordinator"), "[::1]:7300");
    for (const bad of ["localhost", "host:0", "host:70000", ":7300", "http://h:1", "a b:1"]) {
      usageError(() => checkAddress(bad, "coordinator"), /--coordinator must be HOST:PORT/);
    }
  });

  it("positionals", () => {
    assert.deepEqual(positionals("backup show", ["id1"], ["BACKUP_ID"]), ["id1"]);
    usageError(() => positionals("backup show", [], ["BACKUP_ID"]), /backup show: missing BACKUP_ID/);
    usageError(() => positionals("backup show", ["a", "b"], ["BACKUP_ID"]), /unexpected argument "b"/);
    usageError(() => positionals("backup show", [" "], ["BACKUP_ID"]), /BACKUP_ID must not be empty/);
  });

  it("unknown flags and missing values are usage errors", () => {
    usageError(() => parseFlags(["--nope"], {}), /--nope/);
    usageError(() => parseFlags(["--limit"], { limit: { type: "string" } }), /--limit/);
    const { values, positionals: pos } = parseFlags(["x", "--json", "--limit", "5", "--coordinator", "h:1"], {
      limit: { type: "string" },
    });
    assert.deepEqual(pos, ["x"]);
    assert.equal(values.json, true);
    assert.equal(values.limit, "5");
    assert.equal(values.coordinator, "h:1");
  });
});

describe("global flags before the command", () => {
  it("are split off, with their values", () => {
    assert.deepEqual(splitLeadingGlobalFlags(["--json", "--coordinator", "h:1", "--timeout=5", "backup", "list"]), {
      leading: ["--json", "--coordinator", "h:1", "--timeout=5"],
      rest: ["backup", "list"],
    });
  });

  it("stop at anything else", () => {
    assert.deepEqual(splitLeadingGlobalFlags(["backup", "--json"]), { leading: [], rest: ["backup", "--json"] });
    assert.deepEqual(splitLeadingGlobalFlags(["--config", "a.json"]), { leading: [], rest: ["--config", "a.json"] });
    assert.deepEqual(splitLeadingGlobalFlags(["--help"]), { leading: [], rest: ["--help"] });
    assert.deepEqual(splitLeadingGlobalFlags(["--ca"]), { leading: ["--ca"], rest: [] });
  });
});

describe("connection flags", () => {
  it("defaults", () => {
    assert.deepEqual(connectionSettings({}, {}), { address: "127.0.0.1:7300", tls: {}, timeoutMs: 30_000 });
  });

  it("environment fallbacks", () => {
    const s = connectionSettings(
      {},
      {
        RBDBACKUP_COORDINATOR: "coord:7301",
        RBDBACKUP_TLS_CA: "/ca.pem",
        RBDBACKUP_TLS_CERT: "/c.pem",
        RBDBACKUP_TLS_KEY: "/k.pem",
        RBDBACKUP_TOKEN: "s3cret",
      },
    );
    assert.deepEqual(s, {
      address: "coord:7301",
      tls: { ca: "/ca.pem", cert: "/c.pem", key: "/k.pem" },
      token: "s3cret",
      timeoutMs: 30_000,
    });
  });

  it("flags win over the environment", () => {
    const s = connectionSettings(
      { coordinator: "other:1", ca: "/flag-ca.pem", "token-file": "/tok", timeout: "2.5" },
      { RBDBACKUP_COORDINATOR: "coord:7301", RBDBACKUP_TLS_CA: "/ca.pem", RBDBACKUP_TOKEN: "s3cret" },
    );
    assert.deepEqual(s, { address: "other:1", tls: { ca: "/flag-ca.pem" }, tokenFile: "/tok", timeoutMs: 2500 });
  });

  it("--insecure drops TLS files", () => {
    const s = connectionSettings({ insecure: true, cert: "/c.pem" }, { RBDBACKUP_TLS_CA: "/ca.pem" });
    assert.deepEqual(s.tls, { insecure: true });
  });

  it("rejects inconsistent TLS flags and bad values", () => {
    usageError(() => connectionSettings({ ca: "/ca", cert: "/c" }, {}), /--cert and --key go together/);
    usageError(() => connectionSettings({ cert: "/c", key: "/k" }, {}), /need --ca/);
    usageError(() => connectionSettings({ timeout: "0" }, {}), /--timeout/);
    usageError(() => connectionSettings({ timeout: "soon" }, {}), /--timeout/);
    usageError(() => connectionSettings({ coordinator: "nohost" }, {}), /--coordinator must be HOST:PORT/);
    usageError(() => connectionSettings({}, { RBDBACKUP_COORDINATOR: "x" }), /RBDBACKUP_COORDINATOR/);
  });
});
