/** Configuration: the documented examples parse; TLS is required unless insecure mode is asked for by name. */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { parseAgentConfig } from "../../../agents/agent/config";
import { parseCoordinatorConfig } from "../../../src/coordinator/config";

const root = path.resolve(__dirname, "../../../..");

describe("configuration", () => {
  it("deploy/examples/coordinator.json parses with its documented values", () => {
    const c = parseCoordinatorConfig(["--config", path.join(root, "deploy/examples/coordinator.json")]);
    assert.equal(c.listen, "127.0.0.1:7300");
    assert.equal(c.scheduler.perClusterLimit, 4);
    assert.equal(c.tokensFile, "/etc/rbdbackup/api-tokens");
    assert.equal(c.tls.insecure, false);
  });

  it("deploy/examples/agent.json parses and names its coordinator", () => {
    const c = parseAgentConfig(["--config", path.join(root, "deploy/examples/agent.json")]);
    assert.equal(c.coordinator.address, "127.0.0.1:7300");
    assert.equal(c.limits.maxConcurrentJobs, 4);
  });

  it("no TLS material and no explicit insecure: refused with a message naming the fields", () => {
    const f = path.join(tmpdir(), `rbdbackup-coord-${process.pid}.json`);
    writeFileSync(f, JSON.stringify({ listen: "127.0.0.1:0" }));
    assert.throws(() => parseCoordinatorConfig(["--config", f]), /tls\.ca, tls\.cert and tls\.key are required/);
    assert.equal(parseCoordinatorConfig(["--config", f, "--insecure"]).tls.insecure, true);
  });

  it("a lease shorter than two heartbeats is refused", () => {
    const f = path.join(tmpdir(), `rbdbackup-coord2-${process.pid}.json`);
    writeFileSync(
      f,
      JSON.stringify({ tls: { insecure: true }, scheduler: { leaseTtlMs: 2000, heartbeatIntervalMs: 1500 } }),
    );
    assert.throws(() => parseCoordinatorConfig(["--config", f]), /leaseTtlMs/);
  });
});
