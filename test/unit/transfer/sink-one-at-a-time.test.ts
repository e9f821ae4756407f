/**
 * One transfer per destination image at a time (agents/transfer/sink/running.ts claimImageAlone): a
 * retry that arrives while the attempt it replaces still winds down here waits for it to let go, and is
 * refused UNAVAILABLE — nothing touched — when it does not in time. Two at once would undo each other:
 * the earlier attempt's cleanup (removal, or a rollback to the from-snapshot) landing under the retry's
 * writes, which would then commit a backup missing data. runSink on an in-memory cluster; no Ceph.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { runSink } from "../../../agents/transfer/sink";
import { chainsSettled, claimImage, keyOfHeader, waitersOf } from "../../../agents/transfer/sink/running";
import { AppError, Status } from "../../../src/common/errors";
import { until } from "../../helpers/wait";
import { FakeCeph } from "./fakes/fake-ceph";
import { sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages } from "./fakes/stream";

const CHUNK = 64 * KiB;

describe("runSink: one transfer per image", () => {
  it("a retry while the earlier attempt still holds the image: refused after the wait, nothing written by it", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph, {
      limits: { writesInFlight: 3, windowBytes: 1 << 20, fullCheckIntervalMs: 60_000, earlierTransferWaitMs: 200 },
    });
    const h = header();
    const first = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "end" });
    const running = runSink(deps, first).catch((e: unknown) => e);
    await first.held; // the first attempt took its first chunks and now waits on its (silent) source
    const writes = () => ceph.log.filter((l) => l.startsWith("write ")).length;
    await until(() => writes() === 2, "the first attempt's two writes");
    const writesBefore = writes();
    const retry = { ...h, transferId: randomUUID() };
    const e = await runSink(deps, new Feed(messages(retry, chunkParts(4, CHUNK)))).then(
      () => assert.fail("the retry ran beside the earlier attempt"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof AppError && e.status === Status.UNAVAILABLE, String(e));
    assert.match(e.message, /still being written by an earlier transfer on this agent/);
    assert.equal(ceph.log.filter((l) => l.startsWith("write ")).length, writesBefore, "the retry wrote nothing");
    first.release(); // the earlier attempt's stream ends without its trailer: cut short, cleaned up
    assert.ok(await running, "the earlier attempt failed (cut short)");
  });

  it("a retry that the earlier attempt lets go in time runs after its cleanup and commits its own data", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph, {
      limits: { writesInFlight: 3, windowBytes: 1 << 20, fullCheckIntervalMs: 60_000, earlierTransferWaitMs: 10_000 },
    });
    const h = header();
    const first = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "end" });
    const running = runSink(deps, first).catch((e: unknown) => e);
    await first.held;
    const retry = { ...h, transferId: randomUUID() };
    const parts = chunkParts(4, CHUNK);
    const second = runSink(deps, new Feed(messages(retry, parts)));
    // The earlier attempt ends once the retry is seen waiting for it (not on a timer: a slow run would
    // release before the wait, and the test pass through the path without one).
    await until(() => waitersOf(keyOfHeader(retry)) === 1, "the retry to wait for the earlier attempt");
    first.release();
    assert.ok(await running, "the earlier attempt failed (cut short) and cleaned up");
    const s = await second;
    assert.equal(s.snapshotCreated, retry.toSnapshot);
    const img = ceph.pool("backups").images.get(h.destination?.image as string);
    assert.ok(img?.data.equals(Buffer.concat(parts.map((p) => ("data" in p ? p.data : Buffer.alloc(0))))));
  });

  it("a listing of a volume's chains waits for a transfer still writing one of its base images, not another volume's", async () => {
    const into = (image: string) => ({ ...header(), destination: { pool: "backups", namespace: "", image } });
    const base = `vol.backup.${randomUUID()}`;
    const mine = claimImage(into(base));
    // Other volumes' base images: "vol2", and "vol.backup.<uuid>" (a volume of that name) — names that
    // start like this volume's but are not its chains.
    const others = [`vol2.backup.${randomUUID()}`, `${base}.backup.${randomUUID()}`].map((i) => claimImage(into(i)));
    try {
      let settled = false;
      const listing = chainsSettled("backups", "", "vol", 10_000).then(() => {
        settled = true;
      });
      await until(() => waitersOf(keyOfHeader(into(base))) === 1, "the listing to wait for the transfer");
      assert.equal(settled, false);
      mine();
      await listing;
      assert.equal(settled, true);
      // The others' transfers still run: they do not hold this volume's listing.
      await chainsSettled("backups", "", "vol", 10_000);
      // Bounded: a transfer that does not end lets the listing go after `ms`.
      const stuck = claimImage(into(`vol.backup.${randomUUID()}`));
      try {
        await chainsSettled("backups", "", "vol", 50);
      } finally {
        stuck();
      }
    } finally {
      for (const release of others) release();
    }
  });
});
