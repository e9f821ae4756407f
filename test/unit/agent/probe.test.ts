/**
 * AgentOperations.probe against the engine's fake cluster (test/unit/engine/fake-cluster.ts): the API
 * waits on this probe before it queues a backup, so the volume is opened once for its size and its
 * backup snapshots; a missing volume or pool is reported, not thrown.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { AgentOperations } from "../../../agents/agent/operations";
import { digestsObjectName } from "../../../agents/transfer/digests";
import { backupSnapName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import { SESSION_MAX_MESSAGE_BYTES } from "../../../src/common/session-limits";
import { FakeBackupCluster } from "../engine/fake-cluster";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => quiet };

describe("probe", () => {
  it("a volume: its size and its backup snapshots (oldest first) from one open; foreign snapshots left out", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const a = backupSnapName("11111111-1111-4111-8111-111111111111", 1_000_000);
    const b = backupSnapName("22222222-2222-4222-8222-222222222222", 2_000_000);
    vol.addSnap(a);
    vol.addSnap("someone-elses");
    vol.addSnap(b);
    const ops = new AgentOperations(fc.context(quiet), () => true);
    const r = await ops.probe({
      pools: [],
      namespaces: [],
      image: { pool: "rbd", namespace: "", image: "vol" },
      keepOpen: false,
      checkTrash: false,
    });
    assert.equal(r.imageExists, true);
    assert.equal(r.imageSize, vol.size);
    assert.deepEqual(
      r.imageSnapshots.map((s) => [s.name, s.snapId]),
      [
        [a, 1],
        [b, 3],
      ],
    );
    assert.equal(r.imageSnapshots[0]?.backupId, "11111111-1111-4111-8111-111111111111");
    assert.equal(vol.opened, 1, "the volume is opened once");
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0], "everything closed");
  });

  it("a volume that does not exist, or a pool that does not: reported, nothing thrown", async () => {
    const fc = new FakeBackupCluster();
    const ops = new AgentOperations(fc.context(quiet), () => true);
    const gone = await ops.probe({
      pools: [],
      namespaces: [],
      image: { pool: "rbd", namespace: "", image: "gone" },
      keepOpen: false,
      checkTrash: false,
    });
    assert.deepEqual(
      [gone.imageExists, gone.imageSize, gone.imageSnapshots, gone.imageInTrash],
      [false, 0, [], undefined],
    );
    const noPool = await ops.probe({
      pools: ["nopool"],
      namespaces: [],
      image: { pool: "nopool", namespace: "", image: "v" },
      keepOpen: false,
      checkTrash: false,
    });
    assert.deepEqual(noPool.missingPools, ["nopool"]);
    assert.equal(noPool.imageExists, false);
    assert.equal(fc.ioOpen, 0);
  });

  it("asked to, a probe says whether a missing volume is in the trash (it keeps its snapshots); a trash that cannot be listed leaves it unknown", async () => {
    const fc = new FakeBackupCluster();
    const ops = new AgentOperations(fc.context(quiet), () => true);
    const probe = (checkTrash = true) =>
      ops.probe({
        pools: [],
        namespaces: [],
        image: { pool: "rbd", namespace: "", image: "trashed" },
        keepOpen: false,
        checkTrash,
      });
    fc.trash = ["other", "trashed"];
    assert.deepEqual([(await probe()).imageExists, (await probe()).imageInTrash], [false, true]);
    assert.equal((await probe(false)).imageInTrash, undefined, "not asked: the trash is not read");
    fc.trash = ["other"];
    assert.equal((await probe()).imageInTrash, false);
    // A namespace no longer listed (a failed `rbd namespace rm`): its trash is still asked.
    fc.trash = ["trashed"];
    const inGoneNs = await ops.probe({
      pools: [],
      namespaces: [],
      image: { pool: "rbd", namespace: "ns", image: "trashed" },
      keepOpen: false,
      checkTrash: true,
    });
    assert.deepEqual([inGoneNs.missingNamespaces, inGoneNs.imageInTrash], [["rbd/ns"], true]);
    fc.trash = new Error("permission denied");
    const unknown = await probe();
    assert.deepEqual([unknown.imageExists, unknown.imageInTrash], [false, undefined]);
    assert.equal(fc.ioOpen, 0);
  });

  it("DigestMap: the stored map; none; one over what the coordinator session carries → FAILED_PRECONDITION, not sent", async () => {
    const fc = new FakeBackupCluster();
    const ops = new AgentOperations(fc.context(quiet), () => true);
    const id = "33333333-3333-4333-8333-333333333333";
    const ask = () => ops.digestMap({ pool: "rbd", namespace: "", backupId: id });
    assert.deepEqual(await ask(), { found: false, map: Buffer.alloc(0) });
    fc.objects.set(digestsObjectName(id), Buffer.alloc(4096, 7));
    const small = await ask();
    assert.equal(small.found, true);
    assert.equal(Buffer.compare(Buffer.from(small.map), Buffer.alloc(4096, 7)), 0);
    // A volume that outgrew its chain's map: sent on the session, it would end the session itself.
    fc.objects.set(digestsObjectName(id), Buffer.alloc(SESSION_MAX_MESSAGE_BYTES));
    await assert.rejects(ask(), {
      code: Status.FAILED_PRECONDITION,
      details: new RegExp(`digest map of backup ${id} is 16777216 bytes, over what the coordinator session carries`),
    });
    await assert.rejects(ops.digestMap({ pool: "rbd", namespace: "", backupId: "nope" }), {
      code: Status.INVALID_ARGUMENT,
    });
    assert.equal(fc.ioOpen, 0, "every IoCtx closed");
  });
});
