/**
 * Resumable transfers on the destination (agents/transfer/sink/resume.ts, checkpoint.ts, keep.ts,
 * abandon.ts), against an in-memory cluster: a resumable transfer cut short after a checkpoint is held;
 * ResumePoint answers its checkpoint; a retry sending only the rest with the prefix-digest rule
 * commits byte-identical data; a cancel or a stale resume does not keep or take anything; recovery
 * holds a killed agent's checkpointed transfer and the sweep undoes an expired hold.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { TransferDigest } from "../../../agents/transfer/protocol";
import { discardHeldInto, recoverInterrupted, resumePoint, runSink, sweepHeld } from "../../../agents/transfer/sink";
import { parseCheckpoint, RESUME_KEY } from "../../../agents/transfer/sink/checkpoint";
import { Status, statusOf } from "../../../src/common/errors";
import { metaObjectName } from "../../../src/common/ids";
import { type TransferHeader, TransferKind, type TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { until } from "../../helpers/wait";
import { crc32c } from "./fakes/crc32c";
import { cephError, FakeCeph } from "./fakes/fake-ceph";
import { sinkDeps, type TestDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages, type Part } from "./fakes/stream";

const CHUNK = 64 * KiB;
const SIZE = 4 * CHUNK;

function deps(ceph: FakeCeph): TestDeps {
  // A checkpoint after every chunk (when none is running), never by time.
  return sinkDeps(ceph, { resume: { ttlSeconds: 60, checkpointBytes: CHUNK, checkpointMs: 3_600_000 } });
}

/** The messages of a retry resuming at `offset`: only the parts at or after it, digest "r" || prefix || records. */
function resumedMessages(
  h: TransferHeader,
  parts: Part[],
  r: Awaited<ReturnType<typeof resumePoint>>,
): TransferMessage[] {
  const digest = new TransferDigest(r.prefixDigest);
  const out: TransferMessage[] = [{ body: { $case: "header", value: h } }];
  let chunks = r.dataChunks;
  let bytes = r.dataBytes;
  for (const p of parts) {
    if ("zero" in p || p.offset < r.offset) continue;
    const crc = crc32c(p.data);
    digest.chunk(p.offset, p.data.length, crc);
    chunks++;
    bytes += p.data.length;
    out.push({
      body: {
        $case: "chunk",
        value: { offset: p.offset, data: Buffer.from(p.data), crc32: crc, compression: 0, rawLength: 0 },
      },
    });
  }
  out.push({
    body: {
      $case: "trailer",
      value: {
        dataChunks: chunks,
        dataBytes: bytes,
        zeroRanges: r.zeroRanges,
        zeroBytes: r.zeroBytes,
        digest: digest.digest(),
      },
    },
  });
  return out;
}

/** Runs a resumable full backup until a checkpoint is on disk and the stream hangs; `call` cuts it short. */
async function checkpointed(d: TestDeps, ceph: FakeCeph, over: Partial<TransferHeader> = {}) {
  const h = header({ imageSize: SIZE, chunkSize: CHUNK, resumable: true, ...over });
  const parts = chunkParts(4, CHUNK);
  const feed = new Feed(messages(h, parts), { holdAfter: 3, after: "hang" });
  const call = new AbortController();
  const running = runSink(d, feed, call.signal, { from: "network" });
  running.catch(() => {});
  const name = h.destination?.image as string;
  await feed.held;
  await until(
    () => !!parseCheckpoint(ceph.pool("backups").images.get(name)?.meta.get(RESUME_KEY) ?? null),
    "a checkpoint",
  );
  return { h, parts, name, call, running };
}

/** Runs a resumable full backup that is cut short (the network call aborts) once a checkpoint is on disk. */
async function cutShort(d: TestDeps, ceph: FakeCeph, over: Partial<TransferHeader> = {}) {
  const { h, parts, name, call, running } = await checkpointed(d, ceph, over);
  call.abort();
  await assert.rejects(running, (e) => statusOf(e) === Status.CANCELLED);
  return { h, parts, name };
}

