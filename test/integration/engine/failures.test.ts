/**
 * Failure is clean: corruption in transit is caught and never committed; a destination killed
 * mid-transfer leaves no snapshot and (after its restart) no half-written base image; a full pool and
 * an unreachable peer fail in bounded time with a clear cause; bad input gets the right status.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ClientError, createChannel, createClient, Metadata, Status } from "nice-grpc";
import { CAPABILITY_HEADER } from "../../../src/common/capability";
import { channelCredentials, tlsChannelOptions } from "../../../src/common/tls";
import { BackupMode, RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { Compression, type ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import {
  type TransferHeader,
  TransferKind,
  type TransferMessage,
  TransferServiceDefinition,
} from "../../../src/gen/rbdbackup/v1/transfer";
import { type RunningAgent, startAgent, startAgents, tlsFor, transferCapabilityFor } from "../../helpers/agents";
import { scrape } from "../../helpers/coordinator";
import { grpcStatus } from "../../helpers/grpc-status";
import { uniqueName } from "../../helpers/lab";
import { sample } from "../../helpers/metrics";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { tempDir, waitFor } from "../../helpers/wait";

/** Waits until the destination agent keeping its state in `stateDir` has a transfer in its recovery journal. */
const transferJournaled = (stateDir: string) =>
  waitFor(
    () => existsSync(`${stateDir}/transfers`) && readdirSync(`${stateDir}/transfers`).some((f) => f.endsWith(".json")),
    { what: "the transfer to start (a transfer in the destination's recovery journal)" },
  );

/** Waits until `agent` has written data into an image of its backup pool (half-made, while it is slow). */
const wroteData = (agent: RunningAgent) =>
  waitFor(
    async () =>
      (sample(await scrape(agent.metricsAddress), "rbdbackup_written_bytes_total", { pool: "backups" }) ?? 0) > 0,
    { what: `${agent.name} to write some data (rbdbackup_written_bytes_total > 0)` },
  );

