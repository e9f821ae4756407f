/**
 * The coordinator's session calls reach the operations: prune_snapshots (source snapshot hygiene) and
 * confirm_backup (a backup's confirmation: the base image's snapshot and the metadata object, one reply).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AGENT_FEATURES, answerCall } from "../../../agents/agent/calls";
import { AgentOperations } from "../../../agents/agent/operations";
import type { EngineContext } from "../../../agents/engine/context";
import { type BackupMetadataV1, encodeMetadata } from "../../../agents/engine/metadata";
import { RecentCommits } from "../../../agents/transfer/sink";
import type { ConfirmBackupResponse } from "../../../src/gen/rbdbackup/v1/session";
import { FakeOps } from "./fakes";

describe("agent: session calls", () => {
  it("prune_snapshots is answered by the operation with the removed snapshots", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    const image = { pool: "rbd", namespace: "", image: "v1" };
    const reply = await answerCall(ops, {
      callId: "p1",
      request: { $case: "pruneSnapshots", value: { image, backupIds: [id] } },
    });
    assert.equal(reply.code, Status.OK);
    assert.deepEqual(reply.result, {
      $case: "pruneSnapshots",
      value: { removed: [`backup.${id}.snap.1`], warnings: [] },
    });
    assert.deepEqual(ops.pruned, [{ image: "v1", backupIds: [id] }]);
  });

  const image = { pool: "backups", namespace: "", image: "v1.backup.x" };
  const snap = (id: string) => ({ name: `backup.${id}.snap.7`, backupId: id, timestamp: 7, snapId: 3, size: 1 });

  it("confirm_backup answers the snapshot and the metadata object in one reply", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    ops.snapshots.set(image.image, [snap(randomUUID()), snap(id)]);
    ops.metadata.set(id, '{"backup_id":"x"}');
    const reply = await answerCall(ops, {
      callId: "c1",
      request: { $case: "confirmBackup", value: { image, backupId: id, snapshot: `backup.${id}.snap.7` } },
    });
    assert.equal(reply.code, Status.OK);
    assert.deepEqual(reply.result, {
      $case: "confirmBackup",
      value: { snapshot: snap(id), metadata: { found: true, json: '{"backup_id":"x"}' } },
    });
  });

  it("confirm_backup: no such snapshot is the answer; no base image is NOT_FOUND", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    ops.snapshots.set(image.image, [snap(randomUUID())]);
    const ask = (img = image) =>
      answerCall(ops, {
        callId: "c2",
        request: { $case: "confirmBackup", value: { image: img, backupId: id, snapshot: `backup.${id}.snap.7` } },
      });
    const none = await ask();
    assert.equal(none.code, Status.OK, "the metadata's failure does not hide the snapshot's absence");
    assert.deepEqual(none.result, {
      $case: "confirmBackup",
      value: { snapshot: undefined, metadata: { found: false, json: "" } },
    });
    const gone = await ask({ ...image, image: "other" });
    assert.equal(gone.code, Status.NOT_FOUND);
  });

  it("confirm_backup with a backup id that is not a UUID, or no image, is refused before anything is read", async () => {
    const ops = new FakeOps();
    for (const value of [
      { image, backupId: "../x", snapshot: "backup.x.snap.1" },
      { image: undefined, backupId: randomUUID(), snapshot: "s" },
      { image, backupId: randomUUID(), snapshot: "" },
    ]) {
      const reply = await answerCall(ops, { callId: "c3", request: { $case: "confirmBackup", value } });
      assert.equal(reply.code, Status.INVALID_ARGUMENT, JSON.stringify(value));
      assert.match(reply.message, /^confirm_backup: /);
    }
    assert.deepEqual(ops.asked, [], "nothing was read");
  });

  it("confirm_backup of a backup this agent just committed is answered from the commit: nothing is read", async () => {
    const ops = new FakeOps();
    const id = randomUUID();
    const answer: ConfirmBackupResponse = { snapshot: snap(id), metadata: { found: true, json: '{"m":1}' } };
    const asked: unknown[] = [];
    const withCommit = Object.assign(ops, {
      recentCommit: async (...args: unknown[]) => {
        asked.push(args);
        return args[0] === id ? answer : undefined;
      },
    });
    const value = { image, backupId: id, snapshot: `backup.${id}.snap.7` };
    const reply = await answerCall(withCommit, { callId: "c4", request: { $case: "confirmBackup", value } });
    assert.equal(reply.code, Status.OK);
    assert.deepEqual(reply.result, { $case: "confirmBackup", value: answer });
    assert.deepEqual(ops.asked, [], "Ceph was not asked");
    assert.deepEqual(asked, [[id, image, value.snapshot]]);
    // Any other backup reads Ceph as before.
    const other = randomUUID();
    ops.snapshots.set(image.image, [snap(other)]);
    ops.metadata.set(other, '{"m":2}');
    const read = await answerCall(withCommit, {
      callId: "c5",
      request: { $case: "confirmBackup", value: { image, backupId: other, snapshot: `backup.${other}.snap.7` } },
    });
    assert.equal(read.code, Status.OK);
    assert.deepEqual(ops.asked.sort(), [`list ${image.image}`, `meta ${other}`].sort());
  });
});

describe("agent: confirmations from recent commits", () => {
  const id = randomUUID();
  const where = { pool: "backups", namespace: "ns", image: "v1.backup.x" };
  const snapshot = { name: `backup.${id}.snap.7`, backupId: id, timestamp: 7, snapId: 9, size: 4096 };
  const committed = (metadata: Uint8Array = new Uint8Array(), name = snapshot.name) => ({
    pool: where.pool,
    namespace: where.namespace,
    baseImage: where.image,
    snapshotName: name,
    metadata,
  });
  const listed = (x = snapshot) => Promise.resolve(x);

  it("found only for exactly that backup, pool, namespace, base image and snapshot", async () => {
    const commits = new RecentCommits();
    commits.record(id, committed(), listed());
    assert.deepEqual(await commits.find(id, where, snapshot.name)?.snapshot, snapshot);
    assert.equal(commits.find(randomUUID(), where, snapshot.name), undefined);
    assert.equal(commits.find(id, { ...where, pool: "rbd" }, snapshot.name), undefined);
    assert.equal(commits.find(id, { ...where, namespace: "" }, snapshot.name), undefined);
    assert.equal(commits.find(id, { ...where, image: "v1.backup.y" }, snapshot.name), undefined);
    assert.equal(commits.find(id, where, `backup.${id}.snap.8`), undefined);
  });

  it("an entry lasts the TTL; the oldest go past the bound; a delete forgets; idle waits for the listings", async () => {
    let now = 1_000;
    const commits = new RecentCommits(60_000, 2, () => now);
    commits.record(id, committed(), listed());
    now += 60_000;
    assert.ok(commits.find(id, where, snapshot.name), "still within the TTL");
    now += 1;
    assert.equal(commits.find(id, where, snapshot.name), undefined, "past the TTL");
    assert.equal(commits.size, 0);
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    for (const x of ids) commits.record(x, committed(undefined, `backup.${x}.snap.7`), listed());
    assert.equal(commits.size, 2);
    assert.equal(commits.find(ids[0] as string, where, `backup.${ids[0]}.snap.7`), undefined, "the oldest went");
    commits.forget(ids[1] as string);
    assert.equal(commits.find(ids[1] as string, where, `backup.${ids[1]}.snap.7`), undefined);
    assert.ok(commits.find(ids[2] as string, where, `backup.${ids[2]}.snap.7`));
    let settle: (v: null) => void = () => {};
    commits.record(id, committed(), new Promise((r) => (settle = r)));
    let idle = false;
    const waiting = commits.idle(60_000).then(() => (idle = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(idle, false, "a listing is still in flight");
    settle(null);
    await waiting;
  });

  it("the agent answers with the metadata decoded as a read would; otherwise (no listing, bytes that do not decode) Ceph is read", async () => {
    const commits = new RecentCommits();
    const ops = new AgentOperations({} as EngineContext, () => true, undefined, commits);
    const meta: BackupMetadataV1 = {
      version: 1,
      backup_id: id,
      created_at: "2026-12-03T16:00:00.000Z",
      volume: { id: "vol-1", metadata: { k: "v" } },
      source: { kind: "rbd", cluster_fsid: "f", pool: "rbd", namespace: "", image: "v1", snapshot: snapshot.name },
      image: { size: 4096, features: "1", order: 22, stripe_unit: 0, stripe_count: 0, image_meta: {} },
      chain: { base_image: where.image, incremental: false, parent_snapshot: null, snapshot: snapshot.name },
    };
    commits.record(id, committed(encodeMetadata(meta)), listed());
    const answer = await ops.recentCommit(id, where, snapshot.name);
    assert.deepEqual(answer?.snapshot, snapshot);
    assert.equal(answer?.metadata?.found, true);
    assert.deepEqual(JSON.parse(answer?.metadata?.json ?? ""), meta);
    commits.record(id, committed(encodeMetadata(meta)), Promise.resolve(null));
    assert.equal(await ops.recentCommit(id, where, snapshot.name), undefined, "the listing did not show it");
    commits.record(id, committed(Buffer.from("{not json")), listed());
    assert.equal(await ops.recentCommit(id, where, snapshot.name), undefined, "bytes that do not decode");
  });

  it("discard_held reaches the sink's undo with the image and backup and ends the job; end_job ends one; bad names or ids are INVALID_ARGUMENT, never undone", async () => {
    const undone: Array<[string, string]> = [];
    const ended: string[] = [];
    const log = { info: () => {}, warn: () => {}, debug: () => {}, error: () => {}, child: () => log };
    const ops = new AgentOperations(
      { log } as unknown as EngineContext,
      () => true,
      undefined,
      undefined,
      async (w, id) => {
        undone.push([`${w.pool}/${w.namespace}/${w.image}`, id]);
        return [`undone ${w.image}`];
      },
      (job) => ended.push(job),
    );
    const id = randomUUID();
    const job = randomUUID();
    const ok = await answerCall(ops, {
      callId: "d1",
      request: {
        $case: "discardHeld",
        value: { image: { pool: "rbd", namespace: "", image: "restored" }, backupId: id, jobId: job },
      },
    });
    assert.equal(ok.code, Status.OK, ok.message);
    assert.deepEqual(ok.result, { $case: "discardHeld", value: { done: ["undone restored"] } });
    // A cancelled backup names no image (its agent chose it): image "" means any of the pool's.
    const anyImage = await answerCall(ops, {
      callId: "d3",
      request: {
        $case: "discardHeld",
        value: { image: { pool: "backups", namespace: "", image: "" }, backupId: id, jobId: "" },
      },
    });
    assert.equal(anyImage.code, Status.OK, anyImage.message);
    for (const [image, backupId, jobId] of [
      [{ pool: "rbd", namespace: "", image: "a/b" }, id, job],
      [{ pool: "", namespace: "", image: "" }, id, job],
      [{ pool: "rbd", namespace: "", image: "restored" }, "not-a-uuid", job],
      [{ pool: "rbd", namespace: "", image: "restored" }, id, "not-a-uuid"],
    ] as const) {
      const r = await answerCall(ops, {
        callId: "d2",
        request: { $case: "discardHeld", value: { image, backupId, jobId } },
      });
      assert.equal(r.code, Status.INVALID_ARGUMENT, r.message);
    }
    assert.deepEqual(undone, [
      ["rbd//restored", id],
      ["backups//", id],
    ]);
    assert.deepEqual(ended, [job], 'the job named was ended (its capabilities void); none for job_id ""');
    // end_job (a job that succeeded after a retry): the job ended, nothing undone; a bad id refused.
    const later = randomUUID();
    const e = await answerCall(ops, { callId: "e1", request: { $case: "endJob", value: { jobId: later } } });
    assert.equal(e.code, Status.OK, e.message);
    assert.deepEqual(ended, [job, later]);
    const bad = await answerCall(ops, { callId: "e2", request: { $case: "endJob", value: { jobId: "x" } } });
    assert.equal(bad.code, Status.INVALID_ARGUMENT);
    assert.equal(undone.length, 2, "end_job undoes nothing");
    assert.ok(AGENT_FEATURES.includes("end_job"));
  });
});
