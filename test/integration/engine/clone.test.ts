/**
 * CLONE restores against real clusters, agent side only (AgentService called as the coordinator would,
 * no catalog): the clone is made on the backup's own cluster with no data sent, reads byte-identical
 * to the backup's source snapshot, and is writable; the agent refuses to delete a backup whose snapshot
 * has a clone (librbd's children listing — so a stale or lost catalog cannot delete a parent), names
 * the clone, and keeps the snapshot; Flatten detaches the clone (idempotent), after which the delete
 * goes through and the clone still reads the same.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Status } from "nice-grpc";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type RunningAgent, startAgents } from "../../helpers/agents";
import { rbd, uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

describe("engine: CLONE restore, delete guard, flatten", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  const vols = new Volumes();

  before(async () => {
    [a, b] = (await startAgents("site-a", "site-b")) as [RunningAgent, RunningAgent];
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    vols.made.reverse(); // clones before the base images they may still depend on
    await vols.cleanup();
  });

  it("clone, refused delete naming the clone, flatten, delete", async () => {
    const v = await vols.create("site-a", "rbd", 64, 20);
    const made = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: v },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
    });
    vols.track("site-b", "backups", made.baseImage);
    const source = await sha("site-a", spec(v, made.snapshot));
    const target = { pool: "rbd", namespace: "", image: uniqueName("clone") };
    const restore = (t = target, fsid = b.fsid) =>
      b.client.restore({
        backupId: made.backupId,
        backupPool: "backups",
        targetAgent: { address: "", clusterFsid: fsid },
        target: t,
        mode: RestoreMode.RESTORE_MODE_CLONE,
      });

    // Another cluster's fsid: refused before anything is made.
    const elsewhere = { ...target, image: uniqueName("clone-x") };
    await assert.rejects(restore(elsewhere, a.fsid), { code: Status.FAILED_PRECONDITION });
    assert.equal(await vols.exists("site-b", "rbd", elsewhere.image), false);

    const started = performance.now();
    const r = await restore();
    vols.track("site-b", "rbd", target.image);
    console.log(`# CLONE restore of a 64 MiB backup: ${((performance.now() - started) / 1000).toFixed(2)} s`);
    assert.equal(r.dataBytesSent, 0, "no data copied");
    assert.equal(r.imageSize, 64 * MiB);
    assert.equal(await sha("site-b", spec(target)), source);
    // The same name again: ALREADY_EXISTS — unless it is a retry of the job that made this very clone.
    await assert.rejects(restore(), { code: Status.ALREADY_EXISTS });
    const retry = await b.client.restore({
      backupId: made.backupId,
      backupPool: "backups",
      target,
      mode: RestoreMode.RESTORE_MODE_CLONE,
      jobId: randomUUID(),
    });
    assert.match(retry.warnings.join(), /already a clone of this backup/);

    // The agent itself refuses to orphan the clone (no catalog involved), and keeps the snapshot.
    await assert.rejects(
      b.client.deleteBackup({ backupId: made.backupId, pool: "backups" }),
      (e: Error & { code?: number }) => {
        assert.equal(e.code, Status.FAILED_PRECONDITION);
        assert.match(e.message, new RegExp(`clones that depend on its snapshot: rbd/${target.image}`));
        return true;
      },
    );
    assert.ok(
      (await vols.snapNames("site-b", { pool: "backups", namespace: "", image: made.baseImage })).includes(
        made.snapshot,
      ),
    );

    // Writable, and the backup does not see the write.
    const io = await vols.io("site-b", "rbd");
    const img = await io.imageOpen(target.image);
    await img.write(randomBytes(4096), 0);
    await img.flush();
    await img.close();
    const written = await sha("site-b", spec(target));
    assert.notEqual(written, source);
    assert.equal(
      await sha("site-b", spec({ pool: "backups", namespace: "", image: made.baseImage }, made.snapshot)),
      source,
    );

    const flat = { image: target, backupId: made.backupId, backupPool: "backups" };
    const f = await b.client.flatten(flat);
    assert.equal(f.flattened, true);
    assert.equal((await rbd("site-b", ["info", spec(target)])).includes("parent:"), false, "no parent left");
    const again = await b.client.flatten(flat);
    assert.equal(again.flattened, false, "flatten is idempotent");
    assert.match(again.warnings.join(), /already flattened/);

    const d = await b.client.deleteBackup({ backupId: made.backupId, pool: "backups" });
    assert.equal(d.removedSnapshot, made.snapshot);
    assert.equal(await sha("site-b", spec(target)), written, "the flattened clone reads the same");
  });
});
