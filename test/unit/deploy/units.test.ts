/**
 * The systemd units (deploy/systemd) keep the coordinator and the agents apart: two users, so that an
 * agent on a coordinator's host reads neither its TLS key, tokens, database password nor catalog; state
 * and log directories of their own; and the example configs write their audit logs where their unit lets
 * them (LogsDirectory; ProtectSystem=strict makes every other path read-only).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";

const root = path.resolve(__dirname, "../../../..");

/** Every `Key=value` of a unit's [Service] section (a key given twice: its values in order). */
function service(unit: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let inService = false;
  for (const raw of readFileSync(path.join(root, "deploy/systemd", unit), "utf8").split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) inService = line === "[Service]";
    if (!inService || line.startsWith("#") || !line.includes("=")) continue;
    const k = line.slice(0, line.indexOf("="));
    out.set(k, [...(out.get(k) ?? []), line.slice(k.length + 1)]);
  }
  return out;
}
const one = (s: Map<string, string[]>, k: string) => {
  const v = s.get(k);
  assert.equal(v?.length, 1, `${k} set once`);
  return v?.[0] as string;
};
const paths = (s: Map<string, string[]>, k: string) =>
  (s.get(k) ?? []).flatMap((v) => v.split(/\s+/)).map((p) => p.replace(/^-/, ""));
const json = (f: string) => JSON.parse(readFileSync(path.join(root, "deploy/examples", f), "utf8"));

const coordinators = ["rbdbackup-coordinator.service", "rbdbackup-coordinator-ha.service"];
const agent = service("rbdbackup-agent@.service");

describe("deploy/systemd units", () => {
  it("the coordinator and the agents run as two users, each with its own group", () => {
    for (const u of coordinators) {
      const s = service(u);
      assert.equal(one(s, "User"), "rbdbackup-coordinator", u);
      assert.equal(one(s, "Group"), "rbdbackup-coordinator", u);
      assert.equal(s.has("SupplementaryGroups"), false, `${u}: no group shared with the agents`);
    }
    assert.equal(one(agent, "User"), "rbdbackup-agent");
    assert.equal(one(agent, "Group"), "rbdbackup-agent");
    assert.equal(agent.has("SupplementaryGroups"), false);
  });

  it("state and log directories are each unit's own; each hides the other's secrets", () => {
    const dirs = [
      ...coordinators.map((u) => one(service(u), "LogsDirectory")),
      one(agent, "LogsDirectory"),
      one(agent, "StateDirectory"),
      one(service(coordinators[0] as string), "StateDirectory"),
    ];
    assert.deepEqual(dirs, [
      "rbdbackup/coordinator",
      "rbdbackup/coordinator",
      "rbdbackup/agent-%i",
      "rbdbackup/agent-%i",
      "rbdbackup/coordinator",
    ]);
    for (const u of coordinators) assert.ok(paths(service(u), "InaccessiblePaths").includes("/etc/ceph"), u);
    const hidden = paths(agent, "InaccessiblePaths");
    assert.ok(hidden.includes("/var/lib/rbdbackup/coordinator"));
    assert.ok(hidden.includes("/etc/rbdbackup/pgpass"));
    assert.match(one(agent, "ExecStart"), / --state-dir \/var\/lib\/rbdbackup\/agent-%i$/);
  });

  it("the coordinators' units pass only --config: a flag there would override the file's field without a word", () => {
    for (const u of coordinators) {
      assert.match(
        one(service(u), "ExecStart"),
        /^\/usr\/bin\/node \/opt\/rbdbackup\/dist\/src\/coordinator\/main\.js --config \/etc\/rbdbackup\/coordinator\.json$/,
        u,
      );
    }
  });

  it("every unit makes its files its own only and dumps no core; an agent reads none of a coordinator's secrets", () => {
    for (const u of [...coordinators, "rbdbackup-agent@.service"]) {
      assert.equal(one(service(u), "UMask"), "0077", u);
      assert.equal(one(service(u), "LimitCORE"), "0", u);
    }
    const hidden = paths(agent, "InaccessiblePaths");
    const c = json("coordinator.json");
    for (const f of [c.tls.key, c.auth.tokensFile, "/etc/rbdbackup/pgpass"]) assert.ok(hidden.includes(f), f);
  });

  it("the example configs write their audit logs inside their unit's log directory", () => {
    for (const f of ["coordinator.json", "coordinator-ha-a.json", "coordinator-ha-b.json"])
      assert.ok(json(f).auth.auditLog.startsWith("/var/log/rbdbackup/coordinator/"), f);
    // The example is the instance site-a (rbdbackup-agent@site-a).
    const a = json("agent.json");
    assert.equal(a.cluster.name, "site-a");
    assert.ok(a.audit.file.startsWith("/var/log/rbdbackup/agent-site-a/"));
    assert.equal(a.stateDir, "/var/lib/rbdbackup/agent-site-a");
  });
});
