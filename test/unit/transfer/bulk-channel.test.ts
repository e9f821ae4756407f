/**
 * The bulk channel end to end without Ceph (agents/transfer/bulk/: BulkClient → the data-plane
 * server's ALPN dispatch → serveBulk → the agent's transfer entry → the real sink on an in-memory
 * cluster), over real loopback TLS connections with the lab's certificates: a round trip, pre-framed
 * chunks written as they are and given back to their pool, the fallback to HTTP/2 against a peer that
 * only speaks h2 (an older agent: grpc-js), cancellation waiting for the destination's cleanup,
 * admission shared with the Transfer call, and features() for each kind of peer.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { AbortError } from "abort-controller-x";
import { createServer, type Server } from "nice-grpc";
import { Status } from "nice-grpc-common";
import { BulkClient } from "../../../agents/transfer/bulk/client";
import { runSink } from "../../../agents/transfer/sink";
import { TransferClient } from "../../../agents/transfer/transfer-client";
import { FRAME, FramePool, finishChunkFrame, RELEASE, type Releasable } from "../../../agents/transfer/wire";
import { AppError } from "../../../src/common/errors";
import { serverCredentials, type TlsConfig } from "../../../src/common/tls";
import { Compression } from "../../../src/gen/rbdbackup/v1/common";
import { type TransferMessage, TransferServiceDefinition } from "../../../src/gen/rbdbackup/v1/transfer";
import { until } from "../../helpers/wait";
import { labTls, mint, serve, stopAll } from "./fakes/bulk";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { type LogLine, quietLogger, sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages } from "./fakes/stream";

const CHUNK = 64 * KiB;
const siteA: TlsConfig = labTls("agent-site-a");
const closers: Array<() => unknown> = [];
after(async () => {
  for (const c of closers.splice(0)) await c();
  await stopAll();
});

function client(address: string, o: { lines?: LogLine[]; frames?: FramePool } = {}) {
  const log = quietLogger(o.lines ?? []);
  const h2 = new TransferClient(address, siteA, { log });
  closers.push(() => h2.close());
  return new BulkClient(address, siteA, h2, { log, ...(o.frames ? { frames: o.frames } : {}) });
}

describe("bulk channel", () => {
  it("a transfer goes over the bulk channel into the sink and commits; features say bulk", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const served = await serve((m, signal) => runSink(deps, m, signal, { from: "network" }));
    const c = client(served.address);
    const h = header();
    const parts = chunkParts(4, CHUNK);
    const s = await c.transfer(new Feed(messages(h, parts)), AbortSignal.timeout(10_000), mint(h));
    assert.equal(s.dataBytesWritten, 4 * CHUNK);
    assert.equal(s.dataChunks, 4);
    assert.equal(served.reached, 1);
    assert.equal(c.negotiated, true);
    const img = ceph.pool("backups").images.get(h.destination?.image ?? "");
    assert.ok(img, "the image was created");
    for (const p of parts) if ("data" in p) assert.ok(img.data.subarray(p.offset, p.offset + CHUNK).equals(p.data));
    assert.deepEqual(await c.features(AbortSignal.timeout(5000)), {
      bulk: true,
      compression: [Compression.COMPRESSION_ZSTD, Compression.COMPRESSION_LZ4],
    });
    await until(() => served.pool.idle > 0, "the receive buffers given back");
  });

  it("features() with a signal already aborted rejects with AbortError at once, no handshake", async () => {
    // Nothing listens there: a connect attempt would fail UNAVAILABLE (or hang until its timeout) instead.
    const c = client("127.0.0.1:9");
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(c.features(ac.signal), AbortError);
    await assert.rejects(c.transfer(new Feed([]), ac.signal), AbortError);
  });

  it("pre-framed chunks are written as they are and their frames go back to the pool", async () => {
    const size = 256 * KiB;
    const n = 24;
    let bytes = 0;
    const served = await serve(async (m) => {
      let i = 0;
      for await (const x of m) {
        if (x.body?.$case !== "chunk") continue;
        assert.equal(x.body.value.offset, i * size);
        assert.equal(x.body.value.data[size - 1], i & 0xff);
        bytes += x.body.value.data.length;
        i++;
        (x as Releasable)[RELEASE]?.();
      }
      return { dataBytesWritten: bytes };
    });
    const frames = new FramePool(8);
    const c = client(served.address, { frames });
    const h = header();
    async function* framed(): AsyncGenerator<TransferMessage> {
      yield { body: { $case: "header", value: h } };
      for (let i = 0; i < n; i++) {
        const f = frames.acquire(size, size);
        f.data.fill(i & 0xff);
        finishChunkFrame(f, i * size, 7);
        const data = f.data;
        yield Object.assign(
          { body: { $case: "chunk", value: { offset: i * size, data, crc32: 7, compression: 0, rawLength: 0 } } },
          { [FRAME]: f },
        ) as TransferMessage;
      }
      yield { body: { $case: "trailer", value: {} } } as TransferMessage;
    }
    const s = await c.transfer(framed(), AbortSignal.timeout(10_000), mint(h));
    assert.equal(s.dataBytesWritten, n * size);
    assert.ok(frames.allocated < n / 2, `frames reused (${frames.allocated} allocated for ${n} chunks)`);
    assert.ok(frames.idle > 0, "frames given back");
  });

  it("a peer that only speaks h2 (an older agent) gets the Transfer call, and is remembered as such", async () => {
    let calls = 0;
    const grpc: Server = createServer();
    grpc.add(TransferServiceDefinition, {
      transfer: async (msgs) => {
        calls++;
        let chunks = 0;
        for await (const m of msgs) if (m.body?.$case === "chunk") chunks++;
        return { dataChunks: chunks };
      },
      listChains: async () => ({}),
      resumePoint: async () => ({}),
    });
    const port = await grpc.listen("127.0.0.1:0", serverCredentials(labTls("agent-site-b")));
    closers.push(() => grpc.shutdown());
    const lines: LogLine[] = [];
    const c = client(`127.0.0.1:${port}`, { lines });
    const h = header();
    for (let round = 0; round < 2; round++) {
      const s = await c.transfer(new Feed(messages(h, chunkParts(3, CHUNK))), AbortSignal.timeout(10_000), mint(h));
      assert.equal(s.dataChunks, 3);
    }
    assert.equal(calls, 2);
    assert.equal(c.negotiated, false);
    assert.equal(lines.filter((l) => /does not offer the bulk channel/.test(l.msg)).length, 1, "asked once");
    assert.deepEqual(await c.features(AbortSignal.timeout(5000)), { bulk: false, compression: [] });
  });

  it("our server with bulk off answers h2 too: the fallback reaches the same entry", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const served = await serve((m, signal) => runSink(deps, m, signal, { from: "network" }), { bulk: false });
    const c = client(served.address);
    const h = header();
    const s = await c.transfer(new Feed(messages(h, chunkParts(2, CHUNK))), AbortSignal.timeout(10_000), mint(h));
    assert.equal(s.dataBytesWritten, 2 * CHUNK);
    assert.equal(c.negotiated, false);
    assert.equal(served.reached, 1);
  });

  it("a cancelled transfer rejects with AbortError once the destination removed the image it created", async () => {
    const ceph = new FakeCeph("backups");
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const served = await serve((m, signal) => runSink(deps, m, signal, { from: "network" }));
    const c = client(served.address);
    const h = header();
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "hang" });
    const ac = new AbortController();
    const call = c.transfer(feed, ac.signal, mint(h));
    await until(() => ceph.log.some((l) => l.startsWith(`write ${h.destination?.image}`)), "the destination writing");
    const t0 = Date.now();
    ac.abort();
    const e = await call.catch((x: unknown) => x);
    assert.ok(e instanceof AbortError, `got ${String(e)}`);
    assert.equal(poolState(ceph, "backups"), before, "the new base image is already gone");
    assert.equal(deps.journal.entries.size, 0);
    assert.ok(Date.now() - t0 < 5000);
  });

  it("shutdown: a bulk transfer in flight gets the grace period, then its connection is closed and its entry aborted", async () => {
    let aborted = false;
    const served = await serve(async (m, signal) => {
      for await (const _ of m) {
      }
      await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
      aborted = true;
      throw signal.reason;
    });
    const c = client(served.address);
    const h = header();
    const call = c.transfer(new Feed(messages(h, [])), AbortSignal.timeout(10_000), mint(h)).catch((e: unknown) => e);
    await until(() => served.reached === 1, "the transfer admitted");
    assert.equal(served.server.connections, 1);
    const t0 = Date.now();
    await served.server.shutdown(300);
    assert.ok(Date.now() - t0 >= 250 && Date.now() - t0 < 5000, `shutdown took ${Date.now() - t0} ms`);
    assert.equal(served.server.state, "stopped");
    assert.equal(served.server.connections, 0);
    await until(() => aborted, "the entry aborted");
    assert.equal(((await call) as { code?: Status }).code, Status.UNAVAILABLE);
  });

  it("a destination that fails while the source still sends: the connection closes once answered, not after the linger", async () => {
    // The entry takes the header, then stops reading: the server's reader queues what it can and pauses
    // the socket (a paused socket reads nothing, not even the source's close). Then it fails.
    const served = await serve(async (m) => {
      const it = m[Symbol.asyncIterator]();
      await it.next();
      await until(() => served.pool.allocated >= 2, "the reader to queue chunks and pause");
      throw new AppError(Status.RESOURCE_EXHAUSTED, "the pool is full");
    });
    const c = client(served.address);
    const h = header();
    await assert.rejects(
      c.transfer(new Feed(messages(h, chunkParts(256, CHUNK))), AbortSignal.timeout(10_000), mint(h)),
      { code: Status.RESOURCE_EXHAUSTED },
    );
    // The server's linger after an answer is 10 s; the source closed at once, and that must be seen.
    await until(() => served.server.connections === 0, "the answered connection closed", 3000);
  });

  it("bulk transfers count toward maxConcurrentTransfers: one too many gets RESOURCE_EXHAUSTED", async () => {
    let release = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const served = await serve(
      async (m) => {
        for await (const _ of m) {
        }
        await held;
        return {};
      },
      { maxConcurrentTransfers: 1 },
    );
    const c = client(served.address);
    const h = header();
    const first = c.transfer(new Feed(messages(h, [])), AbortSignal.timeout(10_000), mint(h));
    await until(() => served.reached === 1, "the first transfer admitted");
    await assert.rejects(c.transfer(new Feed(messages(h, [])), AbortSignal.timeout(10_000), mint(h)), {
      code: Status.RESOURCE_EXHAUSTED,
    });
    release();
    await first;
  });
});
