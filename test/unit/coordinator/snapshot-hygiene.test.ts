/**
 * Source snapshot hygiene without Ceph: the decision (hygiene-plan.ts) on plain records, then the
 * scheduler's sweep against a fake source agent that keeps the volume's backup snapshots in memory —
 * a delete sweeps its snapshot away, the volume's next job waits for the sweep after its previous one
 * (back-to-back backups never pile up snapshots), a sweep that falls due while a backup runs waits for
 * its end, and retries after a backoff when no agent of the source cluster is connected.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AppError } from "../../../src/common/errors";
import { backupSnapName } from "../../../src/common/ids";
import type { Backup, JobRecord } from "../../../src/coordinator/model";
import { type SourceSnap, snapshotsToRemove } from "../../../src/coordinator/scheduler/hygiene-plan";
import { sourceVerifications } from "../../../src/coordinator/scheduler/snapshot-hygiene";
import type { CallRequest } from "../../../src/coordinator/sessions";
import { RestoreResult, VerifyMode } from "../../../src/gen/rbdbackup/v1/agent";
import { BackupIntegrity, BackupStatus, JobState } from "../../../src/gen/rbdbackup/v1/backup_service";
import type { Answer, FakeAgentSession } from "../../helpers/fake-agent";
import { until } from "../../helpers/wait";
import { serveHarness } from "./api-server";
import { backupResult, Harness, newBackup, vol } from "./harness";

const { BACKUP_STATUS_AVAILABLE: AVAILABLE, BACKUP_STATUS_DELETED: DELETED } = BackupStatus;
const { BACKUP_STATUS_FAILED: FAILED, BACKUP_STATUS_CREATING: CREATING } = BackupStatus;
const { BACKUP_STATUS_DELETING: DELETING } = BackupStatus;

/** A backup record of volume v1 at `loc` (cluster "b" pool "backups" by default) with the given status. */
function rec(status: BackupStatus, dest = "b"): Backup {
  return { ...newBackup(vol("v1"), dest, 0), status };
}

/** Source snapshots of the records, in the order given (snap ids 1, 2, ...). */
const onSource = (...bs: Backup[]): SourceSnap[] =>
  bs.map((b, i) => ({ name: backupSnapName(b.id, 1000 + i), backupId: b.id, snapId: i + 1 }));

const removed = (src: SourceSnap[], bs: Backup[], max: number | null) =>
  snapshotsToRemove(src, bs, max).map((r) => r.backupId);

