/**
 * Coordinator configuration: the documented example parses; the schema checks every field with a
 * message naming it and fills in the defaults; flags override the file; TLS is required unless
 * insecure is asked for by name; a lease must outlive two heartbeats; and the published JSON Schema
 * (deploy/schema/coordinator.schema.json) is the one the code uses and accepts the example.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { parseAgentConfig } from "../../../agents/agent/config";
import { ConfigHelp } from "../../../src/common/config/load";
import { parseRevoked } from "../../../src/common/revocations";
import { parseCoordinatorConfig } from "../../../src/coordinator/config";
import { CoordinatorConfigSchema, coordinatorFlags } from "../../../src/coordinator/config-schema";
import { describePublishedSchema } from "../../helpers/published-schema";

const root = path.resolve(__dirname, "../../../..");
const example = path.join(root, "deploy/examples/coordinator.json");
const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-coordinator-config-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function parse(cfg: unknown, flags: string[] = []) {
  const f = path.join(dir, `coordinator-${n++}.json`);
  writeFileSync(f, JSON.stringify(cfg));
  return parseCoordinatorConfig(["--config", f, ...flags]);
}

const insecure = { tls: { insecure: true } };

describe("configuration", () => {
  it("deploy/examples/coordinator.json parses with its documented values", () => {
    const c = parseCoordinatorConfig(["--config", example]);
    assert.equal(c.listen, "127.0.0.1:7300");
    assert.equal(c.scheduler.perClusterLimit, 4);
    assert.equal(c.tokensFile, "/etc/rbdbackup/api-tokens");
    assert.equal(c.revokedCertificatesFile, "/etc/rbdbackup/revoked-certificates");
    assert.equal(c.tls.insecure, false);
  });

  it("the examples show every field the schema has (coordinator.json, with coordinator-ha-a.json for HA), as the README says", () => {
    const leaves = (schema: unknown, at: string): string[] => {
      const props = (schema as { properties?: Record<string, unknown> }).properties;
      if (!props) return [at];
      return Object.entries(props).flatMap(([k, v]) => leaves(v, at ? `${at}.${k}` : k));
    };
    const has = (doc: unknown, p: string) =>
      p.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], doc) !== undefined;
    const single = JSON.parse(readFileSync(example, "utf8"));
    const ha = JSON.parse(readFileSync(path.join(root, "deploy/examples/coordinator-ha-a.json"), "utf8"));
    // tls.insecure is for tests only: no deployment example sets it.
    const missing = leaves(CoordinatorConfigSchema, "").filter(
      (p) => p !== "tls.insecure" && !has(single, p) && !has(ha, p),
    );
    assert.deepEqual(missing, []);
  });

  it("deploy/examples/agent.json parses and names its coordinator", () => {
    const c = parseAgentConfig(["--config", path.join(root, "deploy/examples/agent.json")]);
    assert.deepEqual(c.coordinator.addresses, ["coord-a.example.net:7300", "coord-b.example.net:7300"]);
    assert.equal(c.limits.maxConcurrentJobs, 4);
  });

  it("no TLS material and no explicit insecure: refused with a message naming the fields", () => {
    assert.throws(() => parse({ listen: "127.0.0.1:0" }), /tls\.ca, tls\.cert and tls\.key are required/);
    assert.equal(parse({ listen: "127.0.0.1:0" }, ["--insecure"]).tls.insecure, true);
    assert.throws(() => parse({ tls: { insecure: "yes" } }), /tls\.insecure \(--insecure\) must be true or false/);
  });

  it("an address's port is 0 to 65535 and its host has no spaces", () => {
    for (const bad of ["127.0.0.1:99999", "127.0.0.1:65536", "a host:80", "[::1]:70000", "h:080"]) {
      assert.throws(() => parse({ ...insecure, listen: bad }), /listen/, bad);
      assert.throws(() => parse(insecure, ["--listen", bad]), /listen/, `--listen ${bad}`);
    }
    for (const good of ["127.0.0.1:0", "127.0.0.1:65535", "[::1]:9443", "localhost:1"])
      assert.equal(parse({ ...insecure, listen: good }).listen, good);
  });

  it("a lease renewal slower than a third of the lease is refused when the file is read, not after the start's work", () => {
    assert.throws(
      () => parse({ ...insecure, ha: { leaseSeconds: 5, renewMs: 6000 } }),
      /ha\.renewMs \(6000 ms\) must be at most a third of ha\.leaseSeconds \(5 s\)/,
    );
  });

  it("with a PostgreSQL catalog, a statement timeout over half the leader lease is refused", () => {
    const pg = { ...insecure, catalog: { url: "postgresql://u@127.0.0.1:5432/db", statementTimeoutMs: 3000 } };
    assert.throws(
      () => parse(pg),
      /catalog\.statementTimeoutMs \(3000 ms\) must be at most half of ha\.leaseSeconds \(5 s\)/,
    );
    assert.equal(parse({ ...pg, ha: { leaseSeconds: 6 } }).catalogStatementTimeoutMs, 3000);
    assert.equal(
      parse({ ...pg, catalog: { url: pg.catalog.url } }).catalogStatementTimeoutMs,
      2000,
      "the default fits",
    );
    assert.equal(
      parse({ ...insecure, catalog: { statementTimeoutMs: 9000 } }).catalogStatementTimeoutMs,
      9000,
      "SQLite: unused",
    );
  });

  it("a lease shorter than two heartbeats is refused", () => {
    assert.throws(
      () => parse({ ...insecure, scheduler: { leaseTtlMs: 2000, heartbeatIntervalMs: 1500 } }),
      /coordinator config: scheduler\.leaseTtlMs must be at least twice scheduler\.heartbeatIntervalMs/,
    );
    assert.equal(
      parse({ ...insecure, scheduler: { leaseTtlMs: 3000, heartbeatIntervalMs: 1500 } }).scheduler.leaseTtlMs,
      3000,
    );
  });

  it("an empty file gets every default; auth.tokensFile and catalog.path become tokensFile and catalogPath", () => {
    assert.deepEqual(parse(insecure), {
      listen: "127.0.0.1:7300",
      metricsListen: "127.0.0.1:9730",
      tls: { insecure: true },
      tokensFile: "",
      scopesFile: "",
      revokedCertificatesFile: "",
      auditLog: "",
      catalogPath: "/var/lib/rbdbackup/coordinator/catalog.sqlite",
      catalogUrl: "",
      catalogStatementTimeoutMs: 2_000,
      catalogHistoryDays: 90,
      scheduler: {
        leaseTtlMs: 15_000,
        heartbeatIntervalMs: 3_000,
        idleHeartbeatIntervalMs: 30_000,
        maxAttempts: 3,
        backoffBaseMs: 1_000,
        backoffMaxMs: 60_000,
        perClusterLimit: 4,
        tickMs: 1_000,
        fullPoolBackoffMs: 300_000,
        leftoverWaitMs: 30_000,
        placementTimeoutMs: 3_600_000,
        confirmTimeoutMs: 600_000,
      },
      policy: { tickMs: 1_000, discoveryIntervalMs: 60_000, minIntervalSeconds: 30 },
      ha: { id: "", advertise: "", leaseSeconds: 5, renewMs: 1_000 },
      shutdownGraceSeconds: 10,
      volumePresenceStaleAfterHours: 20,
    });
    assert.deepEqual(parseCoordinatorConfig(["--insecure"]), parse(insecure));
  });

  it("every flag overrides its field of the file", () => {
    const file = {
      listen: "127.0.0.1:1",
      metricsListen: "127.0.0.1:2",
      tls: { ca: "f-ca", cert: "f-cert", key: "f-key" },
      auth: { tokensFile: "/f-tokens" },
      catalog: { path: "/f.sqlite" },
      scheduler: { perClusterLimit: 2 },
    };
    const c = parse(file, [
      "--listen=127.0.0.1:3",
      "--metrics-listen=",
      "--catalog=/c.sqlite",
      "--tls-ca=ca",
      "--tls-cert=cert",
      "--tls-key=key",
      "--tokens-file=/tokens",
      "--revoked-certificates-file=/revoked",
      "--scopes-file=/scopes",
      "--per-cluster-limit=9",
    ]);
    assert.deepEqual(
      [
        c.listen,
        c.metricsListen,
        c.catalogPath,
        c.tokensFile,
        c.revokedCertificatesFile,
        c.scopesFile,
        c.scheduler.perClusterLimit,
      ],
      ["127.0.0.1:3", "", "/c.sqlite", "/tokens", "/revoked", "/scopes", 9],
    );
    assert.deepEqual(c.tls, { insecure: false, ca: "ca", cert: "cert", key: "key" });
    assert.equal(parse({ ...file, tls: {} }, ["--insecure"]).tls.insecure, true);
    assert.equal(Object.keys(coordinatorFlags).length, 11, "every flag is exercised above");
  });

  it("unknown keys, wrong types, values out of range and bad addresses are refused naming the field", () => {
    const cases: Array<[unknown, string[], string]> = [
      [{ ...insecure, auth: { tokenFile: "/t" } }, [], "auth.tokenFile: unknown key (did you mean tokensFile?)"],
      [
        { ...insecure, scheduler: { leaseTTLMs: 5000 } },
        [],
        "scheduler.leaseTTLMs: unknown key (did you mean leaseTtlMs?)",
      ],
      [{ ...insecure, catalogPath: "/x" }, [], "catalogPath: unknown key (did you mean catalog?)"],
      [{ ...insecure, scheduler: { maxAttempts: 0 } }, [], "scheduler.maxAttempts must be an integer in [1, 100]"],
      [{ ...insecure, scheduler: { tickMs: "1000" } }, [], "scheduler.tickMs must be an integer in [50, 60000]"],
      [
        insecure,
        ["--per-cluster-limit", "abc"],
        "scheduler.perClusterLimit (--per-cluster-limit) must be an integer in [1, 1024]",
      ],
      [
        insecure,
        ["--per-cluster-limit", "1025"],
        "scheduler.perClusterLimit (--per-cluster-limit) must be an integer in [1, 1024]",
      ],
      [{ ...insecure, shutdownGraceSeconds: 3601 }, [], "shutdownGraceSeconds must be an integer in [0, 3600]"],
      [{ ...insecure, catalog: { path: "" } }, [], "catalog.path (--catalog) must be a non-empty string"],
      [{ ...insecure, listen: "" }, [], 'listen (--listen) "" must be host:port'],
      [{ ...insecure, listen: "7300" }, [], 'listen (--listen) "7300" must be host:port'],
      [
        { ...insecure, metricsListen: "::1:9730" },
        [],
        'metricsListen (--metrics-listen) "::1:9730" must be host:port (or "")',
      ],
      [{ ...insecure, scheduler: 4 }, [], "scheduler must be an object"],
    ];
    for (const [cfg, flags, message] of cases) {
      assert.throws(
        () => parse(cfg, flags),
        (e: Error) => {
          assert.equal(e.message, `coordinator config: ${message}`);
          return true;
        },
      );
    }
    assert.equal(parse({ ...insecure, listen: "[::1]:7300", metricsListen: "" }).listen, "[::1]:7300");
  });

  it("--help lists every flag with its field and default", () => {
    assert.throws(
      () => parseCoordinatorConfig(["-h"]),
      (e: Error) => {
        assert.ok(e instanceof ConfigHelp);
        for (const flag of Object.keys(coordinatorFlags)) assert.match(e.message, new RegExp(`--${flag}\\b`));
        assert.match(
          e.message,
          /--per-cluster-limit N\n +Jobs running at once on one cluster.*\(scheduler\.perClusterLimit; default 4\)/,
        );
        return true;
      },
    );
  });
});

describePublishedSchema("coordinator", CoordinatorConfigSchema, [
  [(ex) => ({ ...ex, auth: { tokenFile: "/t" } }), "/auth", "additionalProperties"],
  [(ex) => ({ ...ex, scheduler: { ...ex.scheduler, maxAttempts: "3" } }), "/scheduler/maxAttempts", "type"],
  [(ex) => ({ ...ex, scheduler: { ...ex.scheduler, perClusterLimit: 0 } }), "/scheduler/perClusterLimit", "minimum"],
  [(ex) => ({ ...ex, listen: "localhost" }), "/listen", "pattern"],
]);

describe("deploy/examples/revoked-certificates", () => {
  it("parses: comments only, none revoked", () => {
    const f = path.join(root, "deploy/examples/revoked-certificates");
    assert.equal(parseRevoked(readFileSync(f, "utf8"), f).size, 0);
  });
});
