/**
 * The OpenStack Cinder backup driver (deploy/openstack/rbdbackup_cinder) against Cinder's own code: this
 * file starts a coordinator with agents for site-a and site-b, and a second coordinator (bearer-token
 * auth) with its own site-b agent for the import-record case, builds the Python client
 * (`npm run build:python` → dist/python), and runs the Python tests (python/test_cinder_driver.py) with
 * Debian's /usr/bin/python3, where python3-cinder lives. Missing Cinder fails the test with what to
 * install: the test command (test/run.sh) installs it, so a skip would only hide a broken setup.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type CoordinatorProcess, startCoordinatorProcess } from "../../../src/lab/coordinator-process";
import { type RunningAgent, startAgent, tlsFor } from "../../helpers/agents";
import { type Deployment, deploy, waitAgents } from "../../helpers/coordinator";
import { labDir, repoRoot } from "../../helpers/lab";

const execFileP = promisify(execFile);
const PYTHON = "/usr/bin/python3";
const PY_TESTS = path.join(repoRoot, "test/integration/openstack/python");
const PY_DEADLINE_MS = 600_000;
/** The Python test modules and how many tests each must run (a module that runs fewer failed to load some). */
const SUITES = { test_client: 11, test_cinder_driver: 51 };
/**
 * The cluster keeping the backups, and the one the second coordinator's agent serves (restore target of
 * the import case): site-b; RBDBACKUP_CINDER_SITE=site-a runs the same tests same-cluster when the shared
 * dev lab's site-b is full.
 */
const SITE = process.env.RBDBACKUP_CINDER_SITE ?? "site-b";

/** Fails (never skips) when Debian's Cinder or gRPC for Python is missing. */
async function requirePythonPackages(): Promise<void> {
  try {
    await execFileP(PYTHON, ["-c", "import cinder.backup.driver, grpc, grpc_tools, rbd, os_brick"], {
      timeout: 60_000,
    });
  } catch (e) {
    throw new Error(
      `${PYTHON} cannot import Cinder, gRPC or Ceph's rbd bindings (${(e as Error).message.trim()}); install them with ` +
        '"apt-get install -y --no-install-recommends python3-cinder python3-grpcio python3-grpc-tools" (test/run.sh does)',
    );
  }
}

/** Runs the Python tests (bounded); resolves with the exit code and the output. */
function runPythonTests(module: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, ["-m", "unittest", "-v", module], {
      cwd: PY_TESTS,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => {
      out += `\n[killed after ${PY_DEADLINE_MS / 1000} s]`;
      p.kill("SIGKILL");
    }, PY_DEADLINE_MS);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe("openstack: the Cinder backup driver against Cinder 21 and the lab", () => {
  let d: Deployment | undefined;
  let coord2: CoordinatorProcess | undefined;
  let agentB2: RunningAgent | undefined;
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-cinder-"));
  const token2 = randomBytes(24).toString("hex");
  // The deployment the README recommends for the driver: an operator whose scopes confine it (its volumes,
  // the copies' pool, its backup pool) — the only operator that may import (the copies).
  const scopedToken = randomBytes(24).toString("hex");
  const scopes = `token/cinder site-a/rbd ${SITE}/rbd ${SITE}/cinder-copies backups:${SITE}/backups\n`;

  before(async () => {
    await requirePythonPackages();
    await execFileP("bash", [path.join(repoRoot, "deploy/openstack/build-python.sh")], { timeout: 120_000 });
    d = await deploy({ tokens: [{ role: "operator", token: scopedToken, name: "cinder" }], scopes });
    coord2 = await startCoordinatorProcess({ tokens: [{ role: "admin", token: token2 }] });
    agentB2 = await startAgent(SITE, { coordinator: coord2.address, agentId: `agent-${SITE}-2` });
    await waitAgents(coord2.client, 1);
  });

  after(async () => {
    await agentB2?.stop();
    await coord2?.stop();
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Writes the Python tests' config and runs one module (bounded), asserting a clean, complete pass. */
  async function pythonSuite(module: keyof typeof SUITES): Promise<void> {
    assert.ok(d && coord2);
    const client = tlsFor("test-client");
    const server = tlsFor("coordinator");
    const agent = tlsFor("agent-site-a");
    const config = path.join(dir, "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        coordinator: d.coord.address,
        coordinator2: coord2.address,
        token2,
        scoped_token: scopedToken,
        ca: client.ca,
        cert: client.cert,
        key: client.key,
        server_cert: server.cert,
        server_key: server.key,
        agent_cert: agent.cert,
        agent_key: agent.key,
        lab_dir: labDir,
        backup_cluster: SITE,
        second_site: SITE,
      }),
    );
    const { code, out } = await runPythonTests(module, {
      PATH: process.env.PATH,
      HOME: dir,
      // Cinder's fixtures make temp dirs and files: all of them land here, removed with `dir`.
      TMPDIR: dir,
      PYTHONPATH: [path.join(repoRoot, "dist/python"), PY_TESTS].join(":"),
      PYTHONDONTWRITEBYTECODE: "1",
      RBDBACKUP_CINDER_TEST_CONFIG: config,
      OS_TEST_TIMEOUT: "300",
    });
    assert.equal(code, 0, `the Python tests of ${module} failed (exit ${code}):\n${out}`);
    const ran = /^Ran (\d+) tests? in/m.exec(out);
    assert.ok(ran, `no unittest summary in:\n${out}`);
    assert.equal(Number(ran[1]), SUITES[module], `${module} ran ${ran[1]} tests, expected ${SUITES[module]}:\n${out}`);
    assert.match(out, /^OK$/m, `not a clean OK (skips or expected failures?):\n${out}`);
  }

  it("the Python client: deadlines, UNAVAILABLE retries, the leader trailer, wait() over WatchJob", () =>
    pythonSuite("test_client"));

  it("the Cinder driver: full, incremental, restore over the original, delete, records, errors", () =>
    pythonSuite("test_cinder_driver"));
});
