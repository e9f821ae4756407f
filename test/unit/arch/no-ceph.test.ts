/**
 * A coordinator host needs no Ceph: the coordinator and the CLI's client verbs start and serve with the
 * native addon absent (RBDBACKUP_NATIVE_PATH points at nothing) and never load a module of agents/.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type CoordinatorProcess, startCoordinatorProcess } from "../../../src/lab/coordinator-process";

const execFileP = promisify(execFile);
const repoRoot = path.resolve(__dirname, "../../../..");
const cli = path.join(repoRoot, "dist/src/cli/main.js");

/** Modules of the agent side (compiled to dist/agents/) or the addon itself. */
const agentModules = (loaded: string[]) =>
  loaded.filter(
    (f) => f.includes(`${path.sep}dist${path.sep}agents${path.sep}`) || f.endsWith("rbdbackup_native.node"),
  );

describe("no Ceph on a coordinator host", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-no-ceph-"));
  const env = {
    RBDBACKUP_NATIVE_PATH: path.join(dir, "absent", "rbdbackup_native.node"),
    NODE_OPTIONS: `--require ${path.join(__dirname, "record-loaded-modules.js")}`,
  };
  const saved = { ...process.env };
  let coord: CoordinatorProcess;

  before(async () => {
    Object.assign(process.env, env, { RBDBACKUP_TEST_LOADED_MODULES: path.join(dir, "coordinator.modules") });
    coord = await startCoordinatorProcess({ insecure: true, dir: path.join(dir, "coordinator") });
  });

  after(async () => {
    await coord?.stop();
    process.env = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it("the coordinator serves its API and loads nothing of agents/", async () => {
    const r = await coord.client.listAgents({});
    assert.deepEqual(r.agents, []);
    const jobs = await coord.client.listJobs({});
    assert.deepEqual(jobs.jobs, []);
    await coord.stop();
    const loaded = readFileSync(path.join(dir, "coordinator.modules"), "utf8").split("\n").filter(Boolean);
    assert.ok(
      loaded.some((f) => f.endsWith(path.join("dist", "src", "coordinator", "main.js"))),
      "recorded",
    );
    assert.deepEqual(agentModules(loaded), []);
  });

  it("the CLI's client verbs work and load nothing of agents/", async () => {
    const c = await startCoordinatorProcess({ insecure: true, dir: path.join(dir, "coordinator-2") });
    try {
      for (const [i, args] of [
        ["agent", "list"],
        ["backup", "list"],
        ["job", "list"],
      ].entries()) {
        const modules = path.join(dir, `cli-${i}.modules`);
        const { stdout } = await execFileP(
          process.execPath,
          [cli, ...args, "--coordinator", c.address, "--insecure", "--json"],
          { env: { ...process.env, RBDBACKUP_TEST_LOADED_MODULES: modules }, timeout: 30_000 },
        );
        assert.ok(JSON.parse(stdout) !== undefined, `${args.join(" ")} printed JSON`);
        const loaded = readFileSync(modules, "utf8").split("\n").filter(Boolean);
        assert.deepEqual(agentModules(loaded), [], `${args.join(" ")} loaded agent modules`);
      }
    } finally {
      await c.stop();
    }
  });

  it("the agent daemon refuses to start without its addon, saying so", async () => {
    const cfg = path.join(dir, "agent.json");
    writeFileSync(
      cfg,
      JSON.stringify({
        agentId: "no-ceph",
        cluster: { name: "site-x", conf: path.join(dir, "ceph.conf") },
        listen: "127.0.0.1:0",
        metricsListen: "",
        tls: { insecure: true },
        stateDir: path.join(dir, "agent-state"),
      }),
    );
    const r = await execFileP(process.execPath, [cli, "agent", "--config", cfg], { timeout: 30_000 }).then(
      () => assert.fail("the agent started without its addon"),
      (e: { code: number; stderr: string }) => e,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /native addon could not be loaded/);
  });
});
