/**
 * Agent configuration: the schema checks every field (unknown keys, types, ranges, host:port) with a
 * message naming it, fills in the defaults, flags override the file, TLS is required unless insecure
 * is asked for by name, test faults need RBDBACKUP_ENABLE_TEST_FAULTS=1, and the published JSON Schema
 * (deploy/schema/agent.schema.json) is the one the code uses and accepts the documented example.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { parseAgentConfig } from "../../../agents/agent/config";
import { AgentConfigSchema, agentFlags } from "../../../agents/agent/config-schema";
import { ConfigHelp } from "../../../src/common/config/load";
import { describePublishedSchema } from "../../helpers/published-schema";

const root = path.resolve(__dirname, "../../../..");
const example = path.join(root, "deploy/examples/agent.json");
const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-agent-config-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** Writes `cfg` to a file and parses it with `flags`. */
function parse(cfg: unknown, flags: string[] = []) {
  const f = path.join(dir, `agent-${n++}.json`);
  writeFileSync(f, JSON.stringify(cfg));
  return parseAgentConfig(["--config", f, ...flags]);
}

const MiB = 1024 * 1024;
const minimal = { cluster: { name: "site-a", conf: "/etc/ceph/ceph.conf" }, tls: { insecure: true } };

function refused(cfg: unknown, message: string | RegExp, flags: string[] = []) {
  assert.throws(
    () => parse(cfg, flags),
    (e: Error) => {
      if (typeof message === "string") assert.equal(e.message, message);
      else assert.match(e.message, message);
      return true;
    },
  );
}

