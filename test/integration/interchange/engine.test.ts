/**
 * rbd-diff interchange at the engine level, against the lab (no coordinator): the agent's
 * importBackup and exportBackup with this agent's own sink, checked with Ceph's own tools.
 *  - Streams `rbd export-diff` wrote (full, and --from-snap) and the diff v2 streams inside
 *    `rbd export --export-format 2` parse and re-write byte-identically with our codec.
 *  - Those streams imported by us (a full, then an incremental onto it) restore byte-identical.
 *  - Our v1 export of each backup piped into `rbd import-diff` (full, then --from) gives an image
 *    byte-identical to the source's snapshot; our v2 export inside an image v2 container too.
 *  - A truncated stream and a corrupted record: INVALID_ARGUMENT naming the offset; no base image,
 *    no snapshot, no metadata object (and an incremental's base image head as it was).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { Cluster } from "../../../agents/ceph";
import type { EngineContext } from "../../../agents/engine/context";
import { exportBackup } from "../../../agents/engine/export";
import { importBackup } from "../../../agents/engine/import";
import { Journal } from "../../../agents/transfer/journal";
import { noMeter } from "../../../agents/transfer/meter";
import { runSink } from "../../../agents/transfer/sink";
import { AppError, Status } from "../../../src/common/errors";
import { backupSnapName, metaObjectName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import type { ImportRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { connectLab } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { bufferChunks, fileChunks, imageV2Around, rbdCli, records, rewrite, splitImageV2 } from "./streams";

const CLUSTER = "site-a";
const POOL = "backups";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => quiet };

function engine(cluster: Cluster, stateDir: string): EngineContext {
  const fsid = cluster.fsid();
  const sink = {
    cluster,
    meter: noMeter,
    clientAddr: cluster.addrs(),
    clusterName: CLUSTER,
    fsid,
    journal: new Journal(stateDir),
    log: quiet,
    limits: { writesInFlight: 8, windowBytes: 32 * MiB, fullCheckIntervalMs: 5000 },
  };
  return {
    cluster,
    clusterName: CLUSTER,
    fsid,
    log: quiet,
    defaultBackupPool: POOL,
    source: { chunkSize: 2 * MiB, readsInFlight: 4 },
    meter: noMeter,
    target: () => ({
      label: "this agent",
      transfer: (messages, signal) => runSink(sink, messages, signal),
      listChains: async () => ({ chains: [], clusterFsid: fsid }),
      resumePoint: async () => ({
        offset: 0,
        prefixDigest: Buffer.alloc(0),
        dataChunks: 0,
        dataBytes: 0,
        zeroRanges: 0,
        zeroBytes: 0,
        reason: "not resumable",
      }),
    }),
  };
}

function importRequest(id: string, baseImage: string, fromSnapshot = ""): ImportRequest {
  const snap = backupSnapName(id);
  const meta = {
    version: 1,
    backup_id: id,
    created_at: new Date().toISOString(),
    volume: { id: "imported", metadata: {} },
    source: { kind: "rbd", cluster_fsid: "", pool: "", namespace: "", image: "", snapshot: "" },
    image: { size: 0, features: "0", order: 22, stripe_unit: 0, stripe_count: 0, image_meta: {} },
    chain: {
      base_image: baseImage,
      incremental: !!fromSnapshot,
      parent_snapshot: fromSnapshot || null,
      snapshot: snap,
    },
  };
  return {
    backupId: id,
    pool: POOL,
    namespace: "",
    baseImage,
    fromSnapshot,
    toSnapshot: snap,
    metadataJson: Buffer.from(JSON.stringify(meta)),
    jobId: "",
    format: 0,
    parentImported: false,
  };
}

async function refusedAt(p: Promise<unknown>, text: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.status, Status.INVALID_ARGUMENT, e.message);
    assert.match(e.message, /byte offset \d+/);
    assert.match(e.message, text);
    return true;
  });
}

describe("rbd-diff interchange (engine, site-a)", () => {
  const vols = new Volumes();
  let cluster: Cluster;
  let ctx: EngineContext;
  let dir: string;
  let volImage = "";
  const shas: Record<string, string> = {};
  const file = (n: string) => path.join(dir, n);
  const signal = new AbortController().signal;
  // Our backups made by import: [full, incremental].
  const ids = [randomUUID(), randomUUID()];
  let baseImage = "";
  const snaps: string[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "rbddiff-"));
    cluster = await connectLab(CLUSTER);
    ctx = engine(cluster, path.join(dir, "state"));
    const v = await vols.create(CLUSTER, "rbd", 24, 16);
    volImage = v.image;
    await rbdCli(CLUSTER, ["snap", "create", spec(v, "s1")]);
    await vols.change(v, CLUSTER, { writes: 12, discards: 4, resizeMiB: 28 });
    await rbdCli(CLUSTER, ["snap", "create", spec(v, "s2")]);
    shas.s1 = await sha(CLUSTER, spec(v, "s1"));
    shas.s2 = await sha(CLUSTER, spec(v, "s2"));
    await rbdCli(CLUSTER, ["export-diff", spec(v, "s1"), file("full.v1")]);
    await rbdCli(CLUSTER, ["export-diff", "--from-snap", "s1", spec(v, "s2"), file("incr.v1")]);
    await rbdCli(CLUSTER, ["export", "--export-format", "2", spec(v), file("image.v2")]);
    baseImage = `${volImage}.backup.${ids[0]}`;
  });

  after(async () => {
    const io = await vols.io(CLUSTER, POOL);
    for (const id of [...ids, "x"]) await io.objRemove(metaObjectName(id)).catch(() => {});
    await vols.cleanup();
    await cluster?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  it("Ceph's streams re-write byte-identically through our parser and writer (v1 full and --from-snap; v2)", async () => {
    for (const n of ["full.v1", "incr.v1"]) {
      const b = await readFile(file(n));
      assert.ok((await rewrite(b)).equals(b), `${n}: ${b.length} bytes re-written identically`);
    }
    const v2 = splitImageV2(await readFile(file("image.v2")));
    assert.equal(v2.length, 3, "creation→s1, s1→s2, s2→head");
    for (const [i, b] of v2.entries()) assert.ok((await rewrite(b)).equals(b), `diff v2 #${i} re-written identically`);
    writeFileSync(file("full.v2"), v2[0] as Buffer);
    writeFileSync(file("incr.v2"), v2[1] as Buffer);
  });

  it("a truncated stream: INVALID_ARGUMENT naming the offset; no base image, snapshot or metadata object", async () => {
    const b = await readFile(file("full.v1"));
    const req = importRequest(ids[0] as string, baseImage);
    await refusedAt(importBackup(ctx, req, bufferChunks(b.subarray(0, Math.floor(b.length / 2))), signal), /truncated/);
    assert.equal(await vols.exists(CLUSTER, POOL, baseImage), false, "no base image");
    const io = await vols.io(CLUSTER, POOL);
    await assert.rejects(io.objRead(metaObjectName(ids[0] as string)), /ENOENT|No such file/);
  });

  it("`rbd export-diff` (full) imported by us restores byte-identical", async () => {
    vols.track(CLUSTER, POOL, baseImage);
    const req = importRequest(ids[0] as string, baseImage);
    const r = await importBackup(ctx, req, fileChunks(file("full.v1")), signal);
    snaps.push(r.snapshot);
    assert.equal(r.incremental, false);
    assert.equal(r.imageSize, 24 * MiB);
    assert.equal(await sha(CLUSTER, `${POOL}/${baseImage}@${r.snapshot}`), shas.s1);
    const meta = JSON.parse(
      (await (await vols.io(CLUSTER, POOL)).objRead(metaObjectName(ids[0] as string))).toString(),
    );
    assert.equal(meta.image.size, 24 * MiB);
  });

  it("a corrupted record in an incremental: INVALID_ARGUMENT naming it; no snapshot, no metadata, head unchanged", async () => {
    const b = Buffer.from(await readFile(file("incr.v1")));
    const rs = await records(b);
    const victim = rs.filter((r) => r.type === "data" || r.type === "zero")[3];
    assert.ok(victim, "the incremental has a few records");
    b[victim.at] = 0x71; // 'q': unknown in v1
    const req = importRequest(ids[1] as string, baseImage, snaps[0]);
    await refusedAt(
      importBackup(ctx, req, bufferChunks(b), signal),
      new RegExp(`byte offset ${victim.at}: unknown record tag 'q'`),
    );
    assert.deepEqual(await vols.snapNames(CLUSTER, { pool: POOL, namespace: "", image: baseImage }), [snaps[0]]);
    assert.equal(await sha(CLUSTER, `${POOL}/${baseImage}`), shas.s1, "the head rolled back to the parent");
    await assert.rejects((await vols.io(CLUSTER, POOL)).objRead(metaObjectName(ids[1] as string)), /ENOENT/);
  });

  it("`rbd export-diff --from-snap` imported by us onto the chain restores byte-identical", async () => {
    const req = importRequest(ids[1] as string, baseImage, snaps[0]);
    const r = await importBackup(ctx, req, fileChunks(file("incr.v1")), signal);
    snaps.push(r.snapshot);
    assert.equal(r.incremental, true);
    assert.equal(r.imageSize, 28 * MiB);
    assert.equal(await sha(CLUSTER, `${POOL}/${baseImage}@${r.snapshot}`), shas.s2);
  });

  it("our v1 export | rbd import-diff (full, then --from) is byte-identical to the source's snapshots", async () => {
    const target = `${volImage}-copy`;
    vols.track(CLUSTER, "rbd", target);
    await rbdCli(CLUSTER, ["create", "--size", "1M", `rbd/${target}`]);
    const exportTo = async (name: string, snapshot: string, from: string) => {
      const chunks: Buffer[] = [];
      const r = await exportBackup(
        ctx,
        {
          backupId: ids[1] as string,
          backupPool: POOL,
          backupNamespace: "",
          baseImage,
          snapshot,
          fromSnapshot: from,
          format: 1,
          jobId: "",
        },
        async (bytes) => {
          let n = 0;
          for await (const b of bytes) {
            assert.ok(b.length <= 1 << 20, "messages stay ≤ 1 MiB");
            chunks.push(Buffer.from(b));
            n += b.length;
          }
          return n;
        },
        signal,
      );
      const all = Buffer.concat(chunks);
      assert.equal(r.bytesStreamed, all.length);
      writeFileSync(file(name), all);
      return all;
    };
    await exportTo("ours-full.v1", snaps[0] as string, "");
    await rbdCli(CLUSTER, ["import-diff", file("ours-full.v1"), `rbd/${target}`]);
    assert.equal(await sha(CLUSTER, `rbd/${target}@${snaps[0]}`), shas.s1);
    await exportTo("ours-incr.v1", snaps[1] as string, snaps[0] as string);
    await rbdCli(CLUSTER, ["import-diff", file("ours-incr.v1"), `rbd/${target}`]);
    assert.equal(await sha(CLUSTER, `rbd/${target}@${snaps[1]}`), shas.s2);
    assert.equal(await sha(CLUSTER, `rbd/${target}`), shas.s2);
  });

  it("v2: Ceph's diff v2 streams imported by us, and our v2 export in an image v2 container for `rbd import`", async () => {
    const id = randomUUID();
    const base2 = `${volImage}.backup.${id}`;
    vols.track(CLUSTER, POOL, base2);
    ids.push(id);
    const r = await importBackup(ctx, importRequest(id, base2), fileChunks(file("full.v2")), signal);
    assert.equal(await sha(CLUSTER, `${POOL}/${base2}@${r.snapshot}`), shas.s1);
    const chunks: Buffer[] = [];
    await exportBackup(
      ctx,
      {
        backupId: id,
        backupPool: POOL,
        backupNamespace: "",
        baseImage: base2,
        snapshot: r.snapshot,
        fromSnapshot: "",
        format: 2,
        jobId: "",
      },
      async (bytes) => {
        for await (const b of bytes) chunks.push(Buffer.from(b));
        return chunks.reduce((n, b) => n + b.length, 0);
      },
      signal,
    );
    const ours = Buffer.concat(chunks);
    assert.equal((await records(ours))[0]?.type, "banner");
    const target = `${volImage}-v2`;
    vols.track(CLUSTER, "rbd", target);
    writeFileSync(file("ours.image.v2"), imageV2Around(ours));
    await rbdCli(CLUSTER, ["import", "--export-format", "2", file("ours.image.v2"), `rbd/${target}`]);
    assert.equal(await sha(CLUSTER, `rbd/${target}@${r.snapshot}`), shas.s1);
  });
});