describe("failures are clean", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  const vols = new Volumes();
  const backupOf = (vol: ImageRef, dest: RunningAgent, extra: Record<string, unknown> = {}) =>
    a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: vol },
      destination: { address: dest.transferAddress, clusterFsid: "" },
      destinationPool: "backups",
      ...extra,
    });
  const baseImages = async (cluster: string, vol: ImageRef) =>
    (await (await vols.io(cluster, "backups")).imageList()).filter((n) => n.startsWith(`${vol.image}.backup.`));

  /**
   * A backup in progress that will not finish soon: a 64 MiB volume with ~48 MiB of data, its own
   * source agent, and a destination agent that writes slowly; resolves once the destination is writing.
   */
  const slowBackup = async (sourceOpts: { shutdownGraceSeconds?: number } = {}) => {
    // Every byte written: more than the source can read ahead plus what the sockets hold (~26 MiB), so its
    // last chunk and trailer leave seconds after the slow destination's first write (with ~21 MB of random
    // writes the source had sent everything 1.3 s in, and a cancellation after that is the destination's
    // commit to finish).
    const vol = await vols.create("site-a", "rbd", 64, 0);
    const img = await (await vols.io("site-a", "rbd")).imageOpen(vol.image);
    try {
      for (let off = 0; off < 64 * MiB; off += MiB) await img.write(randomBytes(MiB), off);
      await img.flush();
    } finally {
      await img.close();
    }
    const stateDir = tempDir("rbdbackup-slow-dest-");
    const slow = await startAgent("site-b", {
      stateDir,
      testFaults: { writeDelayMs: 600 },
      limits: { writesInFlight: 2 },
    });
    let source: RunningAgent | undefined;
    try {
      source = await startAgent("site-a", sourceOpts);
      const req = {
        backupId: randomUUID(),
        source: { $case: "volume" as const, value: vol },
        destination: { address: slow.transferAddress, clusterFsid: "" },
        destinationPool: "backups",
      };
      const running = source.client.backup(req);
      running.catch(() => {});
      // Mid-transfer means data flowing: the destination journals the transfer while the source's snapshot
      // may still be in the making (it is made beside the destination's prepare), so wait for data too.
      await transferJournaled(stateDir);
      await wroteData(slow);
      return { vol, slow, source, req, running };
    } catch (e) {
      await Promise.all([source?.stop(), slow.stop()]);
      throw e;
    }
  };

  before(async () => {
    [a, b] = (await startAgents("site-a", "site-b")) as [RunningAgent, RunningAgent];
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
  });

  it("a chunk corrupted in transit is detected: DATA_LOSS, no snapshot on either side, no base image", async () => {
    const corrupting = await startAgent("site-a", { testFaults: { corruptChunk: 3 } });
    try {
      const vol = await vols.create("site-a", "rbd", 16, 16);
      const before = await vols.snapNames("site-a", vol);
      await assert.rejects(
        corrupting.client.backup({
          backupId: randomUUID(),
          source: { $case: "volume", value: vol },
          destination: { address: b.transferAddress, clusterFsid: "" },
          destinationPool: "backups",
        }),
        grpcStatus(Status.DATA_LOSS, /checksum mismatch/),
      );
      assert.deepEqual(await vols.snapNames("site-a", vol), before);
      assert.deepEqual(await baseImages("site-b", vol), []);
    } finally {
      await corrupting.stop();
    }
  });

  for (const variant of ["full", "incremental"] as const) {
    it(`destination killed mid-transfer (${variant}): nothing left behind after its restart; the next backup works`, async () => {
      const vol = await vols.create("site-a", "rbd", 64, 0);
      await vols.change(vol, "site-a", { writes: 64, maxWrite: MiB });
      let chainBase: string | null = null;
      let parentSnap = "";
      if (variant === "incremental") {
        const first = await backupOf(vol, b);
        chainBase = first.baseImage;
        parentSnap = first.snapshot;
        await vols.change(vol, "site-a", { writes: 64, maxWrite: MiB });
      }
      const stateDir = tempDir("rbdbackup-killed-");
      const slow = await startAgent("site-b", {
        stateDir,
        testFaults: { writeDelayMs: 600 },
        limits: { writesInFlight: 2 },
      });
      const snapsBefore = await vols.snapNames("site-a", vol);
      const running = backupOf(vol, slow);
      running.catch(() => {});
      // Wait until the destination is writing (its recovery journal has the transfer and data reached
      // the half-made image), then kill it.
      try {
        await transferJournaled(stateDir);
        await wroteData(slow);
      } finally {
        await slow.kill();
      }
      await assert.rejects(running, (e: unknown) => {
        assert.ok(e instanceof ClientError);
        assert.ok(
          [Status.UNAVAILABLE, Status.CANCELLED, Status.INTERNAL].includes(e.code),
          `${Status[e.code]}: ${e.details}`,
        );
        return true;
      });
      // No new snapshot on the source.
      assert.deepEqual(await vols.snapNames("site-a", vol), snapsBefore);
      // The restarted destination recovers: no half-written base image; the chain's head is rolled back.
      const restarted = await startAgent("site-b", { stateDir });
      try {
        if (variant === "full") {
          assert.deepEqual(await baseImages("site-b", vol), []);
        } else {
          assert.deepEqual(await baseImages("site-b", vol), [chainBase]);
          const names = (
            await restarted.client.listBackupSnapshots({
              image: { pool: "backups", namespace: "", image: chainBase as string },
            })
          ).snapshots.map((s) => s.name);
          assert.deepEqual(names, [parentSnap]);
        }
        const next = await backupOf(vol, restarted);
        assert.equal(next.incremental, variant === "incremental");
        const target = { pool: "rbd", namespace: "", image: uniqueName("after-kill") };
        vols.track("site-a", "rbd", target.image);
        await restarted.client.restore({
          backupId: next.backupId,
          backupPool: "backups",
          targetAgent: { address: a.transferAddress, clusterFsid: "" },
          target,
          mode: RestoreMode.RESTORE_MODE_NEW,
        });
        assert.equal(await sha("site-a", spec(target)), await sha("site-a", spec(vol, next.snapshot)));
      } finally {
        await restarted.stop();
      }
    });
  }

  it("source agent killed mid-transfer: the destination cleans up; a retry with the same backup id succeeds", async () => {
    const { vol, slow, source, req } = await slowBackup();
    const backupId = req.backupId;
    try {
      await source.kill();
      // The destination saw its stream end without a trailer and removed what it had written.
      await waitFor(async () => (await baseImages("site-b", vol)).length === 0, {
        what: "the destination to clean up (no base image of the volume)",
      });
      // The killed source left its snapshot; a retry of the same backup removes it and succeeds.
      assert.equal((await vols.snapNames("site-a", vol)).filter((n) => n.includes(backupId)).length, 1);
      const r = await a.client.backup({ ...req, destination: { address: b.transferAddress, clusterFsid: "" } });
      assert.match(r.warnings.join("\n"), /interrupted attempt/);
      assert.deepEqual(await vols.snapNames("site-a", vol), [r.snapshot]);
      assert.equal(
        await sha("site-b", `backups/${r.baseImage}@${r.snapshot}`),
        await sha("site-a", spec(vol, r.snapshot)),
      );
      // Once it exists, the same id is refused.
      await assert.rejects(
        a.client.backup({ ...req, destination: { address: b.transferAddress, clusterFsid: "" } }),
        grpcStatus(Status.ALREADY_EXISTS),
      );
    } finally {
      await source.stop();
      await slow.stop();
    }
  });

  it("SIGTERM during a backup: the agent refuses new work, and its cancelled backup cleans up before it exits", async () => {
    // A short grace, so the cancellation lands while data still flows: once the source has sent its last
    // chunk and trailer, the destination's commit decides and a committed backup keeps its snapshot.
    const { vol, slow, source, running } = await slowBackup({ shutdownGraceSeconds: 1 });
    try {
      source.proc.kill("SIGTERM");
      await waitFor(() => /SIGTERM: draining/.test(source.logs()), { what: "the source agent to start draining" });
      // Draining: new work is refused.
      await assert.rejects(
        source.client.backup({
          backupId: randomUUID(),
          source: { $case: "volume", value: vol },
          destination: { address: slow.transferAddress, clusterFsid: "" },
        }),
        grpcStatus([Status.UNAVAILABLE, Status.CANCELLED]),
      );
      // The running backup is stopped by the drain (not failed by anything else).
      await assert.rejects(running, grpcStatus([Status.UNAVAILABLE, Status.CANCELLED]));
      await source.stop(); // waits for the exit
      assert.deepEqual(
        await vols.snapNames("site-a", vol),
        [],
        "the cancelled backup removed its snapshot before the agent exited",
      );
      await waitFor(async () => (await baseImages("site-b", vol)).length === 0, {
        what: "the destination to clean up (no base image of the volume)",
      });
    } finally {
      await source.stop();
      await slow.stop();
    }
  });

  it("a full destination pool fails with RESOURCE_EXHAUSTED in bounded time and cleans up", {
    timeout: 300_000,
  }, async () => {
    const small = await startAgent("site-small", { opTimeoutSeconds: 10, limits: { fullCheckIntervalMs: 500 } });
    try {
      // 1 GiB of data for a pool whose OSD holds 256 MiB (test/run.sh). Memstore itself never refuses
      // a write: only the OSD map's full flag stops the transfer, and it comes 1–4 s after the OSD
      // crosses its full ratio (heartbeat, OSD tick, monitor proposal). Uncapped, a fast machine moved
      // the whole 1 GiB in 3.8 s before the flag came (CI, 2026-12-07); at 64 MiB/s the pool fills
      // 4 s in and the transfer would need 16 s, so the flag has 12 s to arrive.
      const vol = await vols.create("site-a", "rbd", 1024, 0);
      const io = await vols.io("site-a", "rbd");
      const img = await io.imageOpen(vol.image);
      const buf = (await import("node:crypto")).randomBytes(4 * MiB);
      for (let off = 0; off < 1024 * MiB; off += 64 * MiB) {
        await Promise.all(Array.from({ length: 16 }, (_, i) => img.write(buf, off + i * 4 * MiB)));
      }
      await img.close();
      const snapsBefore = await vols.snapNames("site-a", vol);
      const started = Date.now();
      await assert.rejects(
        backupOf(vol, small, {
          transferOptions: { compression: Compression.COMPRESSION_NONE, bandwidthLimitBytesPerSecond: 64 * MiB },
        }),
        grpcStatus(Status.RESOURCE_EXHAUSTED, /full/),
      );
      const secs = (Date.now() - started) / 1000;
      console.log(`full pool: failed after ${secs.toFixed(1)} s`);
      assert.ok(secs < 240, `took ${secs} s`);
      assert.deepEqual(await vols.snapNames("site-a", vol), snapsBefore);
      assert.deepEqual(await baseImages("site-small", vol), []);
    } finally {
      await small.stop();
    }
  });

  it("an unreachable destination agent: UNAVAILABLE, no snapshot left", async () => {
    const vol = await vols.create("site-a", "rbd", 8, 4);
    const started = Date.now();
    await assert.rejects(
      a.client.backup({
        backupId: randomUUID(),
        source: { $case: "volume", value: vol },
        destination: { address: "127.0.0.1:1", clusterFsid: "" },
        destinationPool: "backups",
      }),
      grpcStatus(Status.UNAVAILABLE),
    );
    assert.ok(Date.now() - started < 60_000);
    assert.deepEqual(await vols.snapNames("site-a", vol), []);
    // The UNAVAILABLE is the source's answer, not its death (a crash would read the same to the client).
    assert.equal(a.proc.exitCode, null, `the source agent exited: ${a.logs().slice(-2000)}`);
    assert.equal(a.proc.signalCode, null);
  });

  describe("bad input gets the right status", () => {
    let vol: ImageRef;
    before(async () => {
      vol = await vols.create("site-a", "rbd", 8, 2);
    });

    it("zero-size volume → FAILED_PRECONDITION", async () => {
      const io = await vols.io("site-a", "rbd");
      const name = uniqueName("empty");
      await io.imageCreate(name, 0);
      vols.track("site-a", "rbd", name);
      await assert.rejects(
        backupOf({ pool: "rbd", namespace: "", image: name }, b),
        grpcStatus(Status.FAILED_PRECONDITION, /size 0/),
      );
    });

    it("missing volume, missing pool → NOT_FOUND; a bad pool name → INVALID_ARGUMENT", async () => {
      await assert.rejects(
        backupOf({ pool: "rbd", namespace: "", image: "no-such-volume" }, b),
        grpcStatus(Status.NOT_FOUND, /no-such-volume/),
      );
      await assert.rejects(
        backupOf({ pool: "no-such-pool", namespace: "", image: "x" }, b),
        grpcStatus(Status.NOT_FOUND, /no-such-pool/),
      );
      await assert.rejects(backupOf(vol, b, { destinationPool: "nopool" }), grpcStatus(Status.NOT_FOUND, /nopool/));
      await assert.rejects(
        backupOf({ pool: "a/b", namespace: "", image: "x" }, b),
        grpcStatus(Status.INVALID_ARGUMENT, /pool/),
      );
      assert.deepEqual(await vols.snapNames("site-a", vol), []);
    });

    it("ids, names over 4096 bytes, modes", async () => {
      await assert.rejects(
        a.client.backup({ backupId: "not-a-uuid", source: { $case: "volume", value: vol } }),
        grpcStatus(Status.INVALID_ARGUMENT, /backup_id/),
      );
      await assert.rejects(
        b.client.restore({
          backupId: randomUUID(),
          backupPool: "backups",
          snapshot: "s".repeat(5000),
          target: { pool: "rbd", namespace: "", image: "x" },
        }),
        grpcStatus(Status.INVALID_ARGUMENT, /4096/),
      );
      await assert.rejects(
        backupOf(vol, b, { mode: BackupMode.BACKUP_MODE_INCREMENTAL }),
        grpcStatus(Status.FAILED_PRECONDITION, /incremental backup is not possible/),
      );
      await assert.rejects(
        b.client.restore({
          backupId: randomUUID(),
          backupPool: "backups",
          target: { pool: "rbd", namespace: "", image: "x" },
        }),
        grpcStatus(Status.NOT_FOUND, /not found/),
      );
    });

    it("a destination serving another cluster than expected → refused naming the fsid, before any data moves", async () => {
      // The capability names the fsid the caller expects; the destination, serving another cluster,
      // refuses it (PERMISSION_DENIED) before the source's own fsid check would (FAILED_PRECONDITION,
      // what insecure mode — no capabilities — answers).
      await assert.rejects(
        a.client.backup({
          backupId: randomUUID(),
          source: { $case: "volume", value: vol },
          destination: { address: b.transferAddress, clusterFsid: a.fsid },
          destinationPool: "backups",
        }),
        grpcStatus(Status.PERMISSION_DENIED, /fsid/),
      );
      assert.deepEqual(await vols.snapNames("site-a", vol), []);
    });
  });

  describe("the transfer stream is validated", () => {
    // Called as site-a's agent with a capability for exactly the header's image: these tests are
    // about the stream's checks, which run once the caller is authorized (authz.test.ts: refusals).
    const client = () => {
      const tls = tlsFor("agent-site-a");
      return createClient(
        TransferServiceDefinition,
        createChannel(b.transferAddress, channelCredentials(tls), tlsChannelOptions(b.transferAddress, tls)),
      );
    };
    const allowed = (h: TransferMessage) => ({
      metadata: Metadata({
        [CAPABILITY_HEADER]: transferCapabilityFor((h.body as { value: TransferHeader }).value),
      }),
    });
    const header = (image: string) =>
      ({
        body: {
          $case: "header",
          value: {
            transferId: randomUUID(),
            resumeOffset: 0,
            resumePrefixDigest: new Uint8Array(0),
            resumable: false,
            allowOpen: false,
            compression: 0,
            jobId: "",
            kind: TransferKind.RESTORE_NEW,
            destination: { pool: "rbd", namespace: "", image },
            fromSnapshot: "",
            toSnapshot: "",
            imageSize: 4 * MiB,
            features: 0,
            order: 22,
            stripeUnit: 0,
            stripeCount: 0,
            imageMeta: {},
            backupId: "",
            metadataJson: Buffer.alloc(0),
            expectedFsid: "",
            chunkSize: MiB,
          },
        },
      }) as TransferMessage;
    async function* stream(...msgs: TransferMessage[]) {
      yield* msgs;
    }
    const exists = async (image: string) => vols.exists("site-b", "rbd", image);

    it("no header → INVALID_ARGUMENT", async () => {
      await assert.rejects(
        client().transfer(
          stream({ body: { $case: "zero", value: { offset: 0, length: 1 } } }),
          allowed(header(uniqueName("no-header"))),
        ),
        grpcStatus(Status.INVALID_ARGUMENT, /header/),
      );
    });

    it("a chunk beyond the image → INVALID_ARGUMENT, the created image is removed", async () => {
      const image = uniqueName("bad-stream");
      const data = Buffer.alloc(4096, 1);
      const { checksum } = await import("../../../agents/transfer/protocol");
      const h = header(image);
      await assert.rejects(
        client().transfer(
          stream(h, {
            body: {
              $case: "chunk",
              value: { offset: 4 * MiB, data, crc32: checksum(data), compression: 0, rawLength: 0 },
            },
          }),
          allowed(h),
        ),
        grpcStatus(Status.INVALID_ARGUMENT, /beyond the image size/),
      );
      assert.equal(await exists(image), false);
    });

    it("a wrong digest → DATA_LOSS, nothing committed", async () => {
      const image = uniqueName("bad-digest");
      const h = header(image);
      await assert.rejects(
        client().transfer(
          stream(h, {
            body: {
              $case: "trailer",
              value: { dataChunks: 0, dataBytes: 0, zeroRanges: 0, zeroBytes: 0, digest: Buffer.alloc(32) },
            },
          }),
          allowed(h),
        ),
        grpcStatus(Status.DATA_LOSS, /digest/),
      );
      assert.equal(await exists(image), false);
    });
  });
});
