/**
 * The other operations against real clusters: file sources (sparse, offsets kept across zero
 * blocks), deletion in any order, the metadata object, and cancellation.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ClientError, createChannel, createClient, Metadata, Status } from "nice-grpc";
import { isCephError } from "../../../agents/ceph";
import { CAPABILITY_HEADER } from "../../../src/common/capability";
import { backupTransferAllows, ownChain } from "../../../src/common/grants";
import { channelCredentials, tlsChannelOptions } from "../../../src/common/tls";
import { type BackupResult, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import { TransferServiceDefinition } from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls } from "../../../src/lab/agent-process";
import { labMinter, type RunningAgent, startAgent, startAgents } from "../../helpers/agents";
import { scrape } from "../../helpers/coordinator";
import { rbd, rbdJson, uniqueName } from "../../helpers/lab";
import { sample } from "../../helpers/metrics";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { waitFor } from "../../helpers/wait";

describe("operations", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  const vols = new Volumes();
  const tmp = mkdtempSync(path.join(tmpdir(), "rbdbackup-ops-"));

  const backupOf = (vol: ImageRef, extra: Record<string, unknown> = {}) =>
    a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
      ...extra,
    });
  const restoreNew = async (r: BackupResult, o: { skipImageMeta?: boolean } = {}) => {
    const target = { pool: "rbd", namespace: "", image: uniqueName("restored") };
    vols.track("site-a", "rbd", target.image);
    const rr = await b.client.restore({
      backupId: r.backupId,
      backupPool: "backups",
      targetAgent: { address: a.transferAddress, clusterFsid: a.fsid },
      target,
      mode: RestoreMode.RESTORE_MODE_NEW,
      ...o,
    });
    return { target, rr };
  };

  before(async () => {
    [a, b] = (await startAgents("site-a", "site-b")) as [RunningAgent, RunningAgent];
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it("TransferService answers on the agent's transfer address only: UNIMPLEMENTED on its main port", async () => {
    const tls = labTls("agent-site-a");
    const channels = [b.transferAddress, b.address].map((address) =>
      createChannel(address, channelCredentials(tls), tlsChannelOptions(address, tls)),
    );
    const [dataPlane, main] = channels.map((ch) => createClient(TransferServiceDefinition, ch));
    const req = { pool: "backups", namespace: "", volumeImage: uniqueName("none") };
    try {
      assert.notEqual(b.transferAddress, b.address);
      const backupId = randomUUID();
      const cap = labMinter().mint("transfer", {
        ...backupTransferAllows({ backupId, ...req, fsid: b.fsid, chains: [ownChain(req.volumeImage, backupId)] }),
        toAgent: "agent-site-b",
      });
      const withCap = { metadata: Metadata({ [CAPABILITY_HEADER]: cap }) };
      assert.deepEqual(await dataPlane?.listChains(req, withCap), { chains: [], clusterFsid: b.fsid });
      await assert.rejects(main?.listChains(req) as Promise<unknown>, { code: Status.UNIMPLEMENTED });
    } finally {
      for (const ch of channels) ch.close();
    }
  });

  it("a file with zero blocks between data blocks: byte-identical restore, zero blocks never written", async () => {
    // 8 objects of 4 MiB: data, zeros, zeros, data (small, unaligned), zeros, zeros, zeros, data (partial tail).
    const size = 7 * 4 * MiB + 1234567;
    const file = Buffer.alloc(size);
    randomBytes(4 * MiB).copy(file, 0);
    randomBytes(70_001).copy(file, 3 * 4 * MiB + 12_345);
    randomBytes(1234567).copy(file, 7 * 4 * MiB);
    const p = path.join(tmp, "disk.img");
    writeFileSync(p, file);
    const name = uniqueName("file-vol");
    const r = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "path", value: p },
      sourceName: name,
      destination: { address: b.transferAddress, clusterFsid: "" },
      destinationPool: "backups",
    });
    assert.equal(r.incremental, false);
    assert.equal(r.imageSize, size);
    assert.ok(r.dataBytesSent < 4 * MiB + 200_000 + 1234567, `sent ${r.dataBytesSent} data bytes`);
    // The base image is thin: only the 3 objects with data are allocated.
    const du = await rbdJson<{ images: Array<{ name: string; snapshot?: string; used_size: number }> }>("site-b", [
      "du",
      `backups/${r.baseImage}@${r.snapshot}`,
    ]);
    const used = du.images.find((i) => i.snapshot === r.snapshot)?.used_size ?? du.images[0]?.used_size;
    // Three objects hold data; the five all-zero objects were never written.
    assert.ok(used !== undefined && used <= 3 * 4 * MiB && used >= 4 * MiB + 1234567, `base image uses ${used} bytes`);
    const { target } = await restoreNew(r);
    assert.equal(await sha("site-a", spec(target)), `${createHash("sha256").update(file).digest("hex")}:${size}`);
    vols.track("site-b", "backups", r.baseImage);
  });

  for (const order of ["newest first", "oldest first"] as const) {
    it(`deleting backups ${order} keeps the others restorable; the last delete removes the base image and metadata`, async () => {
      const vol = await vols.create("site-a", "rbd", 24, 12);
      const chain: Array<{ r: BackupResult; sha: string }> = [];
      for (let i = 0; i < 3; i++) {
        if (i > 0) await vols.change(vol, "site-a", { writes: 8, discards: 2 });
        const r = await backupOf(vol);
        chain.push({ r, sha: await sha("site-a", spec(vol, r.snapshot)) });
      }
      const base = chain[0]?.r.baseImage as string;
      const ids = chain.map((c) => c.r.backupId);
      const sequence = order === "newest first" ? [...chain].reverse() : [...chain];
      for (let k = 0; k < sequence.length; k++) {
        const victim = sequence[k] as (typeof chain)[number];
        const d = await b.client.deleteBackup({ backupId: victim.r.backupId, pool: "backups" });
        assert.equal(d.removedSnapshot, victim.r.snapshot);
        assert.equal(d.removedMetadata, true);
        assert.equal(d.removedBaseImage, k === sequence.length - 1);
        assert.equal((await b.client.getBackupMetadata({ backupId: victim.r.backupId, pool: "backups" })).found, false);
        for (const left of sequence.slice(k + 1)) {
          const { target } = await restoreNew(left.r);
          assert.equal(
            await sha("site-a", spec(target)),
            left.sha,
            `backup ${ids.indexOf(left.r.backupId) + 1} after deleting ${k + 1}`,
          );
        }
      }
      assert.equal(await vols.exists("site-b", "backups", base), false);
    });
  }

  it("delete: a missing base image or pool is a warning, the metadata still goes; a busy image is retried", async () => {
    const vol = await vols.create("site-a", "rbd", 8, 4);
    const r = await backupOf(vol);
    await rbd("site-b", ["snap", "purge", `backups/${r.baseImage}`]);
    await rbd("site-b", ["rm", `backups/${r.baseImage}`]);
    const d = await b.client.deleteBackup({ backupId: r.backupId, pool: "backups" });
    assert.equal(d.removedMetadata, true);
    assert.match(d.warnings.join("\n"), /not found/);
    const noPool = await b.client.deleteBackup({ backupId: randomUUID(), pool: "no-such-pool" });
    assert.match(noPool.warnings.join("\n"), /pool no-such-pool not found/);
    assert.equal(noPool.removedMetadata, false);

    // Busy: another client has the base image open while its last backup is deleted.
    const r2 = await backupOf(vol);
    const io = await vols.io("site-b", "backups");
    const holder = await io.imageOpen(r2.baseImage);
    const deleting = b.client.deleteBackup({ backupId: r2.backupId, pool: "backups" });
    // The delete removes the backup's snapshot, then finds the base image busy and retries.
    await waitFor(
      async () =>
        !(await rbdJson<Array<{ name: string }>>("site-b", ["snap", "ls", `backups/${r2.baseImage}`])).some((x) =>
          x.name.includes(r2.backupId),
        ),
      { what: "the delete to remove the backup's snapshot (then retry on the busy base image)" },
    );
    await holder.close();
    const d2 = await deleting;
    assert.equal(d2.removedBaseImage, true);
    assert.equal(await vols.exists("site-b", "backups", r2.baseImage), false);
  });

  it("a shrink and a regrow between two backups: the regrown tail restores as zeros", async () => {
    const vol = await vols.create("site-a", "rbd", 32, 0);
    const io = await vols.io("site-a", "rbd");
    let img = await io.imageOpen(vol.image);
    await img.write(randomBytes(32 * MiB), 0);
    await img.close();
    const r1 = await backupOf(vol);
    img = await io.imageOpen(vol.image);
    await img.resize(16 * MiB);
    await img.resize(32 * MiB);
    await img.write(randomBytes(4096), 100);
    await img.close();
    const r2 = await backupOf(vol);
    assert.equal(r2.incremental, true);
    assert.equal(r2.zeroBytes, 16 * MiB, "the regrown half travels as a zero range");
    assert.equal(
      await sha("site-b", `backups/${r2.baseImage}@${r2.snapshot}`),
      await sha("site-a", spec(vol, r2.snapshot)),
    );
    const { target } = await restoreNew(r2);
    assert.equal(await sha("site-a", spec(target)), await sha("site-a", spec(vol, r2.snapshot)));
    vols.track("site-b", "backups", r1.baseImage);
  });

  it("a volume that is a clone (a volume made from an image): its full backup carries the parent's data, the restore is byte-identical", async () => {
    const parent = await vols.create("site-a", "rbd", 24, 12, "image");
    const io = await vols.io("site-a", "rbd");
    let img = await io.imageOpen(parent.image);
    await img.snapCreate("golden");
    await img.snapProtect("golden");
    await img.close();
    const clone = { pool: "rbd", namespace: "", image: uniqueName("from-image") };
    await io.imageClone(parent.image, "golden", io, clone.image, { cloneFormat: 2 });
    vols.track("site-a", "rbd", clone.image);
    img = await io.imageOpen(clone.image);
    const st = await img.stat();
    assert.ok(st.parentOverlap > 0, "a clone");
    await img.write(randomBytes(64 * 1024), 5 * MiB + 4096); // a little of its own; the rest reads through
    await img.close();
    const r1 = await backupOf(clone);
    vols.track("site-b", "backups", r1.baseImage);
    assert.equal(r1.incremental, false);
    assert.ok(
      r1.dataBytesSent > MiB,
      `the parent's data travelled, not only the clone's 64 KiB (${r1.dataBytesSent} bytes)`,
    );
    const want = await sha("site-a", spec(clone, r1.snapshot));
    assert.equal(await sha("site-b", `backups/${r1.baseImage}@${r1.snapshot}`), want);
    const { target } = await restoreNew(r1);
    assert.equal(await sha("site-a", spec(target)), want);
    // An incremental of the clone: its own changes only.
    await vols.change(clone, "site-a", { writes: 2, maxWrite: 64 * 1024 });
    const r2 = await backupOf(clone);
    assert.equal(r2.incremental, true);
    assert.ok(r2.dataBytesSent < 4 * MiB, `only the clone's changes travelled (${r2.dataBytesSent} bytes)`);
    assert.equal(
      await sha("site-b", `backups/${r2.baseImage}@${r2.snapshot}`),
      await sha("site-a", spec(clone, r2.snapshot)),
    );
  });

  it("max_snapshots = 1 with 3 backup snapshots on the volume removes exactly the two oldest", async () => {
    const vol = await vols.create("site-a", "rbd", 8, 4);
    const r1 = await backupOf(vol, { maxSnapshots: 5 });
    const r2 = await backupOf(vol, { maxSnapshots: 5 });
    assert.deepEqual(r2.sourceSnapshotsRemoved, []);
    const r3 = await backupOf(vol, { maxSnapshots: 1 });
    assert.deepEqual(r3.sourceSnapshotsRemoved, [r1.snapshot, r2.snapshot]);
    assert.deepEqual(await vols.snapNames("site-a", vol), [r3.snapshot]);
  });

  it("metadata: written once, read back, returned and re-applied on restore; an unknown version fails clearly", async () => {
    const vol = await vols.create("site-a", "rbd", 8, 4);
    const srcIo = await vols.io("site-a", "rbd");
    const img = await srcIo.imageOpen(vol.image);
    await img.metaSet("conf_rbd_qos_iops_limit", "500");
    await img.metaSet("user.team", "storage");
    await img.metaSet("rbd.csi.ceph.com/thick-provisioned", "false"); // a key with "/" (Ceph-CSI's)
    await img.close();
    const r = await backupOf(vol, { volumeId: "cinder-vol-7", volumeMetadata: { env: "prod", tier: "gold" } });
    const m = await b.client.getBackupMetadata({ backupId: r.backupId, pool: "backups" });
    assert.equal(m.found, true);
    const meta = JSON.parse(m.json);
    assert.equal(meta.version, 1);
    assert.equal(meta.backup_id, r.backupId);
    assert.deepEqual(meta.volume, { id: "cinder-vol-7", metadata: { env: "prod", tier: "gold" } });
    assert.equal(meta.image.size, 8 * MiB);
    const imageMeta = {
      conf_rbd_qos_iops_limit: "500",
      "user.team": "storage",
      "rbd.csi.ceph.com/thick-provisioned": "false",
    };
    assert.deepEqual(meta.image.image_meta, imageMeta);
    assert.equal((await b.client.getBackupMetadata({ backupId: randomUUID(), pool: "backups" })).found, false);

    // Written once: a second exclusive create is refused and the content stays.
    const io = await vols.io("site-b", "backups");
    const oid = `backup.${r.backupId}.meta`;
    const before = await io.objRead(oid);
    await assert.rejects(io.objCreateExclusive(oid, Buffer.from("{}")), (e: unknown) => isCephError(e, "EEXIST"));
    assert.deepEqual(await io.objRead(oid), before);

    const { target, rr } = await restoreNew(r);
    assert.equal(rr.volumeId, "cinder-vol-7");
    assert.deepEqual(rr.volumeMetadata, { env: "prod", tier: "gold" });
    const applied = await rbdJson<Record<string, string>>("site-a", ["image-meta", "list", spec(target)]);
    assert.deepEqual(applied, imageMeta);
    // skip_image_meta (the Cinder driver: the target volume's type owns its QoS): none applied.
    const bare = await restoreNew(r, { skipImageMeta: true });
    const bareImg = await (await vols.io("site-a", "rbd")).imageOpen(bare.target.image);
    try {
      assert.deepEqual(await bareImg.metaList(), {}); // (`rbd image-meta list` prints nothing then)
    } finally {
      await bareImg.close();
    }
    assert.deepEqual(bare.rr.imageMeta, {});
    assert.deepEqual(bare.rr.volumeMetadata, { env: "prod", tier: "gold" }, "the volume's metadata still comes back");

    // A conf_ override this cluster refuses (a backup from a newer Ceph, say): a warning, not a failed restore.
    await io.objWriteFull(
      oid,
      Buffer.from(
        JSON.stringify({ ...meta, image: { ...meta.image, image_meta: { ...imageMeta, conf_no_such_option: "1" } } }),
      ),
    );
    const again = await restoreNew(r);
    assert.deepEqual(
      await rbdJson<Record<string, string>>("site-a", ["image-meta", "list", spec(again.target)]),
      imageMeta,
    );
    assert.match(again.rr.warnings.join("\n"), /image-meta conf_no_such_option=1 not applied/);

    await io.objWriteFull(oid, Buffer.from(JSON.stringify({ ...meta, version: 99 })));
    const t2 = { pool: "rbd", namespace: "", image: uniqueName("never") };
    await assert.rejects(
      b.client.restore({
        backupId: r.backupId,
        backupPool: "backups",
        targetAgent: { address: a.transferAddress, clusterFsid: "" },
        target: t2,
      }),
      (e: unknown) =>
        e instanceof ClientError && e.code === Status.FAILED_PRECONDITION && /incompatible version 99/.test(e.details),
    );
    assert.equal(await vols.exists("site-a", "rbd", t2.image), false);
    vols.track("site-b", "backups", r.baseImage);
  });

  it("cancelling a backup mid-transfer leaves nothing behind on either side", async () => {
    const stateDir = mkdtempSync(path.join(tmp, "slow-"));
    const slow = await startAgent("site-b", {
      stateDir,
      testFaults: { writeDelayMs: 600 },
      limits: { writesInFlight: 2 },
    });
    try {
      const vol = await vols.create("site-a", "rbd", 64, 0);
      await vols.change(vol, "site-a", { writes: 48, maxWrite: MiB });
      const ac = new AbortController();
      const running = a.client.backup(
        {
          backupId: randomUUID(),
          source: { $case: "volume", value: vol },
          destination: { address: slow.transferAddress, clusterFsid: "" },
          destinationPool: "backups",
        },
        { signal: ac.signal },
      );
      running.catch(() => {});
      await waitFor(() => readdirSync(path.join(stateDir, "transfers")).some((f) => f.endsWith(".json")), {
        what: "the transfer to start (a transfer in the destination's recovery journal)",
      });
      await waitFor(
        async () =>
          (sample(await scrape(slow.metricsAddress), "rbdbackup_written_bytes_total", { pool: "backups" }) ?? 0) > 0,
        { what: "the slow destination to write some data" },
      );
      const cancelledAt = Date.now();
      ac.abort();
      await assert.rejects(running, (e: unknown) => (e as Error).name === "AbortError");
      // Both sides clean up on their own once the call is gone.
      const base = () =>
        vols
          .io("site-b", "backups")
          .then(async (io) => (await io.imageList()).filter((n) => n.startsWith(`${vol.image}.backup.`)));
      await waitFor(async () => (await base()).length === 0 && (await vols.snapNames("site-a", vol)).length === 0, {
        what: "both sides to remove the cancelled backup's snapshots and base image",
        timeoutMs: 60_000,
      });
      console.log(`cancel: both sides clean ${((Date.now() - cancelledAt) / 1000).toFixed(1)} s after the cancel`);
    } finally {
      await slow.stop();
    }
  });
});