/** The header fields of a restore into `image` of pool backups (for cutShort). */
const restoreInto = (kind: TransferKind, image: string): Partial<TransferHeader> => ({
  kind,
  destination: { pool: "backups", namespace: "", image },
});

/** A resumable full backup cut short after a checkpoint, on a fresh cluster: its held image. */
async function heldImage() {
  const ceph = new FakeCeph("backups");
  const d = deps(ceph);
  const { h, name } = await cutShort(d, ceph);
  const img = ceph.pool("backups").images.get(name);
  assert.ok(img);
  return { ceph, d, h, name, img };
}

describe("resumable transfers: the destination", () => {
  it("cut short after a checkpoint: held; ResumePoint answers it; the retry sends the rest and commits byte-identical data", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { h, parts, name } = await cutShort(d, ceph);
    const img = ceph.pool("backups").images.get(name);
    assert.ok(img, "the half-written image is kept");
    const [held] = [...d.journal.entries.values()];
    assert.ok(held?.heldUntil && Date.parse(held.heldUntil) > Date.now(), "its journal entry is held");

    const retry = { ...h, transferId: randomUUID() };
    const rp = await resumePoint(d, retry);
    assert.equal(rp.reason, "");
    assert.ok(rp.offset === CHUNK || rp.offset === 2 * CHUNK, `offset ${rp.offset}`);
    assert.equal(rp.dataBytes, rp.offset);
    // Another backup's header gets no checkpoint, with the reason.
    const otherSnap = `${h.toSnapshot}0`;
    const otherMeta = { version: 1, backup_id: h.backupId, chain: { base_image: name, snapshot: otherSnap } };
    const other = await resumePoint(d, {
      ...retry,
      toSnapshot: otherSnap,
      metadataJson: Buffer.from(JSON.stringify(otherMeta)),
    });
    assert.equal(other.offset, 0);
    assert.match(other.reason, /checkpoint is of/);

    const resumed = { ...retry, resumeOffset: rp.offset, resumePrefixDigest: rp.prefixDigest };
    const summary = await runSink(d, new Feed(resumedMessages(resumed, parts, rp)), undefined, { from: "network" });
    assert.equal(summary.resumedFrom, rp.offset);
    assert.equal(summary.snapshotCreated, h.toSnapshot);
    assert.ok(img.data.equals(Buffer.concat(parts.map((p) => ("data" in p ? p.data : Buffer.alloc(0))))));
    assert.deepEqual([...img.meta.keys()], [], "the incomplete marker and the checkpoint are gone");
    assert.equal(d.journal.entries.size, 0);
  });

  it("ResumePoint asked while the cut transfer still winds down waits for it, then answers the hold", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    let open = () => {};
    const gate = new Promise<void>((r) => {
      open = r;
    });
    let closing = false; // the sink reached its image's close (a thenable: awaiting it says so)
    ceph.gates.close = {
      // biome-ignore lint/suspicious/noThenProperty: a gate that notices being awaited
      then: (ok: () => void, ko: (e: unknown) => void) => {
        closing = true;
        return gate.then(ok, ko);
      },
    } as unknown as Promise<void>;
    const safety = setTimeout(() => open(), 10_000); // bounded should the test's own order break
    try {
      const { h, call, running: cut } = await checkpointed(d, ceph);
      call.abort(); // the sink winds down: it waits in its image's close (the gate) before the hold is written
      await until(() => closing, "the cut sink closing its image");
      const retry = { ...h, transferId: randomUUID() };
      // A caller that gives up meanwhile gets the reason at once.
      const gaveUp = await resumePoint(d, retry, AbortSignal.abort());
      assert.equal(gaveUp.offset, 0);
      assert.match(gaveUp.reason, /still running here/);
      let answered = false;
      const asked = resumePoint(d, retry).then((r) => {
        answered = true;
        return r;
      });
      await new Promise((r) => setImmediate(r));
      assert.equal(answered, false, "waits while the earlier transfer holds the image");
      open();
      const rp = await asked;
      assert.equal(rp.reason, "");
      assert.ok(rp.offset >= CHUNK, `offset ${rp.offset}`);
      await assert.rejects(cut);
    } finally {
      clearTimeout(safety);
      open();
    }
  });

  it("a resume whose offset or prefix digest is not the checkpoint's is refused (FAILED_PRECONDITION); the hold stays", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { h, parts, name } = await cutShort(d, ceph);
    const rp = await resumePoint(d, { ...h, transferId: randomUUID() });
    const wrong = {
      ...h,
      transferId: randomUUID(),
      resumeOffset: rp.offset + CHUNK,
      resumePrefixDigest: rp.prefixDigest,
    };
    await assert.rejects(
      runSink(d, new Feed(resumedMessages(wrong, parts, { ...rp, offset: rp.offset + CHUNK }))),
      (e) => {
        assert.equal(statusOf(e), Status.FAILED_PRECONDITION);
        return true;
      },
    );
    assert.ok(ceph.pool("backups").images.get(name));
    assert.equal([...d.journal.entries.values()].filter((e) => e.heldUntil).length, 1);
    // A retry that starts over discards the held transfer first, then writes a new image.
    const fresh = { ...h, transferId: randomUUID() };
    const summary = await runSink(d, new Feed(messages(fresh, parts)));
    assert.equal(summary.resumedFrom, 0);
    assert.equal(d.journal.entries.size, 0);
  });

  it("a cancel (the stream ends without a trailer) of a resumable transfer cleans up as before", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const h = header({ imageSize: SIZE, chunkSize: CHUNK, resumable: true });
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "end" });
    const running = runSink(d, feed, new AbortController().signal, { from: "network" });
    running.catch(() => {});
    await feed.held;
    const name = h.destination?.image as string;
    await until(() => !!ceph.pool("backups").images.get(name)?.meta.get(RESUME_KEY), "a checkpoint");
    feed.release();
    await assert.rejects(running, (e) => statusOf(e) === Status.UNAVAILABLE);
    assert.equal(ceph.pool("backups").images.size, 0);
    assert.equal(d.journal.entries.size, 0);
  });

  it("not resumable (the default): cut short, it cleans up as before", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const h = header({ imageSize: SIZE, chunkSize: CHUNK });
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "hang" });
    const call = new AbortController();
    const running = runSink(d, feed, call.signal, { from: "network" });
    running.catch(() => {});
    await feed.held;
    call.abort();
    await assert.rejects(running, (e) => statusOf(e) === Status.CANCELLED);
    assert.equal(ceph.pool("backups").images.size, 0);
    assert.equal(d.journal.entries.size, 0);
  });

  it("killed after its snapshot was made: recovery completes the backup instead of holding it; no resume is offered", async () => {
    const { d, h, img } = await heldImage();
    // As if the agent had died right after the commit's snapshot: checkpoint and marker still on the image.
    img.snaps.push({ name: h.toSnapshot, data: Buffer.from(img.data) });
    const retry = { ...h, transferId: randomUUID() };
    assert.match((await resumePoint(d, retry)).reason, /already holds .*committed/, "a held entry is not taken over");
    for (const e of d.journal.entries.values()) e.heldUntil = undefined;
    const done = await recoverInterrupted(d);
    assert.doesNotMatch(done.join("\n"), /kept .* for a retry/);
    assert.deepEqual(
      img.snaps.map((x) => x.name),
      [h.toSnapshot],
    );
    assert.deepEqual([...img.meta.keys()], [], "the incomplete marker and the checkpoint are gone: a complete backup");
    assert.equal(d.journal.entries.size, 0);
  });

  it("killed in the commit after its metadata object was made: held at the next start; the retry's commit takes that object as its earlier attempt's and writes it over", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const backupId = randomUUID();
    const image = `vol.backup.${backupId}`;
    const snap = `backup.${backupId}.snap.1`;
    /** backup.<id>.meta as the source encodes it (agents/engine/backup-header.ts), for one attempt. */
    const metaOf = (attempt: number, chain = { base_image: image, snapshot: snap }) =>
      Buffer.from(JSON.stringify({ version: 1, backup_id: backupId, created_at: `attempt ${attempt}`, chain }));
    const over = { backupId, destination: { pool: "backups", namespace: "", image }, toSnapshot: snap };
    const { h, parts } = await cutShort(d, ceph, { ...over, metadataJson: metaOf(1) });
    // As if the agent had died in the commit, its metadata object made, its snapshot not.
    const objects = ceph.pool("backups").objects;
    objects.set(metaObjectName(backupId), metaOf(1));
    for (const e of d.journal.entries.values()) Object.assign(e, { heldUntil: undefined, metaCreated: true });
    assert.match((await recoverInterrupted(d)).join("\n"), /kept .* for a retry/);

    const retry = { ...h, transferId: randomUUID(), metadataJson: metaOf(2) };
    const rp = await resumePoint(d, retry);
    assert.equal(rp.reason, "");
    const resumed = { ...retry, resumeOffset: rp.offset, resumePrefixDigest: rp.prefixDigest };
    const summary = await runSink(d, new Feed(resumedMessages(resumed, parts, rp)), undefined, { from: "network" });
    assert.equal(summary.snapshotCreated, snap);
    assert.equal(objects.get(metaObjectName(backupId))?.toString(), metaOf(2).toString(), "written over by the retry");
    assert.equal(d.journal.entries.size, 0);

    // An attempt whose cleanup failed left its object (another snapshot name, never made): taken over.
    const ceph3 = new FakeCeph("backups");
    const left = metaOf(4, { base_image: image, snapshot: `backup.${backupId}.snap.0` });
    ceph3.pool("backups").objects.set(metaObjectName(backupId), left);
    const h3 = header({ ...over, imageSize: SIZE, chunkSize: CHUNK, metadataJson: metaOf(5) });
    assert.equal((await runSink(deps(ceph3), new Feed(messages(h3, chunkParts(4, CHUNK))))).snapshotCreated, snap);
    assert.equal(ceph3.pool("backups").objects.get(metaObjectName(backupId))?.toString(), metaOf(5).toString());

    // Another backup's object under the same id (another base image): refused, and left as it was.
    const ceph2 = new FakeCeph("backups");
    const d2 = deps(ceph2);
    const foreign = metaOf(0, { base_image: `vol.backup.${randomUUID()}`, snapshot: `backup.${backupId}.snap.0` });
    ceph2.pool("backups").objects.set(metaObjectName(backupId), foreign);
    const h2 = header({ ...over, imageSize: SIZE, chunkSize: CHUNK, metadataJson: metaOf(3) });
    const err = await runSink(d2, new Feed(messages(h2, chunkParts(4, CHUNK)))).catch((e: unknown) => e);
    assert.equal(statusOf(err), Status.ALREADY_EXISTS, String(err));
    assert.equal(ceph2.pool("backups").objects.get(metaObjectName(backupId))?.toString(), foreign.toString());
    assert.equal(ceph2.pool("backups").images.size, 0, "its image removed");
  });

  it("an expired hold is not taken over (the sweep's to undo): the resume is refused, FAILED_PRECONDITION", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { h, parts } = await cutShort(d, ceph);
    const retry = { ...h, transferId: randomUUID() };
    const rp = await resumePoint(d, retry);
    assert.ok(rp.offset > 0, "held and offered while the hold lasts");
    for (const e of d.journal.entries.values()) e.heldUntil = new Date(Date.now() - 1).toISOString();
    assert.match((await resumePoint(d, retry)).reason, /expired/);
    const resumed = { ...retry, resumeOffset: rp.offset, resumePrefixDigest: rp.prefixDigest };
    const e = await runSink(d, new Feed(resumedMessages(resumed, parts, rp)), undefined, { from: "network" }).catch(
      (x) => x,
    );
    assert.equal(statusOf(e), Status.FAILED_PRECONDITION, e.message);
    assert.match(e.message, /expired/);
  });

  it("a retry into an image whose expired hold the sweep is undoing waits for the sweep, then starts over", async () => {
    const { ceph, d, h, name, img } = await heldImage();
    const opensBefore = img.opens;
    let open = () => {};
    ceph.gates.close = new Promise<void>((r) => {
      open = r;
    });
    const sweep = sweepHeld(d, Date.now() + 3_600_000 * 24);
    await until(() => img.opens === opensBefore + 1, "the sweep inside the held image");
    const retry = { ...h, transferId: randomUUID(), resumable: false };
    const parts = chunkParts(4, CHUNK);
    const running = runSink(d, new Feed(messages(retry, parts)), undefined, { from: "network" });
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    assert.equal(img.opens, opensBefore + 1, "the retry did not touch the image while the sweep held it");
    open();
    delete ceph.gates.close;
    assert.ok((await sweep).length > 0, "the sweep undid the expired hold");
    const s = await running;
    assert.equal(s.snapshotCreated, retry.toSnapshot);
    const now = ceph.pool("backups").images.get(name);
    assert.ok(now?.data.equals(Buffer.concat(parts.map((p) => ("data" in p ? p.data : Buffer.alloc(0))))));
    assert.equal(d.journal.entries.size, 0);
  });

  it("recovery after a kill holds a checkpointed resumable transfer; the sweep undoes it once the hold expired", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { name } = await cutShort(d, ceph);
    // As if the agent had died instead: the entry is not held yet, only resumable.
    for (const e of d.journal.entries.values()) e.heldUntil = undefined;
    const done = await recoverInterrupted(d);
    assert.match(done.join("\n"), /kept .* for a retry/);
    assert.ok(ceph.pool("backups").images.get(name));
    const [held] = [...d.journal.entries.values()];
    assert.ok(held?.heldUntil);
    assert.deepEqual(await sweepHeld(d), [], "not expired yet");
    const swept = await sweepHeld(d, Date.parse(held.heldUntil) + 1);
    assert.equal(swept.length > 0, true);
    assert.equal(ceph.pool("backups").images.size, 0);
    assert.equal(d.journal.entries.size, 0);
  });

  it("a resume whose re-labelling of the image's marker fails after it went through: the image is still removed (by the retry's cleanup)", async () => {
    const { ceph, d, h } = await heldImage();
    const retry = { ...h, transferId: randomUUID() };
    const rp = await resumePoint(d, retry);
    assert.equal(rp.reason, "");
    const resumed = { ...retry, resumeOffset: rp.offset, resumePrefixDigest: rp.prefixDigest };
    ceph.faults.metaSetAfter = cephError("ETIMEDOUT", "rbd_metadata_set");
    await assert.rejects(runSink(d, new Feed(resumedMessages(resumed, chunkParts(4, CHUNK), rp))), /ETIMEDOUT/);
    ceph.faults.metaSetAfter = undefined;
    // Whatever the journal still holds is undone when its hold expires; nothing may stay behind.
    for (const e of d.journal.entries.values()) e.heldUntil = new Date(0).toISOString();
    await sweepHeld(d);
    assert.equal(ceph.pool("backups").images.size, 0, "no image left whose marker names no entry");
    assert.equal(d.journal.entries.size, 0);
  });

  it("a cancelled job's held transfer is undone at once (discard_held), only for its image and backup", async () => {
    const { ceph, d, h, name } = await heldImage();
    const [held] = [...d.journal.entries.values()];
    assert.ok(held?.heldUntil && Date.parse(held.heldUntil) > Date.now(), "held, not expired");
    const where = { pool: "backups", namespace: "", image: name };
    assert.deepEqual(await discardHeldInto(d, where, randomUUID()), [], "another backup's: untouched");
    assert.deepEqual(
      await discardHeldInto(d, { ...where, image: "other" }, h.backupId),
      [],
      "another image: untouched",
    );
    assert.ok(ceph.pool("backups").images.get(name));
    const done = await discardHeldInto(d, where, h.backupId);
    assert.match(done.join("\n"), /kept for a resume was undone \(discarded: its job ended\)/);
    assert.equal(ceph.pool("backups").images.size, 0, "the partial image is gone");
    assert.equal(d.journal.entries.size, 0);
  });

  it("a discard_held that comes while the transfer still winds down (not held yet): the transfer is cleaned up, not held, when it ends", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { h, call, running } = await checkpointed(d, ceph);
    const anyImage = { pool: "backups", namespace: "", image: "" };
    assert.deepEqual(await discardHeldInto(d, anyImage, h.backupId), [], "nothing held yet: the transfer runs");
    call.abort(); // now cut short, with a checkpoint on disk
    await assert.rejects(running, (e) => statusOf(e) === Status.CANCELLED);
    assert.equal(ceph.pool("backups").images.size, 0, "not kept for a resume: removed");
    assert.equal(d.journal.entries.size, 0);
  });

  it("a discard_held remembered for a transfer winding down does not reach one that started after it (the operator's next job): that one is held", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { h, call, running } = await checkpointed(d, ceph);
    const anyImage = { pool: "backups", namespace: "", image: "" };
    // As if the discard had come a minute before this transfer started (for an earlier job's).
    assert.deepEqual(await discardHeldInto(d, anyImage, h.backupId, Date.now() - 60_000), []);
    call.abort();
    await assert.rejects(running, (e) => statusOf(e) === Status.CANCELLED);
    assert.equal(ceph.pool("backups").images.size, 1, "kept for a resume");
    const [held] = [...d.journal.entries.values()];
    assert.ok(held?.heldUntil, "held");
  });

  it("a cancelled backup's held transfer, image not named (its agent chose it): any image of the pool held for that backup", async () => {
    const { ceph, d, h, name } = await heldImage();
    const anyImage = { pool: "backups", namespace: "", image: "" };
    assert.deepEqual(await discardHeldInto(d, anyImage, randomUUID()), [], "another backup's: untouched");
    assert.deepEqual(await discardHeldInto(d, { ...anyImage, pool: "rbd" }, h.backupId), [], "another pool: untouched");
    assert.deepEqual(await discardHeldInto(d, { ...anyImage, namespace: "ns" }, h.backupId), [], "another namespace");
    assert.ok(ceph.pool("backups").images.get(name));
    const done = await discardHeldInto(d, anyImage, h.backupId);
    assert.match(done.join("\n"), /discarded: its job ended/);
    assert.equal(ceph.pool("backups").images.size, 0, "the partial image is gone");
    assert.equal(d.journal.entries.size, 0);
  });

  it("a resumable transfer's records out of order or overlapping: INVALID_ARGUMENT, nothing kept (a checkpoint after them would claim what never came)", async () => {
    for (const [what, parts] of [
      ["a chunk below the one before", [chunkParts(4, CHUNK)[3], chunkParts(4, CHUNK)[0]]],
      [
        "overlapping",
        [
          { offset: 0, data: Buffer.alloc(CHUNK, 7) },
          { offset: CHUNK / 2, data: Buffer.alloc(CHUNK, 8) },
        ],
      ],
      ["a zero range below a chunk", [chunkParts(4, CHUNK)[2], { offset: 0, zero: CHUNK }]],
    ] as Array<[string, Part[]]>) {
      const ceph = new FakeCeph("backups");
      const d = deps(ceph);
      const h = header({ imageSize: SIZE, chunkSize: CHUNK, resumable: true });
      const e = await runSink(d, new Feed(messages(h, parts)), new AbortController().signal, { from: "network" }).catch(
        (x) => x,
      );
      assert.equal(statusOf(e), Status.INVALID_ARGUMENT, what);
      assert.match((e as Error).message, /must come in ascending, non-overlapping offset order/, what);
      assert.equal(ceph.pool("backups").images.size, 0, `${what}: nothing kept for a resume`);
      assert.equal(d.journal.entries.size, 0, what);
    }
    // Not resumable: any order is the source's to choose (transfer.proto); the same records commit.
    const ceph = new FakeCeph("backups");
    const h = header({ imageSize: SIZE, chunkSize: CHUNK });
    const [c0, , , c3] = chunkParts(4, CHUNK);
    await runSink(deps(ceph), new Feed(messages(h, [c3 as Part, c0 as Part])));
  });

  it("a restore over an existing volume must send its records in order: a range twice making up for one skipped is INVALID_ARGUMENT, the volume unchanged", async () => {
    for (const [kind, over] of [
      [TransferKind.RESTORE_ORIGINAL, {}],
      [TransferKind.FAILBACK, { backupId: randomUUID(), fromSnapshot: "" }],
    ] as const) {
      const ceph = new FakeCeph("backups");
      const before = Buffer.alloc(SIZE, 0x5a);
      const v = ceph.addImage("backups", "vol-1", Buffer.from(before));
      // Not resumable: the sum of the records (4 chunks' worth) alone would pass the every-byte check.
      const h = header({ ...restoreInto(kind, "vol-1"), ...over, imageSize: SIZE, chunkSize: CHUNK });
      const [c0, c1, c2] = chunkParts(4, CHUNK) as [Part, Part, Part, Part];
      const e = await runSink(deps(ceph), new Feed(messages(h, [c0, c1, c2, c2]))).catch((x) => x);
      assert.equal(statusOf(e), Status.INVALID_ARGUMENT, TransferKind[kind]);
      assert.match((e as Error).message, /over an existing volume's records must come in ascending, non-overlapping/);
      assert.ok(v.data.subarray(3 * CHUNK).equals(before.subarray(3 * CHUNK)), "the skipped range was never written");
    }
  });

  it("a restore to a new volume that a VM opened while it was held: its resume and its start over are refused, the volume neither removed nor taken over", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const { h, parts } = await cutShort(d, ceph, restoreInto(TransferKind.RESTORE_NEW, "new-vol"));
    const img = () => ceph.pool("backups").images.get("new-vol");
    const retry = { ...h, transferId: randomUUID() };
    const rp = await resumePoint(d, retry);
    assert.ok(rp.offset > 0, `a resume point (${rp.reason})`);
    const v = img();
    assert.ok(v);
    v.watchers = [{ addr: "192.168.7.5:0/2834712", id: 24107 }]; // attached meanwhile
    const before = Buffer.from(v.data);
    const entries = () => [...d.journal.entries.values()];
    const resumed: TransferHeader = { ...retry, resumeOffset: rp.offset, resumePrefixDigest: rp.prefixDigest };
    const e = await runSink(d, new Feed(resumedMessages(resumed, parts, rp))).catch((x) => x);
    assert.equal(statusOf(e), Status.FAILED_PRECONDITION);
    assert.match((e as Error).message, /is in use \(watched by client\.24107/);
    assert.doesNotMatch((e as Error).message, /cleanup/);
    assert.equal(img(), v, "the volume is still there");
    assert.ok(v.data.equals(before), "nothing written");
    assert.equal(entries().length, 1, "only the held entry");
    assert.ok(entries()[0]?.heldUntil, "still held");
    const over = await runSink(d, new Feed(messages({ ...h, transferId: randomUUID() }, parts))).catch((x) => x);
    assert.equal(statusOf(over), Status.FAILED_PRECONDITION);
    assert.equal(img(), v, "the start over did not remove it either");
    assert.ok(v.data.equals(before));
  });

  it("a restore whose volume was resized while it was held: no resume is offered, and one asked for is refused; the restart from 0 commits byte-identical data at the backup's size", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const v = ceph.addImage("backups", "vol-1", Buffer.alloc(SIZE));
    const { h, parts } = await cutShort(d, ceph, restoreInto(TransferKind.RESTORE_ORIGINAL, "vol-1"));
    const retry = { ...h, transferId: randomUUID() };
    const offered = await resumePoint(d, retry);
    assert.ok(offered.offset > 0, `a resume point before the change (${offered.reason})`);
    // Meanwhile: written into the restored prefix, and grown (an extend), with no client left open.
    v.data.fill(0xab, 0, 100);
    v.data = Buffer.concat([v.data, Buffer.alloc(CHUNK, 0xcd)]);
    const rp = await resumePoint(d, retry);
    assert.equal(rp.offset, 0);
    assert.match(rp.reason, /changed since the checkpoint \(its size is 327680, the transfer's 262144\)/);
    const asked: TransferHeader = {
      ...retry,
      resumeOffset: offered.offset,
      resumePrefixDigest: offered.prefixDigest,
    };
    const e = await runSink(d, new Feed(resumedMessages(asked, parts, offered))).catch((x) => x);
    assert.equal(statusOf(e), Status.FAILED_PRECONDITION);
    assert.match((e as Error).message, /cannot resume at offset \d+: .*changed since the checkpoint/);
    // The source starts over: every byte the backup's, at its size.
    await runSink(d, new Feed(messages({ ...h, transferId: randomUUID() }, parts)));
    assert.equal(v.data.length, SIZE);
    assert.ok(v.data.equals(Buffer.concat(parts.map((p) => ("zero" in p ? Buffer.alloc(p.zero) : p.data)))));
  });

  it("a restore over the original resumed after a VM opened the volume: FAILED_PRECONDITION, the held transfer kept for later", async () => {
    const ceph = new FakeCeph("backups");
    const d = deps(ceph);
    const v = ceph.addImage("backups", "vol-1", Buffer.alloc(SIZE));
    const { h } = await cutShort(d, ceph, restoreInto(TransferKind.RESTORE_ORIGINAL, "vol-1"));
    const retry = { ...h, transferId: randomUUID() };
    const rp = await resumePoint(d, retry);
    assert.ok(rp.offset > 0, `a resume point (${rp.reason})`);
    v.watchers = [{ addr: "192.168.7.5:0/2834712", id: 24107 }]; // the VM started meanwhile
    const before = Buffer.from(v.data);
    const resumed: TransferHeader = { ...retry, resumeOffset: rp.offset, resumePrefixDigest: rp.prefixDigest };
    const e = await runSink(d, new Feed([{ body: { $case: "header", value: resumed } }])).catch((x) => x);
    assert.equal(statusOf(e), Status.FAILED_PRECONDITION);
    assert.match((e as Error).message, /is in use \(watched by client\.24107/);
    assert.ok(v.data.equals(before), "nothing written under the VM");
    assert.ok(
      [...d.journal.entries.values()].some((x) => x.heldUntil),
      "the earlier attempt's hold stays",
    );
    // The source then starts over (no resume offset): refused too, before the kept checkpoint is dropped.
    const over = { ...h, transferId: randomUUID() };
    const e2 = await runSink(d, new Feed(messages(over, chunkParts(4, CHUNK)))).catch((x) => x);
    assert.equal(statusOf(e2), Status.FAILED_PRECONDITION);
    assert.ok(v.data.equals(before), "still nothing written");
    assert.ok(parseCheckpoint(v.meta.get(RESUME_KEY) ?? null), "the checkpoint is still there for a later resume");
    assert.ok(
      [...d.journal.entries.values()].some((x) => x.heldUntil),
      "and its hold",
    );
  });
});
