/**
 * The `rbdbackup` CLI against a real deployment (coordinator and agents as processes, mutual TLS):
 * backup and restore with --wait, lists, records, and the exit codes scripts rely on.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import { type Deployment, deploy } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { sha, spec, Volumes } from "../../helpers/volumes";

describe("CLI against a real coordinator", () => {
  let d: Deployment;
  const vols = new Volumes();
  const tls = labTls("operator");
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-cli-"));
  const cli = (args: string[], extraEnv: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, [path.join(repoRoot, "dist/src/cli/main.js"), ...args], {
      encoding: "utf8",
      timeout: 120_000,
      env: {
        ...process.env,
        RBDBACKUP_COORDINATOR: d.coord.address,
        RBDBACKUP_TLS_CA: tls.ca as string,
        RBDBACKUP_TLS_CERT: tls.cert as string,
        RBDBACKUP_TLS_KEY: tls.key as string,
        ...extraEnv,
      },
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    await d?.stop();
    await vols.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("backup create --wait, backup list/show, restore --wait: byte-identical; exit 0", async () => {
    const v = await vols.create("site-a", "rbd", 16, 10);
    const r = cli([
      "backup",
      "create",
      "--volume",
      `site-a/rbd/${v.image}`,
      "--to",
      "site-b/backups",
      "--wait",
      "--json",
    ]);
    assert.equal(r.code, 0, r.err);
    const events = r.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const last = events.at(-1).job;
    assert.equal(last.state, "JOB_STATE_SUCCEEDED");
    const backupId = last.backupId as string;

    const list = cli(["backup", "list", "--cluster", "site-a", "--image", v.image, "--json"]);
    assert.equal(list.code, 0, list.err);
    assert.deepEqual(
      JSON.parse(list.out).backups.map((b: { id: string }) => b.id),
      [backupId],
    );
    const show = cli(["backup", "show", backupId]);
    assert.equal(show.code, 0, show.err);
    assert.match(show.out, /AVAILABLE|available/);

    const target = uniqueName("restored");
    vols.track("site-b", "rbd", target);
    const rr = cli(["backup", "restore", backupId, "--target", `site-b/rbd/${target}`, "--wait"]);
    assert.equal(rr.code, 0, rr.err);
    const snap = (await d.client.getBackup({ backupId })).snapshot;
    assert.equal(await sha("site-b", `rbd/${target}`), await sha("site-a", spec(v, snap)));

    const agents = cli(["agent", "list"]);
    assert.equal(agents.code, 0, agents.err);
    assert.match(agents.out, /agent-site-a/);
    assert.match(agents.out, /agent-site-b/);
    assert.equal(cli(["cluster", "check", "site-b"]).code, 0);

    // record export (reader and up), then import (admin only): an operator is refused (PERMISSION_DENIED
    // → 5); an admin importing into the same coordinator gets ALREADY_EXISTS → 7.
    const file = path.join(tmp, "record.json");
    assert.equal(cli(["record", "export", backupId, "--out", file]).code, 0);
    const denied = cli(["record", "import", file]);
    assert.equal(denied.code, 5, denied.err);
    assert.match(denied.err, /PERMISSION_DENIED: .*needs role admin/);
    const admin = labTls("test-client");
    const imp = cli(["record", "import", file], {
      RBDBACKUP_TLS_CERT: admin.cert as string,
      RBDBACKUP_TLS_KEY: admin.key as string,
    });
    assert.equal(imp.code, 7, imp.err);
    assert.match(imp.err, /ALREADY_EXISTS/);
  });

  it("exit codes: usage 2, NOT_FOUND 4, UNAUTHENTICATED 5, unreachable 6, bad request 7", async () => {
    assert.equal(cli(["backup", "create", "--volume", "site-a/only-two", "--to", "site-b"]).code, 2);
    assert.equal(cli(["backup", "show", "00000000-0000-4000-8000-000000000000"]).code, 4);
    const noCred = cli(["agent", "list"], { RBDBACKUP_TLS_CERT: "", RBDBACKUP_TLS_KEY: "" });
    assert.equal(noCred.code, 5, noCred.err);
    assert.equal(cli(["agent", "list", "--coordinator", "127.0.0.1:1", "--timeout", "3"]).code, 6);
    assert.equal(cli(["backup", "create", "--volume", "site-a/rbd/no-such-image", "--to", "site-b"]).code, 4);
    // Past the API's limit: the CLI refuses it itself (2); what only the server checks is 7.
    assert.equal(
      cli(["backup", "create", "--volume", "site-a/rbd/x", "--to", "site-b", "--max-snapshots", "5000"]).code,
      2,
    );
    const longId = cli([
      "backup",
      "create",
      "--volume",
      "site-a/rbd/x",
      "--to",
      "site-b",
      "--volume-id",
      "v".repeat(300),
    ]);
    assert.equal(longId.code, 7, longId.err);
    assert.match(longId.err, /INVALID_ARGUMENT: volume_id is longer than 256 characters/);
    // An INCREMENTAL backup without a parent is refused before any job exists (7).
    const v = await vols.create("site-a", "rbd", 4, 1);
    const inc = cli([
      "backup",
      "create",
      "--volume",
      `site-a/rbd/${v.image}`,
      "--to",
      "site-b",
      "--mode",
      "incremental",
    ]);
    assert.equal(inc.code, 7, inc.err);
    assert.match(inc.err, /FAILED_PRECONDITION/);
  });
});