describe("agent configuration", () => {
  it("deploy/examples/agent.json parses with its documented values", () => {
    const c = parseAgentConfig(["--config", example]);
    assert.equal(c.agentId, "agent-site-a-1");
    assert.deepEqual(c.coordinator.addresses, ["coord-a.example.net:7300", "coord-b.example.net:7300"]);
    assert.equal(c.limits.maxConcurrentJobs, 4);
    assert.equal(c.limits.maxReadsInFlight, 12, "the widest read window, as the default derives it");
    assert.equal(c.limits.maxWindowBytes, 64 * 2 ** 20, "the widest write window, as the default derives it");
    assert.equal(c.transferListen, "127.0.0.1:7401");
    assert.equal(c.auth.revokedCertificatesFile, "/etc/rbdbackup/revoked-certificates");
    assert.equal(c.cluster.keyring, "/etc/ceph/ceph.client.rbdbackup.keyring");
    assert.deepEqual(c.tls, {
      insecure: false,
      ca: "/etc/rbdbackup/tls/ca.pem",
      cert: "/etc/rbdbackup/tls/agent-site-a-1.pem",
      key: "/etc/rbdbackup/tls/agent-site-a-1.key",
    });
    assert.equal("$schema" in c, false, "the editors' $schema key is not part of the config");
  });

  it("a minimal file gets every default", () => {
    const c = parse(minimal);
    assert.deepEqual(c, {
      agentId: `${hostname()}-site-a`,
      cluster: {
        name: "site-a",
        conf: "/etc/ceph/ceph.conf",
        clientId: "rbdbackup",
        connectTimeoutSeconds: 30,
        opTimeoutSeconds: 60,
      },
      listen: "127.0.0.1:7400",
      transferListen: "127.0.0.1:7401",
      transferAdvertiseAddress: "",
      coordinator: { addresses: [] },
      metricsListen: "127.0.0.1:9740",
      tls: { insecure: true },
      transfer: { resumeTtlSeconds: 3600, bulk: "auto", bulkIdleTimeoutMs: 30_000, zstdLevel: 1 },
      stateDir: "/var/lib/rbdbackup/agent",
      backupPool: "backups",
      sourcePaths: [],
      auth: { revokedCertificatesFile: "" },
      audit: { file: "" },
      limits: {
        chunkSizeBytes: 2 * 1024 * 1024,
        readsInFlight: 8,
        maxReadsInFlight: 12,
        writesInFlight: 16,
        windowBytes: 32 * 1024 * 1024,
        maxWindowBytes: 64 * 1024 * 1024,
        maxConcurrentTransfers: 8,
        maxConcurrentJobs: 4,
        fullCheckIntervalMs: 2000,
        http2WindowBytes: 16 * 1024 * 1024,
        bandwidthBytesPerSecond: 0,
      },
      shutdownGraceSeconds: 30,
    });
  });

  it("every flag overrides its field of the file", () => {
    const file = {
      ...minimal,
      agentId: "from-file",
      coordinator: { address: "10.0.0.1:7300" },
      tls: { ca: "f-ca", cert: "f-cert", key: "f-key" },
    };
    const c = parse(file, [
      "--agent-id=a1",
      "--cluster-name=site-b",
      "--ceph-conf=/b.conf",
      "--client-id=bk",
      "--keyring=/k",
      "--listen=127.0.0.1:1",
      "--transfer-listen=127.0.0.1:0",
      "--transfer-advertise-address=h:3",
      "--coordinator=127.0.0.1:4",
      "--metrics-listen=",
      "--tls-ca=ca",
      "--tls-cert=cert",
      "--tls-key=key",
      "--state-dir=/s",
      "--backup-pool=bp",
      "--revoked-certificates-file=/r",
    ]);
    assert.equal(c.agentId, "a1");
    assert.deepEqual(
      [c.cluster.name, c.cluster.conf, c.cluster.clientId, c.cluster.keyring],
      ["site-b", "/b.conf", "bk", "/k"],
    );
    assert.deepEqual(
      [c.listen, c.transferListen, c.transferAdvertiseAddress, c.coordinator.addresses],
      ["127.0.0.1:1", "127.0.0.1:0", "h:3", ["127.0.0.1:4"]],
    );
    assert.equal(c.metricsListen, "");
    assert.deepEqual(c.tls, { insecure: false, ca: "ca", cert: "cert", key: "key" });
    assert.deepEqual([c.stateDir, c.backupPool, c.auth.revokedCertificatesFile], ["/s", "bp", "/r"]);
    assert.equal(parse({ ...file, tls: {} }, ["--insecure"]).tls.insecure, true);
    // Every flag of the table was exercised above (a new flag needs a line here).
    assert.equal(Object.keys(agentFlags).length, 17);
  });

  it("several coordinator addresses: address first, then addresses, no duplicates; --coordinator is the whole list", () => {
    const both = {
      ...minimal,
      coordinator: { address: "10.0.0.1:7300", addresses: ["10.0.0.2:7300", "10.0.0.1:7300"] },
    };
    assert.deepEqual(parse(both).coordinator, { addresses: ["10.0.0.1:7300", "10.0.0.2:7300"] });
    assert.deepEqual(parse({ ...minimal, coordinator: { addresses: ["[::1]:7300", "h:1"] } }).coordinator, {
      addresses: ["[::1]:7300", "h:1"],
    });
    assert.deepEqual(parse({ ...minimal, coordinator: { address: "", addresses: [] } }).coordinator, { addresses: [] });
    // The flag, repeated and/or comma-separated, replaces both fields of the file.
    assert.deepEqual(
      parse(both, ["--coordinator", "127.0.0.1:1, 127.0.0.1:2", "--coordinator=127.0.0.1:3"]).coordinator,
      {
        addresses: ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
      },
    );
    assert.deepEqual(parse(both, ["--coordinator=127.0.0.1:2,127.0.0.1:2"]).coordinator, {
      addresses: ["127.0.0.1:2"],
    });
    assert.deepEqual(parse(both, ["--coordinator="]).coordinator, { addresses: [] }, '"" = none, as before');
    refused(minimal, /coordinator\.addresses.*\(--coordinator\).*"nope" must be host:port/, [
      "--coordinator=127.0.0.1:1,nope",
    ]);
  });

  it("flags alone are enough: cluster name and ceph.conf from flags, agentId from hostname and cluster", () => {
    const c = parseAgentConfig(["--cluster-name", "site-c", "--ceph-conf", "/c.conf", "--insecure"]);
    assert.equal(c.agentId, `${hostname()}-site-c`);
    assert.throws(() => parseAgentConfig(["--insecure"]), /agent config: cluster is required/);
    assert.throws(
      () => parseAgentConfig(["--cluster-name", "x", "--insecure"]),
      /agent config: cluster\.conf \(--ceph-conf\) is required$/,
    );
  });

  it("an unknown key is refused with its path and the key it probably meant", () => {
    refused(
      { ...minimal, limits: { chunkSizeByte: 4096 } },
      "agent config: limits.chunkSizeByte: unknown key (did you mean chunkSizeBytes?)",
    );
    refused(
      { ...minimal, transferListn: "" },
      "agent config: transferListn: unknown key (did you mean transferListen?)",
    );
    refused(
      { ...minimal, cluster: { ...minimal.cluster, Keyring: "/k" } },
      /cluster\.Keyring: unknown key \(did you mean keyring\?\)/,
    );
    refused({ ...minimal, tls: { insecure: true, cacert: "x" } }, /tls\.cacert: unknown key/);
    refused({ ...minimal, colour: "blue" }, "agent config: colour: unknown key");
    refused(
      { ...minimal, testFaults: { corrupt: 1 } },
      /testFaults\.corrupt: unknown key \(did you mean corruptChunk\?\)/,
    );
  });

  it("every limit: its bounds are accepted, one past them refused with the range; non-integers refused", () => {
    const limits = AgentConfigSchema.properties.limits.properties;
    for (const [name, s] of Object.entries(limits)) {
      const { minimum, maximum } = s as { minimum: number; maximum: number };
      const msg = `agent config: limits.${name} must be an integer in [${minimum}, ${maximum}]`;
      // maxWindowBytes 0 means twice windowBytes (its own test below).
      const atMinimum = { maxWindowBytes: 64 * MiB, maxReadsInFlight: 12 }[name] ?? minimum;
      assert.equal(parse({ ...minimal, limits: { [name]: minimum } }).limits[name as keyof typeof limits], atMinimum);
      assert.equal(parse({ ...minimal, limits: { [name]: maximum } }).limits[name as keyof typeof limits], maximum);
      refused({ ...minimal, limits: { [name]: minimum - 1 } }, msg);
      refused({ ...minimal, limits: { [name]: maximum + 1 } }, msg);
      refused({ ...minimal, limits: { [name]: minimum + 0.5 } }, msg);
      refused({ ...minimal, limits: { [name]: String(minimum) } }, msg);
    }
    refused(
      { ...minimal, cluster: { ...minimal.cluster, opTimeoutSeconds: 0 } },
      /cluster\.opTimeoutSeconds must be an integer in \[1, 3600\]/,
    );
    refused({ ...minimal, shutdownGraceSeconds: -1 }, /shutdownGraceSeconds must be an integer in \[0, 3600\]/);
  });

  it("limits.bandwidthBytesPerSecond: 0 (none, the default) or at least 1 MiB/s", () => {
    assert.equal(parse(minimal).limits.bandwidthBytesPerSecond, 0);
    assert.equal(
      parse({ ...minimal, limits: { bandwidthBytesPerSecond: 1048576 } }).limits.bandwidthBytesPerSecond,
      1048576,
    );
    refused(
      { ...minimal, limits: { bandwidthBytesPerSecond: 1048575 } },
      "agent config: limits.bandwidthBytesPerSecond 1048575 is below 1048576 (1 MiB/s); 0 means no cap",
    );
  });

  it("limits.maxWindowBytes, maxReadsInFlight: 0 (the default) is twice windowBytes, one and a half times readsInFlight; below them is refused", () => {
    assert.equal(parse({ ...minimal, limits: { windowBytes: 8 * MiB } }).limits.maxWindowBytes, 16 * MiB);
    assert.equal(
      parse({ ...minimal, limits: { windowBytes: 8 * MiB, maxWindowBytes: 8 * MiB } }).limits.maxWindowBytes,
      8 * MiB,
    );
    assert.equal(parse({ ...minimal, limits: { readsInFlight: 4 } }).limits.maxReadsInFlight, 6);
    assert.equal(parse({ ...minimal, limits: { readsInFlight: 1 } }).limits.maxReadsInFlight, 2);
    assert.equal(parse({ ...minimal, limits: { readsInFlight: 4, maxReadsInFlight: 4 } }).limits.maxReadsInFlight, 4);
    refused(
      { ...minimal, limits: { readsInFlight: 4, maxReadsInFlight: 3 } },
      "agent config: limits.maxReadsInFlight 3 is below limits.readsInFlight 4: set it to readsInFlight or more (equal keeps the window fixed), or 0 for one and a half times readsInFlight",
    );
    refused(
      { ...minimal, limits: { windowBytes: 8 * MiB, maxWindowBytes: 4 * MiB } },
      "agent config: limits.maxWindowBytes 4194304 is below limits.windowBytes 8388608: set it to windowBytes or more (equal keeps the window fixed), or 0 for twice windowBytes",
    );
  });

  it("strings: wrong types and empty required strings are refused naming the field (and its flag)", () => {
    refused(
      { ...minimal, cluster: { ...minimal.cluster, name: "" } },
      "agent config: cluster.name (--cluster-name) must be a non-empty string",
    );
    refused(
      { ...minimal, cluster: { ...minimal.cluster, conf: 7 } },
      /cluster\.conf \(--ceph-conf\) must be a non-empty string/,
    );
    refused({ ...minimal, agentId: "" }, /agentId \(--agent-id\) must be a non-empty string/);
    refused({ ...minimal, stateDir: "" }, /stateDir \(--state-dir\) must be a non-empty string/);
    refused(
      { ...minimal, transferAdvertiseAddress: null },
      /transferAdvertiseAddress \(--transfer-advertise-address\) must be a string/,
    );
    refused({ ...minimal, limits: [] }, /limits must be an object/);
    refused({ ...minimal, testFaults: { dieBeforeOutcome: 1 } }, /testFaults\.dieBeforeOutcome must be true or false/);
  });

  it("addresses must be host:port; listen and transferListen must be set, the others may be empty", () => {
    for (const key of ["listen", "transferListen", "transferAdvertiseAddress", "metricsListen"]) {
      refused(
        { ...minimal, [key]: "nope" },
        new RegExp(`^agent config: ${key} \\(--[a-z-]+\\) "nope" must be host:port`),
      );
      refused({ ...minimal, [key]: "host:port" }, /must be host:port/);
      assert.equal(parse({ ...minimal, [key]: "[::1]:0" })[key as "listen"], "[::1]:0");
      assert.equal(parse({ ...minimal, [key]: "backup-1.example:7401" })[key as "listen"], "backup-1.example:7401");
    }
    refused({ ...minimal, coordinator: { address: "h" } }, /coordinator\.address "h" must be host:port/);
    refused(
      { ...minimal, coordinator: { addresses: ["127.0.0.1:1", "h"] } },
      /coordinator\.addresses.*"h" must be host:port/,
    );
    for (const key of ["transferAdvertiseAddress", "metricsListen"]) {
      assert.equal(parse({ ...minimal, [key]: "" })[key as "listen"], "");
    }
    refused({ ...minimal, listen: "" }, /listen \(--listen\) "" must be host:port/);
    refused({ ...minimal, transferListen: "" }, /transferListen \(--transfer-listen\) "" must be host:port/);
    // The data plane has its own port: the same address for both servers cannot work.
    refused({ ...minimal, listen: "127.0.0.1:7401" }, /transferListen "127\.0\.0\.1:7401" must differ from listen/);
    assert.equal(
      parse({ ...minimal, listen: "127.0.0.1:0", transferListen: "127.0.0.1:0" }).transferListen,
      "127.0.0.1:0",
    );
    refused(minimal, /transferListen \(--transfer-listen\) "127\.0\.0\.1" must be host:port/, [
      "--transfer-listen=127.0.0.1",
    ]);
  });

  it("TLS: ca, cert and key are required unless insecure is set to true by name", () => {
    const tlsRequired = /^agent config: tls\.ca, tls\.cert and tls\.key are required/;
    refused({ ...minimal, tls: {} }, tlsRequired);
    refused({ ...minimal, tls: undefined }, tlsRequired);
    refused({ ...minimal, tls: { ca: "ca", cert: "cert" } }, tlsRequired);
    refused({ ...minimal, tls: { ca: "", cert: "cert", key: "key" } }, tlsRequired);
    refused({ ...minimal, tls: { insecure: false } }, tlsRequired);
    refused({ ...minimal, tls: { insecure: "true" } }, /tls\.insecure \(--insecure\) must be true or false/);
    refused({ ...minimal, tls: { insecure: 1 } }, /tls\.insecure \(--insecure\) must be true or false/);
    assert.deepEqual(parse({ ...minimal, tls: { ca: "a", cert: "b", key: "c" } }).tls, {
      insecure: false,
      ca: "a",
      cert: "b",
      key: "c",
    });
  });

  it("an empty keyring means none; test faults are honoured only with RBDBACKUP_ENABLE_TEST_FAULTS=1", () => {
    assert.equal("keyring" in parse({ ...minimal, cluster: { ...minimal.cluster, keyring: "" } }).cluster, false);
    const faults = { ...minimal, testFaults: { writeDelayMs: 300, corruptChunk: 3, dieBeforeOutcome: true } };
    const saved = process.env.RBDBACKUP_ENABLE_TEST_FAULTS;
    try {
      delete process.env.RBDBACKUP_ENABLE_TEST_FAULTS;
      assert.equal(parse(faults).testFaults, undefined);
      process.env.RBDBACKUP_ENABLE_TEST_FAULTS = "1";
      assert.deepEqual(parse(faults).testFaults, faults.testFaults);
    } finally {
      if (saved === undefined) delete process.env.RBDBACKUP_ENABLE_TEST_FAULTS;
      else process.env.RBDBACKUP_ENABLE_TEST_FAULTS = saved;
    }
  });

  it("unreadable files, non-objects and unknown flags are refused; --help lists every flag", () => {
    assert.throws(
      () => parseAgentConfig(["--config", path.join(dir, "absent.json")]),
      /agent config: cannot read .*absent\.json/,
    );
    const bad = path.join(dir, "bad.json");
    writeFileSync(bad, "{ not json");
    assert.throws(() => parseAgentConfig(["--config", bad]), /agent config: cannot read .*bad\.json/);
    writeFileSync(bad, "[1]");
    assert.throws(() => parseAgentConfig(["--config", bad]), /agent config: .*bad\.json must hold a JSON object/);
    assert.throws(() => parseAgentConfig(["--no-such-flag"]), /--no-such-flag/);
    assert.throws(
      () => parseAgentConfig(["--help"]),
      (e: Error) => {
        assert.ok(e instanceof ConfigHelp);
        for (const flag of Object.keys(agentFlags)) assert.match(e.message, new RegExp(`--${flag}\\b`));
        assert.match(
          e.message,
          /--transfer-listen VALUE\n +host:port of the data plane.*\(transferListen; default "127\.0\.0\.1:7401"\)/,
        );
        return true;
      },
    );
  });
});

describePublishedSchema("agent", AgentConfigSchema, [
  [(ex) => ({ ...ex, limits: { ...ex.limits, chunkSizeByte: 1 } }), "/limits", "additionalProperties"],
  [(ex) => ({ ...ex, cluster: { ...ex.cluster, opTimeoutSeconds: "60" } }), "/cluster/opTimeoutSeconds", "type"],
  [(ex) => ({ ...ex, limits: { ...ex.limits, chunkSizeBytes: 8 * 1024 * 1024 } }), "/limits/chunkSizeBytes", "maximum"],
  [(ex) => ({ ...ex, transferListen: "7401" }), "/transferListen", "pattern"],
]);
