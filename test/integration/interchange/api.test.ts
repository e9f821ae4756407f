/**
 * rbd-diff interchange end to end through the public API, on the lab (a real coordinator, real agents
 * of site-a and site-b over mutual TLS): ImportBackup and ExportBackup relayed by the coordinator to
 * and from the agent of the backup's cluster (its ExportData/ImportData streams), checked with Ceph's
 * own tools.
 *  - `rbd export-diff` (full, then --from-snap) imported by us into site-b; each restores (RestoreBackup)
 *    byte-identical to the source's snapshot. The same with the diff v2 streams of `rbd export
 *    --export-format 2`.
 *  - Our export (v1, full and --from) piped into `rbd import-diff`: byte-identical; our v2 export in an
 *    image v2 container through `rbd import --export-format 2`: byte-identical.
 *  - A truncated stream and a corrupted record: INVALID_ARGUMENT naming the byte offset; nothing
 *    committed: no new base image, no new snapshot, no metadata object, no usable catalog backup.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ClientError, Status } from "nice-grpc";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import {
  type Backup,
  BackupStatus,
  DiffFormat,
  type ImportBackupHeader,
  type ImportBackupMessage,
} from "../../../src/gen/rbdbackup/v1/backup_service";
import type { VolumeRef } from "../../../src/gen/rbdbackup/v1/common";
import { type Deployment, deploy, succeeded } from "../../helpers/coordinator";
import { uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { imageV2Around, rbdCli, records, splitImageV2 } from "./streams";

const LOCATION = { cluster: "site-b", pool: "backups", namespace: "" };

describe("rbd-diff interchange through the API (site-a volume, site-b backups)", () => {
  let d: Deployment;
  const vols = new Volumes();
  let dir: string;
  const file = (n: string) => path.join(dir, n);
  let volume: VolumeRef;
  /** A second volume ref for the v2 imports (a chain of its own). */
  let volume2: VolumeRef;
  const shas: Record<string, string> = {};
  const imported: Backup[] = [];
  const imported2: Backup[] = [];

  async function importStream(bytes: Buffer, vol: VolumeRef, parent = "", format = DiffFormat.DIFF_FORMAT_UNSPECIFIED) {
    const header: ImportBackupHeader = {
      volume: vol,
      location: LOCATION,
      volumeId: "imported-vol",
      volumeMetadata: { from: "rbd export-diff" },
      parentBackupId: parent,
      idempotencyKey: "",
      format,
      takenAt: undefined,
    };
    async function* messages(): AsyncGenerator<ImportBackupMessage> {
      yield { body: { $case: "header", value: header } };
      for (let i = 0; i < bytes.length; i += 256 * 1024) {
        yield { body: { $case: "data", value: bytes.subarray(i, i + 256 * 1024) } };
      }
    }
    const job = await d.client.importBackup(messages());
    const b = job.backup;
    assert.ok(b, "the job names its backup");
    return (await succeeded(d.client, job.id)).backup as Backup;
  }

  async function exportStream(backupId: string, fromBackupId = "", format = DiffFormat.DIFF_FORMAT_RBD_V1) {
    const parts: Buffer[] = [];
    let jobId = "";
    for await (const c of d.client.exportBackup({ backupId, fromBackupId, format })) {
      if (c.jobId) jobId = c.jobId;
      parts.push(Buffer.from(c.data));
    }
    assert.ok(jobId, "the first message names the EXPORT job");
    return Buffer.concat(parts);
  }

  async function restoredSha(b: Backup): Promise<string> {
    const target: VolumeRef = { cluster: "site-a", pool: "rbd", namespace: "", image: uniqueName("restored") };
    const job = await d.client.restoreBackup({ backupId: b.id, target, mode: RestoreMode.RESTORE_MODE_NEW });
    vols.track("site-a", "rbd", target.image);
    await succeeded(d.client, job.id);
    return sha("site-a", spec(target));
  }

  /** What a failed import must not have left on site-b and in the catalog. */
  async function state(vol: VolumeRef) {
    const io = await vols.io("site-b", "backups");
    const bases = (await io.imageList()).filter((n) => n.startsWith(`${vol.image}.backup.`)).sort();
    const snaps: string[] = [];
    for (const b of bases)
      snaps.push(...(await vols.snapNames("site-b", { pool: "backups", namespace: "", image: b })));
    const list = await d.client.listBackups({ cluster: vol.cluster, pool: vol.pool, image: vol.image, pageSize: 1000 });
    const usable = list.backups.filter((b) => b.status !== BackupStatus.BACKUP_STATUS_FAILED).map((b) => b.id);
    const failed = list.backups.filter((b) => b.status === BackupStatus.BACKUP_STATUS_FAILED).map((b) => b.id);
    return { bases, snaps, usable, failed };
  }

  async function refused(p: Promise<unknown>, text: RegExp): Promise<void> {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof ClientError, String(e));
      assert.equal(Status[e.code], "INVALID_ARGUMENT", e.details);
      assert.match(e.details, /byte offset \d+/);
      assert.match(e.details, text);
      return true;
    });
  }

  async function noMetaObject(ids: string[]): Promise<void> {
    const io = await vols.io("site-b", "backups");
    for (const id of ids) await assert.rejects(io.objRead(`backup.${id}.meta`), `no backup.${id}.meta`);
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "rbddiff-api-"));
    d = await deploy();
    volume = { cluster: "site-a", ...(await vols.create("site-a", "rbd", 20, 12)) };
    volume2 = { ...volume, image: `${volume.image}-v2` };
    await rbdCli("site-a", ["snap", "create", spec(volume, "s1")]);
    await vols.change(volume, "site-a", { writes: 10, discards: 3, resizeMiB: 24 });
    await rbdCli("site-a", ["snap", "create", spec(volume, "s2")]);
    shas.s1 = await sha("site-a", spec(volume, "s1"));
    shas.s2 = await sha("site-a", spec(volume, "s2"));
    await rbdCli("site-a", ["export-diff", spec(volume, "s1"), file("full.v1")]);
    await rbdCli("site-a", ["export-diff", "--from-snap", "s1", spec(volume, "s2"), file("incr.v1")]);
    await rbdCli("site-a", ["export", "--export-format", "2", spec(volume), file("image.v2")]);
    const [f2, i2] = splitImageV2(await readFile(file("image.v2")));
    writeFileSync(file("full.v2"), f2 as Buffer);
    writeFileSync(file("incr.v2"), i2 as Buffer);
  });

  after(async () => {
    const io = await vols.io("site-b", "backups").catch(() => null);
    for (const vol of [volume, volume2]) {
      if (!vol || !io) continue;
      for (const b of (await io.imageList().catch(() => [] as string[])).filter((n) =>
        n.startsWith(`${vol.image}.backup.`),
      ))
        vols.track("site-b", "backups", b);
      const list = await d?.client
        .listBackups({ cluster: vol.cluster, pool: vol.pool, image: vol.image, pageSize: 1000 })
        .catch(() => null);
      for (const b of list?.backups ?? []) await io.objRemove(`backup.${b.id}.meta`).catch(() => {});
    }
    await d?.stop();
    await vols.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a truncated stream: INVALID_ARGUMENT naming the offset; no base image, snapshot, metadata object or usable backup", async () => {
    const b = await readFile(file("full.v1"));
    const cut = Math.floor(b.length * 0.6);
    await refused(importStream(b.subarray(0, cut), volume), new RegExp(`truncated: it ends at byte ${cut}\\b`));
    const s = await state(volume);
    assert.deepEqual(s.bases, [], "no base image");
    assert.deepEqual(s.usable, [], "no catalog backup other than FAILED");
    await noMetaObject(s.failed);
  });

  it("`rbd export-diff` (full) imported through the API restores byte-identical", async () => {
    const b = await importStream(await readFile(file("full.v1")), volume, "", DiffFormat.DIFF_FORMAT_RBD_V1);
    imported.push(b);
    assert.equal(b.status, BackupStatus.BACKUP_STATUS_AVAILABLE);
    assert.equal(b.incremental, false);
    assert.equal(b.sizeBytes, 20 * MiB);
    assert.equal(await restoredSha(b), shas.s1);
  });

  it("a corrupted record in an incremental: INVALID_ARGUMENT naming it; the chain as it was", async () => {
    const b = Buffer.from(await readFile(file("incr.v1")));
    const victim = (await records(b)).filter((r) => r.type === "data" || r.type === "zero")[2];
    assert.ok(victim);
    b[victim.at] = 0x71; // 'q': no such record in v1
    const before = await state(volume);
    await refused(
      importStream(b, volume, imported[0]?.id),
      new RegExp(`byte offset ${victim.at}: unknown record tag 'q'`),
    );
    const now = await state(volume);
    assert.deepEqual(now.bases, before.bases);
    assert.deepEqual(now.snaps, before.snaps, "no new snapshot");
    assert.deepEqual(now.usable, before.usable, "no new usable backup");
    const base = imported[0]?.baseImage as string;
    assert.equal(await sha("site-b", `backups/${base}`), shas.s1, "the base image's head is back at its snapshot");
    await noMetaObject(now.failed);
  });

  it("`rbd export-diff --from-snap` imported onto the chain restores byte-identical", async () => {
    const b = await importStream(await readFile(file("incr.v1")), volume, imported[0]?.id);
    imported.push(b);
    assert.equal(b.incremental, true);
    assert.equal(b.baseImage, imported[0]?.baseImage);
    assert.equal(b.sizeBytes, 24 * MiB);
    assert.equal(await restoredSha(b), shas.s2);
  });

  it("the same diff again, now onto the backup it made (the chain's newest): INVALID_ARGUMENT naming its 'f' record; the chain as it was", async () => {
    const b = await readFile(file("incr.v1"));
    const f = (await records(b)).find((r) => r.type === "from");
    assert.ok(f, "the stream has an 'f' record");
    const before = await state(volume);
    await refused(
      importStream(b, volume, imported[1]?.id),
      new RegExp(
        `byte offset ${f.at}: the stream is a diff from snapshot "[^"]+" \\('f' record\\), but the parent backup's snapshot is`,
      ),
    );
    const now = await state(volume);
    assert.deepEqual(now.bases, before.bases);
    assert.deepEqual(now.snaps, before.snaps, "no new snapshot");
    assert.deepEqual(now.usable, before.usable, "no new usable backup");
    const base = imported[0]?.baseImage as string;
    assert.equal(await sha("site-b", `backups/${base}`), shas.s2, "the base image's head is still the newest backup's");
  });

  it("a declared format is the only one taken: a v1 stream declared v2 is INVALID_ARGUMENT at byte 0, nothing made", async () => {
    const before = await state(volume);
    await refused(
      importStream(await readFile(file("full.v1")), volume, "", DiffFormat.DIFF_FORMAT_RBD_V2),
      /byte offset 0: the stream is format v1, but v2 was asked for/,
    );
    const now = await state(volume);
    assert.deepEqual(now.bases, before.bases, "no base image");
    assert.deepEqual(now.usable, before.usable, "no new usable backup");
  });

  it("our v1 export | rbd import-diff, full then --from: byte-identical to the source's snapshots", async () => {
    const [b1, b2] = imported as [Backup, Backup];
    const target = uniqueName("importdiff");
    vols.track("site-a", "rbd", target);
    await rbdCli("site-a", ["create", "--size", "1M", `rbd/${target}`]);
    writeFileSync(file("ours-full.v1"), await exportStream(b1.id));
    await rbdCli("site-a", ["import-diff", file("ours-full.v1"), `rbd/${target}`]);
    assert.equal(await sha("site-a", `rbd/${target}@${b1.snapshot}`), shas.s1);
    writeFileSync(file("ours-incr.v1"), await exportStream(b2.id, b1.id));
    await rbdCli("site-a", ["import-diff", file("ours-incr.v1"), `rbd/${target}`]);
    assert.equal(await sha("site-a", `rbd/${target}@${b2.snapshot}`), shas.s2);
  });

  it("v2: Ceph's diff v2 streams imported (full, then incremental); our v2 export through `rbd import --export-format 2`", async () => {
    const b1 = await importStream(await readFile(file("full.v2")), volume2, "", DiffFormat.DIFF_FORMAT_RBD_V2);
    imported2.push(b1);
    assert.equal(await sha("site-b", `backups/${b1.baseImage}@${b1.snapshot}`), shas.s1);
    const b2 = await importStream(await readFile(file("incr.v2")), volume2, b1.id);
    imported2.push(b2);
    assert.equal(await restoredSha(b2), shas.s2);
    const ours = await exportStream(b1.id, "", DiffFormat.DIFF_FORMAT_RBD_V2);
    assert.equal(ours.subarray(0, 12).toString(), "rbd diff v2\n");
    const target = uniqueName("importv2");
    vols.track("site-a", "rbd", target);
    writeFileSync(file("ours.image.v2"), imageV2Around(ours));
    await rbdCli("site-a", ["import", "--export-format", "2", file("ours.image.v2"), `rbd/${target}`]);
    assert.equal(await sha("site-a", `rbd/${target}@${b1.snapshot}`), shas.s1);
  });
});
