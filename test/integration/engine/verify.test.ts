/**
 * Digest maps and verification against real clusters: a full backup (site-a → site-b) and an
 * incremental (with writes that cover blocks only in part, so the sink reads some back) each verify OK
 * in every mode — METADATA, SAMPLE, FULL on the backup's cluster, SOURCE on the source's. Then one data
 * object of the base image is overwritten behind rbdbackup's back (`rados put`): FULL and SAMPLE 100
 * report not ok naming that object's first block; METADATA still passes (it reads no data). Deleting
 * the backups removes their digest maps. The VERIFY operation runs in this process (engine/verify.ts);
 * its lease wiring is covered by the agent's unit tests.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { type Cluster, isCephError } from "../../../agents/ceph";
import type { EngineContext } from "../../../agents/engine/context";
import { newProgress } from "../../../agents/engine/progress";
import { verifyBackup } from "../../../agents/engine/verify";
import { decodeDigestMap, digestsObjectName, mapDigest } from "../../../agents/transfer/digests";
import { Status, statusOf } from "../../../src/common/errors";
import { logger } from "../../../src/common/log";
import { type BackupResult, VerifyMode, VerifyRequest } from "../../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import { type RunningAgent, startAgents } from "../../helpers/agents";
import { connectLab, labCluster, rbdJson } from "../../helpers/lab";
import { MiB, Volumes } from "../../helpers/volumes";

const execFileP = promisify(execFile);
const OBJECT = 4 * MiB;
const CORRUPT_OBJECT = 5;

describe("digest maps and VERIFY", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  let siteA: Cluster;
  let siteB: Cluster;
  const vols = new Volumes();
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-verify-"));
  const results: BackupResult[] = [];
  let vol: ImageRef;

  const ctxOf = (cluster: Cluster) => ({ cluster, log: logger({ test: "verify" }) }) as unknown as EngineContext;
  const backup = async () => {
    const r = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
    });
    results.push(r);
    return r;
  };
  const verify = (r: BackupResult, mode: VerifyMode, over: Partial<VerifyRequest> = {}) =>
    verifyBackup(
      ctxOf(mode === VerifyMode.VERIFY_MODE_SOURCE ? siteA : siteB),
      VerifyRequest.fromPartial({
        backupId: r.backupId,
        mode,
        samplePercent: 50,
        backupPool: "backups",
        baseImage: r.baseImage,
        snapshot: r.snapshot,
        imageDigest: r.imageDigest,
        ...over,
      }),
      AbortSignal.timeout(300_000),
      newProgress(),
    );
  const storedMap = async (id: string) => {
    const io = await siteB.openIoCtx("backups");
    try {
      return await io.objRead(digestsObjectName(id));
    } finally {
      await io.close();
    }
  };
  const everyModeOk = async (r: BackupResult) => {
    const map = await storedMap(r.backupId);
    for (const [mode, over] of [
      [VerifyMode.VERIFY_MODE_METADATA, {}],
      [VerifyMode.VERIFY_MODE_SAMPLE, {}],
      [VerifyMode.VERIFY_MODE_FULL, {}],
      [VerifyMode.VERIFY_MODE_SOURCE, { source: vol, digestMap: map }],
    ] as const) {
      const v = await verify(r, mode, over);
      assert.equal(v.ok, true, `${VerifyMode[mode]}: ${v.reason}`);
      assert.equal(v.badBlocks, 0);
      if (mode === VerifyMode.VERIFY_MODE_FULL || mode === VerifyMode.VERIFY_MODE_SOURCE) {
        assert.equal(v.bytesRead, r.imageSize, `${VerifyMode[mode]} reads the whole image`);
      }
    }
  };

  before(async () => {
    [a, b] = (await startAgents("site-a", "site-b")) as [RunningAgent, RunningAgent];
    [siteA, siteB] = await Promise.all([connectLab("site-a"), connectLab("site-b")]);
  });

  after(async () => {
    for (const r of [...results].reverse()) {
      await b.client.deleteBackup({ backupId: r.backupId, pool: "backups" }).catch(() => {});
    }
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
    await Promise.all([siteA?.close(), siteB?.close()]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it("a full backup writes its map (digest and block size in the result) and verifies OK in every mode", async () => {
    vol = await vols.create("site-a", "rbd", 40, 30);
    // The object the last test corrupts holds data in every block (so SAMPLE has its first block too).
    const img = await (await vols.io("site-a", "rbd")).imageOpen(vol.image);
    try {
      await img.write(randomBytes(OBJECT), CORRUPT_OBJECT * OBJECT);
      await img.flush();
    } finally {
      await img.close();
    }
    const r = await backup();
    assert.equal(r.digestBlockSize, 64 * 1024);
    const map = await storedMap(r.backupId);
    assert.equal(r.imageDigest, mapDigest(map));
    const m = decodeDigestMap(map);
    assert.equal(m.imageSize, 40 * MiB);
    assert.ok(m.indices.length > 0);
    await everyModeOk(r);
  });

  it("an incremental (partial-block writes, a grow) overlays its parent's map and verifies OK in every mode", async () => {
    const io = await vols.io("site-a", "rbd");
    const img = await io.imageOpen(vol.image);
    try {
      await img.resize(44 * MiB);
      await img.write(randomBytes(4096), 100 * 1024 + 512); // inside a data block: read back
      await img.write(randomBytes(70 * 1024), OBJECT + 30 * 1024);
      await img.write(randomBytes(8192), 42 * MiB + 4096); // the grown part
      await img.discard(2 * OBJECT, 256 * 1024);
      await img.flush();
    } finally {
      await img.close();
    }
    const r = await backup();
    assert.equal(r.incremental, true);
    assert.equal(r.digestBlockSize, 64 * 1024);
    assert.equal(r.imageDigest, mapDigest(await storedMap(r.backupId)));
    await everyModeOk(r);
  });

  it("a data object overwritten with rados put: FULL and SAMPLE 100 name its first block; METADATA passes", async () => {
    const full = results[0] as BackupResult;
    const info = await rbdJson<{ id: string; object_size: number }>("site-b", ["info", `backups/${full.baseImage}`]);
    assert.equal(info.object_size, OBJECT);
    const oid = `rbd_data.${info.id}.${CORRUPT_OBJECT.toString(16).padStart(16, "0")}`;
    const file = path.join(tmp, "garbage");
    writeFileSync(file, randomBytes(OBJECT));
    const c = labCluster("site-b");
    await execFileP("rados", ["-c", c.conf, "-p", "backups", "put", oid, file], { timeout: 120_000 });
    for (const [mode, pct] of [
      [VerifyMode.VERIFY_MODE_FULL, 0],
      [VerifyMode.VERIFY_MODE_SAMPLE, 100],
    ] as const) {
      const v = await verify(full, mode, { samplePercent: pct });
      assert.equal(v.ok, false, VerifyMode[mode]);
      assert.equal(v.firstBadOffset, CORRUPT_OBJECT * OBJECT, `${VerifyMode[mode]}: ${v.reason}`);
      assert.equal(v.firstBadLength, 64 * 1024);
      assert.ok(v.badBlocks >= 1);
      assert.match(
        v.reason,
        new RegExp(`block ${(CORRUPT_OBJECT * OBJECT) / (64 * 1024)} at ${CORRUPT_OBJECT * OBJECT}`),
      );
    }
    const meta = await verify(full, VerifyMode.VERIFY_MODE_METADATA);
    assert.equal(meta.ok, true, meta.reason);
    const wrongDigest = await verify(full, VerifyMode.VERIFY_MODE_METADATA, { imageDigest: "0".repeat(64) });
    assert.equal(wrongDigest.ok, false);
    assert.match(wrongDigest.reason, /hashes to/);
  });

  it("a backup without a digest map (made before maps): METADATA passes with a warning; SAMPLE and FULL are FAILED_PRECONDITION", async () => {
    vol = await vols.create("site-a", "rbd", 8, 4);
    const r = await backup();
    const io = await siteB.openIoCtx("backups");
    try {
      await io.objRemove(digestsObjectName(r.backupId));
    } finally {
      await io.close();
    }
    const nomap = { imageDigest: "" }; // the catalog of a backup made before maps has no digest either
    const v = await verify(r, VerifyMode.VERIFY_MODE_METADATA, nomap);
    assert.equal(v.ok, true, v.reason);
    assert.match(
      v.warnings.join("\n"),
      /has no digest map .*: its snapshot and metadata object were checked, not its data/,
    );
    assert.equal(v.bytesRead, 0);
    for (const mode of [VerifyMode.VERIFY_MODE_SAMPLE, VerifyMode.VERIFY_MODE_FULL]) {
      await assert.rejects(verify(r, mode, nomap), (e: unknown) => {
        assert.equal(statusOf(e), Status.FAILED_PRECONDITION, String(e));
        return true;
      });
    }
  });

  it("deleting the backups removes their digest maps", async () => {
    for (const r of [...results].reverse()) {
      await b.client.deleteBackup({ backupId: r.backupId, pool: "backups" });
      await assert.rejects(storedMap(r.backupId), (e) => isCephError(e, "ENOENT"));
    }
    results.length = 0;
  });
});