describe("snapshot hygiene: which source snapshots may go", () => {
  it("DELETED and FAILED backups' snapshots go, whatever max_snapshots says", () => {
    const [d, f, a] = [rec(DELETED), rec(FAILED), rec(AVAILABLE)];
    const src = onSource(d, f, a);
    for (const max of [0, 5, null]) assert.deepEqual(removed(src, [d, f, a], max), [d.id, f.id], `max ${max}`);
    const r = snapshotsToRemove(src, [d, f, a], 0);
    assert.match(r[0]?.reason ?? "", /is DELETED$/);
    assert.match(r[1]?.reason ?? "", /is FAILED$/);
  });

  it("each location keeps its newest available backup's snapshot; older ones go when max_snapshots is 0", () => {
    const [a1, a2, other, a3] = [rec(AVAILABLE), rec(AVAILABLE), rec(AVAILABLE, "c"), rec(AVAILABLE)];
    const src = onSource(a1, a2, other, a3);
    assert.deepEqual(removed(src, [a1, a2, other, a3], 0), [a1.id, a2.id]);
    assert.match(snapshotsToRemove(src, [a1, a2, other, a3], 0)[0]?.reason ?? "", /not the newest available/);
    // The newest one on the SOURCE counts: a newer backup whose snapshot is gone does not take its place.
    assert.deepEqual(removed(onSource(a1, a2), [a1, a2, a3], 0), [a1.id]);
  });

  it("a backup with two snapshots on the source, one kept: neither is named (the agent removes by backup id)", () => {
    const [b1, b3] = [rec(AVAILABLE), rec(AVAILABLE)];
    // b3's snapshot twice (two attempts at once, or a look-alike name), the newer one the location's newest.
    const src = onSource(b1, b3, b3);
    for (const max of [0, 1]) assert.deepEqual(removed(src, [b1, b3], max), [b1.id], `max ${max}`);
  });

  it("max_snapshots keeps the newest N live snapshots; unknown max_snapshots keeps every available one", () => {
    const bs = [rec(AVAILABLE), rec(AVAILABLE), rec(DELETED), rec(AVAILABLE), rec(AVAILABLE)];
    const src = onSource(...bs);
    assert.deepEqual(removed(src, bs, 2), [bs[2]?.id, bs[0]?.id, bs[1]?.id]);
    assert.deepEqual(removed(src, bs, 3), [bs[2]?.id, bs[0]?.id]);
    assert.deepEqual(removed(src, bs, null), [bs[2]?.id]);
  });

  it("the snapshot of a backup a SOURCE verification reads stays (queued or running); its end lets it go", () => {
    const [a1, a2, a3] = [rec(AVAILABLE), rec(AVAILABLE), rec(AVAILABLE)];
    const src = onSource(a1, a2, a3);
    assert.deepEqual(removed(src, [a1, a2, a3], 0), [a1.id, a2.id]);
    assert.deepEqual(
      snapshotsToRemove(src, [a1, a2, a3], 0, new Set([a2.id])).map((r) => r.backupId),
      [a1.id],
      "a2 is being verified against its source snapshot",
    );
    const job = (backupId: string, mode: VerifyMode, state: JobState) =>
      ({ backupId, state, operation: { kind: "verify", mode, samplePercent: 0 } }) as unknown as JobRecord;
    const ids = sourceVerifications([
      job(a1.id, VerifyMode.VERIFY_MODE_SOURCE, JobState.JOB_STATE_QUEUED),
      job(a2.id, VerifyMode.VERIFY_MODE_SOURCE, JobState.JOB_STATE_RUNNING),
      job(a3.id, VerifyMode.VERIFY_MODE_FULL, JobState.JOB_STATE_RUNNING),
      job("done", VerifyMode.VERIFY_MODE_SOURCE, JobState.JOB_STATE_SUCCEEDED),
    ]);
    assert.deepEqual([...ids].sort(), [a1.id, a2.id].sort());
  });

  it("never: backups being made or deleted, other statuses, names the catalog does not know", () => {
    const [c, d, corrupt, a] = [rec(CREATING), rec(DELETING), rec(99 as BackupStatus), rec(AVAILABLE)];
    const stranger = { name: backupSnapName(randomUUID(), 1), backupId: randomUUID(), snapId: 0 };
    assert.deepEqual(removed([stranger, ...onSource(c, d, corrupt, a)], [c, d, corrupt, a], 0), []);
  });
});

