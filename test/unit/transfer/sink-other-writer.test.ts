/**
 * A backup's base image is written by one transfer at a time, as a fact of the cluster (image-ops.ts
 * otherWriters): another client that has it open — another agent of the destination cluster writing
 * the backup's retry, or an operator who mapped it — is seen among its watchers. Then a transfer does
 * not start on it (ABORTED, nothing changed), does not commit (ABORTED, no snapshot, nothing rolled back
 * under the other client), and neither a cleanup, a crash recovery nor a held transfer's expiry undoes
 * anything under it. On the in-memory cluster, another client being a watcher the fake lists.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { recoverInterrupted, runSink, sweepLeftovers } from "../../../agents/transfer/sink";
import { RESUME_KEY } from "../../../agents/transfer/sink/checkpoint";
import { AppError, Status } from "../../../src/common/errors";
import { TransferKind } from "../../../src/gen/rbdbackup/v1/transfer";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages, pattern } from "./fakes/stream";

const CHUNK = 64 * KiB;
/** Another agent of the destination cluster (another Ceph client instance than the fake sink's). */
const OTHER = { addr: "10.0.0.2:0/7070", id: 9001 };

function incremental() {
  const ceph = new FakeCeph("backups");
  const h = header({ kind: TransferKind.BACKUP_INCREMENTAL, fromSnapshot: "backup.p.snap.1" });
  const name = h.destination?.image as string;
  const parent = pattern(h.imageSize, 3);
  const img = ceph.addImage("backups", name, parent, ["backup.p.snap.1"]);
  return { ceph, h, name, parent, img };
}

/** The journal entry of an incremental into `image` (its undo: roll back to the parent), started at `at`. */
const entryInto = (image: string, clientAddr: string, at: number) => ({
  transferId: randomUUID(),
  kind: TransferKind.BACKUP_INCREMENTAL,
  pool: "backups",
  namespace: "",
  image,
  createdImage: false,
  rollbackTo: "backup.p.snap.1",
  clientAddr,
  startedAt: new Date(at).toISOString(),
});

const failure = (p: Promise<unknown>) =>
  p.then(
    () => assert.fail("the transfer succeeded"),
    (e: unknown) => {
      assert.ok(e instanceof AppError, String(e));
      return e;
    },
  );

describe("sink: a base image another client has open", () => {
  it("at the start: ABORTED naming the client, nothing changed — its head (written by the other) not rolled back, no entry", async () => {
    const { ceph, h, name, img } = incremental();
    img.data.fill(7, 0, 4096); // the other client's writes so far
    img.watchers = [OTHER];
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const e = await failure(runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))));
    assert.equal(e.status, Status.ABORTED, e.message);
    assert.match(
      e.message,
      /base image backups\/.* is open by another client \(client\.9001 at 10\.0\.0\.2:0\/7070\): this attempt changed nothing/,
    );
    assert.equal(poolState(ceph, "backups"), before, "the image, its head and its snapshots as they were");
    assert.equal(
      ceph.log.filter((l) => l.startsWith(`snapRollback ${name}`) || l.startsWith(`write ${name}`)).length,
      0,
    );
    assert.equal(deps.journal.entries.size, 0);
  });

  it("opened by another client during the transfer: not committed (ABORTED), and the cleanup does not roll back under it", async () => {
    const { ceph, h, name, img } = incremental();
    const deps = sinkDeps(ceph);
    // Mapped meanwhile (or another agent's attempt took it): by the time the writes are flushed.
    ceph.gates.flush = {
      // biome-ignore lint/suspicious/noThenProperty: a thenable gate (fake-ceph.ts Gates.flush)
      then(resolve) {
        img.watchers = [OTHER];
        return Promise.resolve().then(resolve);
      },
    };
    const e = await failure(runSink(deps, new Feed(messages(h, chunkParts(2, CHUNK)))));
    assert.ok(
      ceph.log.some((l) => l.startsWith(`write ${name}`)),
      "written before",
    );
    assert.equal(e.status, Status.ABORTED, e.message);
    assert.match(e.message, /opened during the transfer, so it was not committed/);
    assert.deepEqual(
      img.snaps.map((s) => s.name),
      ["backup.p.snap.1"],
      "no snapshot: the backup does not exist",
    );
    assert.equal(ceph.pool("backups").objects.has(`backup.${h.backupId}.meta`), false, "no metadata object");
    assert.equal(ceph.log.filter((l) => l.startsWith(`snapRollback ${name}`)).length, 0, "not rolled back under it");
    assert.equal(deps.journal.entries.size, 1, "the entry stays, for a later sweep");
  });

  it("crash recovery leaves an image another client has open, its entry kept; once the image is free (a dead predecessor's watch timed out), it undoes", async () => {
    for (const other of [true, false]) {
      const { ceph, name, parent, img } = incremental();
      img.data.fill(9, 0, 4096);
      if (other) img.watchers = [OTHER];
      const deps = sinkDeps(ceph);
      await deps.journal.write(entryInto(name, deps.clientAddr, Date.now()));
      const report = await recoverInterrupted(deps);
      if (other) {
        assert.equal(
          img.data.subarray(0, 4096).every((b) => b === 9),
          true,
          "the other client's writes stay",
        );
        assert.match(
          report.join("\n"),
          /left backups\/.* to the client that has it open \(client\.9001 at 10\.0\.0\.2:0\/7070\)/,
        );
        assert.equal(deps.journal.entries.size, 1, "the entry stays: the undo is owed once the image is free");
        // That client was a dead predecessor whose watch outlived a failed blocklisting: it times out.
        img.watchers = [];
        await recoverInterrupted(deps);
      }
      assert.ok(img.data.equals(parent), "rolled back to its parent");
      assert.equal(deps.journal.entries.size, 0, "the entry is done");
    }
  });

  it("a kept entry is not reported undone while left; once a later transfer into the image has an entry (held for its resume), the kept one is dropped, not undone under it", async () => {
    const { ceph, name, img } = incremental();
    img.data.fill(9, 0, 4096);
    img.watchers = [OTHER];
    const deps = sinkDeps(ceph);
    const now = Date.now();
    const entry = (minutesAgo: number, extra: object = {}) => ({
      ...entryInto(name, deps.clientAddr, now - minutesAgo * 60_000),
      ...extra,
    });
    const kept = entry(20);
    await deps.journal.write(kept);
    const left = await sweepLeftovers(deps, now);
    assert.equal(
      left.some((l) => /was undone/.test(l)),
      false,
      left.join("\n"),
    );
    assert.equal(deps.journal.entries.size, 1);
    // The other client is gone; a later transfer into the image was cut short and is held for its resume.
    img.watchers = [];
    const held = entry(1, { resumable: true, heldUntil: new Date(now + 3_600_000).toISOString() });
    await deps.journal.write(held);
    img.meta.set(RESUME_KEY, "the later transfer's checkpoint");
    const written = Buffer.from(img.data);
    const swept = await sweepLeftovers(deps, now);
    assert.match(swept.join("\n"), /was dropped: a later transfer into the image superseded it/);
    assert.deepEqual([...deps.journal.entries.keys()], [held.transferId], "the held transfer's entry alone");
    assert.ok(img.data.equals(written), "the held transfer's writes stay");
    assert.equal(img.meta.get(RESUME_KEY), "the later transfer's checkpoint", "and its checkpoint");
  });
});
