/**
 * `rbdbackup backup export|import` against a real deployment (coordinator and agents as processes,
 * mutual TLS): a backup exported by the CLI (to --out and to stdout, the same bytes) applies with
 * `rbd import-diff` byte-identical to the source's snapshot; the same stream imported by the CLI is an
 * AVAILABLE backup whose snapshot holds the same bytes. A bad stream: exit code 7, INVALID_ARGUMENT.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { BackupStatus, JobKind, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import { backupRequest, type Deployment, deploy, succeeded } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { sha, spec, Volumes } from "../../helpers/volumes";
import { rbdCli } from "./streams";

describe("CLI backup export / import against a real coordinator", () => {
  let d: Deployment;
  const vols = new Volumes();
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-cli-rbddiff-"));
  const file = (n: string) => path.join(tmp, n);
  /** The CLI as an admin (ImportBackup needs admin). stdout as bytes. */
  const cli = (args: string[]) => {
    const tls = labTls("test-client");
    const r = spawnSync(process.execPath, [path.join(repoRoot, "dist/src/cli/main.js"), ...args], {
      timeout: 180_000,
      maxBuffer: 64 << 20,
      env: {
        ...process.env,
        RBDBACKUP_COORDINATOR: d.coord.address,
        RBDBACKUP_TLS_CA: tls.ca as string,
        RBDBACKUP_TLS_CERT: tls.cert as string,
        RBDBACKUP_TLS_KEY: tls.key as string,
      },
    });
    return { code: r.status, out: r.stdout as Buffer, err: String(r.stderr) };
  };
  const backups: string[] = [];

  before(async () => {
    d = await deploy();
  });
  after(async () => {
    for (const id of backups.reverse()) {
      const job = await d?.client.deleteBackup({ backupId: id, idempotencyKey: "" }).catch(() => null);
      if (job) await succeeded(d.client, job.id).catch(() => {});
    }
    await d?.stop();
    await vols.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("export (--out and stdout) | rbd import-diff: byte-identical; the stream imported: an AVAILABLE backup", async () => {
    const v = await vols.create("site-a", "rbd", 8, 6);
    const volume = { cluster: "site-a", ...v };
    const job = await d.client.createBackup(backupRequest(volume));
    const b = (await succeeded(d.client, job.id)).backup;
    assert.ok(b);
    backups.push(b.id);
    const want = await sha("site-a", spec(v, b.snapshot));

    const e1 = cli(["backup", "export", b.id, "--out", file("a.diff")]);
    assert.equal(e1.code, 0, e1.err);
    assert.match(e1.err, new RegExp(`backup ${b.id} exported by job [0-9a-f-]{36}: \\d+ bytes`));
    const e2 = cli(["backup", "export", b.id, "--format", "rbd-diff-v1"]);
    assert.equal(e2.code, 0, e2.err);
    assert.ok(e2.out.equals(readFileSync(file("a.diff"))), "stdout and --out carry the same stream");
    assert.equal(e2.out.subarray(0, 12).toString(), "rbd diff v1\n");

    const target = uniqueName("cli-importdiff");
    vols.track("site-a", "rbd", target);
    await rbdCli("site-a", ["create", "--size", "1M", `rbd/${target}`]);
    await rbdCli("site-a", ["import-diff", file("a.diff"), `rbd/${target}`]);
    assert.equal(await sha("site-a", `rbd/${target}@${b.snapshot}`), want);

    const copy = `${v.image}-imported`;
    const i = cli([
      "backup",
      "import",
      "--volume",
      `site-a/rbd/${copy}`,
      "--location",
      "site-b/backups",
      "--volume-id",
      "cli-imported",
      // The exported backup's own time: the imported one is as old as its data.
      "--taken-at",
      b.createdAt?.toISOString() ?? "",
      "--in",
      file("a.diff"),
      "--json",
    ]);
    assert.equal(i.code, 0, i.err);
    const imported = JSON.parse(i.out.toString());
    assert.equal(imported.state, "JOB_STATE_SUCCEEDED", i.out.toString());
    const nb = await d.client.getBackup({ backupId: imported.backupId });
    backups.push(nb.id);
    assert.equal(nb.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(nb.volumeId, "cli-imported");
    assert.equal(nb.createdAt?.getTime(), b.createdAt?.getTime(), "--taken-at: the data's time");
    assert.equal(nb.completedAt?.getTime(), b.createdAt?.getTime());
    assert.equal(nb.baseImage, `${copy}.backup.${nb.id}`);
    assert.equal(await sha("site-b", `backups/${nb.baseImage}@${nb.snapshot}`), want);
  });

  it("a malformed stream: exit code 7 with INVALID_ARGUMENT; the import's job FAILED", async () => {
    writeFileSync(file("bad.diff"), Buffer.from("rbd diff v1\nq garbage"));
    const r = cli([
      "backup",
      "import",
      "--volume",
      "site-a/rbd/cli-bad",
      "--location",
      "site-b",
      "--in",
      file("bad.diff"),
    ]);
    assert.equal(r.code, 7, r.err);
    assert.match(r.err, /INVALID_ARGUMENT.*byte offset 12/);
    const jobs = await d.client.listJobs({
      state: JobState.JOB_STATE_FAILED,
      kind: JobKind.JOB_KIND_IMPORT,
      backupId: "",
      pageSize: 10,
      pageToken: "",
    });
    assert.ok(
      jobs.jobs.some((j) => j.volume?.image === "cli-bad"),
      "the IMPORT job failed",
    );
  });
});