/** A source agent of cluster "a" holding volume v1's backup snapshots in memory. */
class FakeSource {
  snaps: SourceSnap[] = [];
  #next = 1;
  calls: CallRequest[] = [];
  /** Run when a probe comes, after its answer was read off the volume (what happens while it travels back). */
  afterProbe: (() => Promise<void>) | null = null;
  constructor(readonly agent: FakeAgentSession) {
    agent.answer = (req) => {
      this.calls.push(req);
      if (req.$case === "probe") return this.#probe();
      if (req.$case === "snapshots") {
        const snapshots = this.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 }));
        return { $case: "snapshots", value: { snapshots } };
      }
      if (req.$case === "pruneSnapshots") {
        const ids = new Set(req.value.backupIds);
        const gone = this.snaps.filter((s) => ids.has(s.backupId)).map((s) => s.name);
        this.snaps = this.snaps.filter((s) => !ids.has(s.backupId));
        return { $case: "pruneSnapshots", value: { removed: gone, warnings: [] } };
      }
      return new AppError(Status.UNIMPLEMENTED, `no answer for ${req.$case}`);
    };
  }
  async #probe(): Promise<Answer> {
    const imageSnapshots = this.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 }));
    const hook = this.afterProbe;
    this.afterProbe = null;
    await hook?.();
    const value = { missingPools: [], missingNamespaces: [], imageExists: true, imageSize: 1, imageSnapshots };
    return { $case: "probe", value };
  }
  add(name: string, backupId: string): void {
    this.snaps.push({ name, backupId, snapId: this.#next++ });
  }
  prunes(): string[][] {
    return this.calls.flatMap((c) => (c.$case === "pruneSnapshots" ? [c.value.backupIds] : []));
  }
}

describe("snapshot hygiene: the scheduler sweeps the source after a backup or a delete", () => {
  let h: Harness;
  let src: FakeSource;
  let b1: FakeAgentSession;
  beforeEach(() => {
    h = new Harness();
    src = new FakeSource(h.connect("a1", "a"));
    b1 = h.connect("b1", "b");
  });
  afterEach(() => h.close());

  /**
   * A backup of v1 made: its snapshot on the source (the agent's own pruning plays no part here).
   * `listed`: its outcome carries the source's snapshots (JobOutcome.source_snapshots), as a current agent's does.
   */
  async function backup(listed = false): Promise<string> {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    src.add(backupResult(j.backupId).snapshot, j.backupId);
    const snapshots = listed ? src.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 })) : undefined;
    assert.equal(await h.backupDone(src.agent, j, snapshots), true);
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_SUCCEEDED);
    h.tick();
    await h.settle();
    return j.backupId;
  }

  /** remove(), its first sweep's prune failing (UNAVAILABLE): the sweep then waits for its retry. */
  async function removeWithFailedSweep(backupId: string): Promise<void> {
    let refuse = true;
    const answer = src.agent.answer;
    src.agent.answer = (req) =>
      refuse && req.$case === "pruneSnapshots" ? new AppError(Status.UNAVAILABLE, "busy") : answer(req);
    await remove(backupId);
    assert.equal(src.snaps.length, 1, "the first try failed");
    refuse = false;
  }

  async function remove(backupId: string): Promise<void> {
    const d = h.queueDelete(backupId);
    h.tick();
    const r = { removedSnapshot: "", removedBaseImage: false, removedMetadata: true, warnings: [] };
    assert.equal(h.outcome(b1, d.id, Status.OK, "", { $case: "delete", value: r }), true);
    h.tick();
    await h.settle();
  }

  it("a deleted backup's snapshot leaves the volume; the newest available one stays", async () => {
    const x = await backup();
    const y = await backup();
    assert.deepEqual(src.prunes(), [[x]], "after y, x is no longer needed (same location, max_snapshots 0)");
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [y],
    );
    await remove(y);
    assert.equal(h.backup(y).status, DELETED);
    assert.deepEqual(src.snaps, [], "the deleted backup's snapshot is gone");
    assert.deepEqual(src.prunes().at(-1), [y]);
    const asked = src.calls.filter((c) => c.$case === "pruneSnapshots").at(-1);
    assert.deepEqual(asked?.$case === "pruneSnapshots" && asked.value.image, {
      pool: "rbd",
      namespace: "",
      image: "v1",
    });
  });

  it("a term whose lease may have lapsed (HA, after a pause) sends no prune; the sweep is retried while it leads", async () => {
    const x = await backup(true);
    h.leading = false;
    const y = await backup(true);
    assert.deepEqual(src.prunes(), [], "nothing pruned by a coordinator that may no longer lead");
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [x, y],
    );
    h.leading = true;
    h.advance(5_000); // past the retry's backoff
    h.tick();
    await h.settle();
    assert.deepEqual(src.prunes(), [[x]]);
  });

  it("an outcome that lists the source's snapshots: the sweep asks nothing and prunes what the list shows", async () => {
    const x = await backup(true);
    const asked = () => src.calls.filter((c) => c.$case === "snapshots").length;
    assert.equal(asked(), 0, "the first backup's sweep decided from its outcome's list");
    assert.deepEqual(src.calls, [], "nothing to remove: no message at all");
    const y = await backup(true);
    assert.equal(asked(), 0);
    assert.deepEqual(src.prunes(), [[x]], "x is no longer needed once y is available");
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [y],
    );
    // An outcome without a list (an older agent): the sweep asks, as before.
    const z = await backup(false);
    assert.equal(asked(), 1);
    assert.deepEqual(src.prunes().at(-1), [y]);
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [z],
    );
  });

  it("only the lease holder's list counts: another agent's outcome with a list is not used", async () => {
    const x = await backup();
    const j = h.queueBackup(vol("v1"));
    h.tick();
    src.add(backupResult(j.backupId).snapshot, j.backupId);
    const r = backupResult(j.backupId);
    h.commit(h.job(j.id), r);
    // The holder reports it made, without a list (an older agent) ...
    assert.equal(h.outcome(src.agent, j.id, Status.OK, "", { $case: "backup", value: r }), true);
    // ... and before the confirmation, another agent (b1) sends an outcome of the job with an empty list,
    // which would hide x's snapshot from the sweep: refused (stale token) and not used.
    const forged = {
      jobId: j.id,
      token: "forged",
      code: Status.OK,
      message: "",
      result: { $case: "backup" as const, value: r },
      sourceSnapshots: [],
      sourceSnapshotsListed: true,
      refused: false,
    };
    assert.equal(h.scheduler.onOutcome(b1, forged), false);
    await h.settle();
    h.tick();
    await h.settle();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_SUCCEEDED);
    assert.equal(src.calls.filter((c) => c.$case === "snapshots").length, 2, "both sweeps asked the source");
    assert.deepEqual(src.prunes(), [[x]]);
  });

  it("a list that misses a snapshot never gets it removed", async () => {
    const x = await backup();
    // y's outcome lists only y's snapshot, though the source holds x's too: x stays.
    const j = h.queueBackup(vol("v1"));
    h.tick();
    src.add(backupResult(j.backupId).snapshot, j.backupId);
    const onlyY = src.snaps.filter((s) => s.backupId === j.backupId).map((s) => ({ ...s, timestamp: 1, size: 1 }));
    assert.equal(await h.backupDone(src.agent, h.job(j.id), onlyY), true);
    h.tick();
    await h.settle();
    assert.equal(h.job(j.id).state, JobState.JOB_STATE_SUCCEEDED);
    assert.deepEqual(src.prunes(), []);
    assert.ok(src.snaps.some((s) => s.backupId === x));
  });

  it("the volume's next job waits for the sweep after its previous job, then starts", async () => {
    const x = await backup();
    const d = h.queueDelete(x);
    const next = h.queueBackup(vol("v1")); // queued behind the delete (same volume lock)
    h.tick();
    h.outcome(b1, d.id, Status.OK, "", {
      $case: "delete",
      value: { removedSnapshot: "", removedBaseImage: false, removedMetadata: true, warnings: [] },
    });
    h.tick(); // the delete's sweep starts before the dispatcher looks at the queue
    assert.equal(h.job(next.id).state, JobState.JOB_STATE_QUEUED);
    assert.match(h.job(next.id).waitingReason, /snapshot sweep of its volume/);
    await h.settle();
    assert.deepEqual(src.snaps, [], "the deleted backup's snapshot went first");
    h.tick();
    assert.equal(h.job(next.id).state, JobState.JOB_STATE_RUNNING);
    const sent = src.agent.sent;
    const pruned = sent.findIndex((m) => m.$case === "call" && m.value.request?.$case === "pruneSnapshots");
    const leased = sent.findIndex((m) => m.$case === "lease" && m.value.jobId === next.id);
    assert.ok(pruned >= 0 && leased > pruned, `the sweep (${pruned}) before the next job's lease (${leased})`);
  });

  it("back-to-back backups of a volume never pile up its snapshots", async () => {
    const jobs = [0, 1, 2, 3].map(() => h.queueBackup(vol("v1")));
    const most: number[] = [];
    for (const j of jobs) {
      for (let i = 0; i < 3 && h.job(j.id).state === JobState.JOB_STATE_QUEUED; i++) {
        h.tick();
        await h.settle();
      }
      assert.equal(h.job(j.id).state, JobState.JOB_STATE_RUNNING, `job ${jobs.indexOf(j)} leased`);
      src.add(backupResult(j.backupId).snapshot, j.backupId);
      most.push(src.snaps.length);
      const listed = src.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 }));
      assert.equal(await h.backupDone(src.agent, h.job(j.id), listed), true);
      assert.equal(h.job(j.id).state, JobState.JOB_STATE_SUCCEEDED);
    }
    h.tick();
    await h.settle();
    assert.deepEqual(most, [1, 2, 2, 2], "while each backup ran: its own snapshot and its parent's");
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [jobs[3]?.backupId],
    );
  });

  it("a sweep that falls due while a backup of the volume runs waits for that backup's end", async () => {
    const x = await backup();
    await removeWithFailedSweep(x);
    const running = h.queueBackup(vol("v1"));
    h.tick(); // the retry is not due yet: the backup starts
    assert.equal(h.job(running.id).state, JobState.JOB_STATE_RUNNING);
    h.advance(5_000); // past the retry's backoff (2 s, jittered), inside the lease
    h.tick();
    await h.settle();
    assert.equal(h.job(running.id).state, JobState.JOB_STATE_RUNNING);
    assert.equal(src.snaps.length, 1, "not swept while the backup runs");
    src.add(backupResult(running.backupId).snapshot, running.backupId);
    await h.backupDone(src.agent, h.job(running.id));
    h.tick();
    await h.settle();
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [running.backupId],
    );
  });

  it("a sweep waiting for its retry while a restore onto the volume starts runs after the restore's end, not beside it", async () => {
    const y = await backup();
    const x = await backup();
    await removeWithFailedSweep(x);
    const restore = h.queueRestore(y, vol("v1"));
    h.tick(); // the retry is not due yet: the restore starts (the sweep holds no lock while it waits)
    assert.equal(h.job(restore.id).state, JobState.JOB_STATE_RUNNING);
    const asked = src.calls.length;
    h.advance(5_000); // past the retry's backoff (2 s, jittered), inside the lease
    h.tick();
    await h.settle();
    assert.equal(src.calls.length, asked, "the source is not asked anything while the restore writes the volume");
    const r = RestoreResult.fromPartial({ imageSize: 1 });
    assert.equal(h.outcome(b1, restore.id, Status.OK, "", { $case: "restore", value: r }), true);
    h.tick(); // the restore's confirmation (it ends the job)
    await h.settle();
    assert.equal(h.job(restore.id).state, JobState.JOB_STATE_SUCCEEDED);
    h.tick(); // its end kicked this one
    await h.settle();
    assert.deepEqual(src.snaps, [], "swept after the restore");
  });

  /** x, an available backup of v1 with a digest map (SOURCE verifiable); its snapshot is on the source. */
  async function verifiable(): Promise<string> {
    const x = await backup(true);
    h.catalog.updateBackup({
      ...h.backup(x),
      integrity: BackupIntegrity.fromPartial({ imageDigest: "ab".repeat(32), digestBlockSize: 65536 }),
    });
    return x;
  }

  /** A backup of v1 leased and its snapshot made, not yet reported. */
  function leasedBackup(): JobRecord {
    const j = h.queueBackup(vol("v1"));
    h.tick();
    src.add(backupResult(j.backupId).snapshot, j.backupId);
    return j;
  }

  it("SOURCE verify: a sweep that starts while VerifyBackup probes keeps the snapshot the probe found", async () => {
    const served = await serveHarness(h);
    try {
      const x = await verifiable();
      const y = leasedBackup();
      // While the probe's answer (x's snapshot is there) travels back, y ends: its sweep would remove x's
      // snapshot (same location, max_snapshots 0), before the VERIFY job that reads it is in the catalog.
      src.afterProbe = async () => {
        const listed = src.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 }));
        assert.equal(await h.backupDone(src.agent, h.job(y.id), listed), true);
        h.tick();
        await h.settle();
      };
      const job = await served.api.verifyBackup({
        backupId: x,
        mode: VerifyMode.VERIFY_MODE_SOURCE,
        samplePercent: 0,
        idempotencyKey: "",
      });
      assert.equal(h.job(y.id).state, JobState.JOB_STATE_SUCCEEDED, "y ended during the probe");
      assert.equal(h.job(job.id).backupId, x, "the VERIFY job was admitted");
      assert.deepEqual(src.prunes(), [], "x's snapshot was not pruned under the verification");
      assert.ok(src.snaps.some((s) => s.backupId === x));
    } finally {
      await served.close();
    }
  });

  it("SOURCE verify: admission waits for a sweep of the volume in flight, then sees what it left", async () => {
    const served = await serveHarness(h);
    try {
      const x = await verifiable();
      const y = leasedBackup();
      // y's sweep decides to remove x and sends the prune, whose answer is held.
      let answerPrune = null as (() => void) | null;
      const answer = src.agent.answer;
      src.agent.answer = (req) =>
        req.$case === "pruneSnapshots"
          ? new Promise<Answer>((resolve) => {
              answerPrune = () => resolve(answer(req) as Answer);
            })
          : answer(req);
      const listed = src.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 }));
      assert.equal(await h.backupDone(src.agent, h.job(y.id), listed), true);
      h.tick();
      await until(() => answerPrune !== null, "the sweep's prune sent");
      // Not admitted while that sweep runs: the hold waits for it (a hold that did not would resolve
      // within this turn's microtasks).
      const order: string[] = [];
      const held = h.scheduler.holdForVerify(x, vol("v1"), new AbortController().signal).then((release) => {
        order.push("held");
        return release;
      });
      await new Promise((r) => setImmediate(r));
      order.push("pruned");
      answerPrune?.();
      (await held)();
      assert.deepEqual(order, ["pruned", "held"]);
      // Through the API: the probe sees x's snapshot gone, so the call is refused, no job queued.
      const before = h.catalog.activeJobs().length;
      const err = await served.api
        .verifyBackup({ backupId: x, mode: VerifyMode.VERIFY_MODE_SOURCE, samplePercent: 0, idempotencyKey: "" })
        .then(
          () => assert.fail("admitted"),
          (e: { code: Status; details: string }) => e,
        );
      assert.equal(err.code, Status.FAILED_PRECONDITION);
      assert.match(err.details, /no longer holds snapshot/);
      assert.equal(h.catalog.activeJobs().length, before);
    } finally {
      await served.close();
    }
  });

  it("SOURCE verify: while held the snapshot stays; once released a later sweep may remove it", async () => {
    const x = await verifiable();
    const release = await h.scheduler.holdForVerify(x, vol("v1"), new AbortController().signal);
    const y = leasedBackup();
    const listed = () => src.snaps.map((s) => ({ ...s, timestamp: 1, size: 1 }));
    assert.equal(await h.backupDone(src.agent, h.job(y.id), listed()), true);
    h.tick();
    await h.settle();
    assert.deepEqual(src.prunes(), [], "held: x stays though y replaced it");
    release();
    release(); // a second call changes nothing
    const z = leasedBackup();
    assert.equal(await h.backupDone(src.agent, h.job(z.id), listed()), true);
    h.tick();
    await h.settle();
    assert.deepEqual(
      src.snaps.map((s) => s.backupId),
      [z.backupId],
      "released: x and y go once z is available",
    );
  });

  it("a backup's lease and its sweep read a few rows, not the volume's DELETED history", async () => {
    // Three years of hourly runs leave ~26k DELETED rows of a volume; here 300, older than what follows.
    for (let i = 0; i < 300; i++) {
      h.catalog.insertBackup({ ...newBackup(vol("v1"), "b", h.t - 1e9 + i), status: DELETED, jobId: randomUUID() });
    }
    const c = h.catalog;
    let rows = 0;
    const byVolume = c.backupsOfVolume.bind(c);
    const listing = c.listBackups.bind(c);
    c.backupsOfVolume = (...a: Parameters<typeof c.backupsOfVolume>) => {
      const r = byVolume(...a);
      rows += r.length;
      return r;
    };
    c.listBackups = (...a: Parameters<typeof c.listBackups>) => {
      const r = listing(...a);
      rows += r.items.length;
      return r;
    };
    const x = await backup(true);
    const y = await backup(true);
    assert.deepEqual(src.prunes(), [[x]], "the sweep still decides as before");
    assert.ok(h.backup(y).status === AVAILABLE);
    assert.ok(rows <= 40, `rows read for two backups: ${rows} (the history is 300)`);
  });

  it("a source snapshot naming another volume's DELETED backup stays (only the volume's backups are judged)", async () => {
    const other = { ...newBackup(vol("v2"), "b", h.t), status: DELETED };
    h.catalog.insertBackup(other);
    src.add(backupSnapName(other.id), other.id);
    await backup(true);
    assert.deepEqual(src.prunes(), []);
    assert.ok(src.snaps.some((s) => s.backupId === other.id));
  });

  it("no agent of the source cluster: tried again after a backoff, then done", async () => {
    const x = await backup();
    h.disconnect(src.agent);
    await remove(x);
    assert.equal(src.snaps.length, 1);
    assert.ok(h.log.lines.some((l) => l.msg === "source snapshot sweep failed; trying again"));
    h.sessions.add(src.agent);
    h.tick();
    await h.settle();
    assert.equal(src.snaps.length, 1, "not before the backoff");
    h.advance(2_000);
    h.tick();
    await h.settle();
    assert.deepEqual(src.snaps, []);
  });
});
