/**
 * A backup sends its header while the volume's snapshot is being made (agents/engine/backup-volume.ts):
 * the header carries the volume's facts as opened. When the snapshot shows other facts — here the
 * test fault `growBeforeSnapshotBytes` resizes the volume just before the snapshot — the first stream
 * ends before any data (the destination cleans up) and the backup goes again with the snapshot's
 * facts. Full and incremental: each backup has the snapshot's size, its base image at the snapshot is
 * byte-identical to the volume at the snapshot, the base image carries exactly the chain's snapshots,
 * and the destination logged the abandoned stream's cleanup.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { BackupResult } from "../../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import { type RunningAgent, startAgent } from "../../helpers/agents";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

const GROW = MiB;

describe("a volume that changes while its backup snapshot is made", () => {
  const vols = new Volumes();
  let a: RunningAgent;
  let b: RunningAgent;
  let vol: ImageRef;
  const results: BackupResult[] = [];

  before(async () => {
    [a, b] = await Promise.all([
      startAgent("site-a", { testFaults: { growBeforeSnapshotBytes: GROW } }),
      startAgent("site-b"),
    ]);
    vol = await vols.create("site-a", "rbd", 16, 16);
  });

  after(async () => {
    for (const r of results) vols.track("site-b", "backups", r.baseImage);
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
  });

  const backup = () =>
    a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: b.transferAddress, clusterFsid: "" },
      destinationPool: "backups",
    });
  const count = (logs: string, msg: string) => logs.split("\n").filter((l) => l.includes(`"msg":"${msg}"`)).length;

  for (const [i, kind] of (["full", "incremental"] as const).entries()) {
    it(`${kind}: sent again with the snapshot's size; the base image at the snapshot is the volume at it`, async () => {
      if (i > 0) await vols.change(vol, "site-a", { writes: 8 });
      const r = await backup();
      results.push(r);
      assert.equal(r.incremental, kind === "incremental");
      assert.equal(r.imageSize, (16 + i + 1) * MiB, "the snapshot's size (grown just before it), not the opened one");
      assert.equal(
        await sha("site-b", `backups/${r.baseImage}@${r.snapshot}`),
        await sha("site-a", spec(vol, r.snapshot)),
      );
      assert.deepEqual(
        await vols.snapNames("site-b", { pool: "backups", namespace: "", image: r.baseImage }),
        results.map((x) => x.snapshot),
      );
      assert.equal(
        count(a.logs(), "the volume changed while its snapshot was made; sending again with the snapshot's facts"),
        i + 1,
      );
      assert.equal(count(b.logs(), "transfer failed, cleaning up"), i + 1, "the abandoned stream, cleaned up");
      assert.equal(count(b.logs(), "transfer committed"), i + 1);
    });
  }
});
