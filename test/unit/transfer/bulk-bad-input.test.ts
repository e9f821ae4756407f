/**
 * Bad input on the bulk channel, over real loopback TLS with the lab's certificates, into the agent's
 * own transfer entry (authorizeTransfer, then the real sink on an in-memory cluster): each case gets
 * its exact status in the BulkResult (or the client's ClientError), nothing is committed (the pool is
 * as before, no journal entry), a refused caller's stream never reaches the sink, and every answer
 * comes within a bound.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import tls from "node:tls";
import { Status } from "nice-grpc-common";
import { BulkClient } from "../../../agents/transfer/bulk/client";
import { ALPN_BULK } from "../../../agents/transfer/bulk/protocol";
import { BULK_CONNECTIONS_HEADROOM } from "../../../agents/transfer/data-plane-server";
import { Peers } from "../../../agents/transfer/peers";
import { MAX_MESSAGE_BYTES } from "../../../agents/transfer/protocol";
import { runSink } from "../../../agents/transfer/sink";
import type { TransferTarget } from "../../../agents/transfer/target";
import { TransferClient } from "../../../agents/transfer/transfer-client";
import { RELEASE, type Releasable } from "../../../agents/transfer/wire";
import { statusOf } from "../../../src/common/errors";
import type { Revoked } from "../../../src/common/revocations";
import { tlsFiles } from "../../../src/common/tls";
import { type TransferMessage, TransferSummary } from "../../../src/gen/rbdbackup/v1/transfer";
import { until } from "../../helpers/wait";
import { frameOf, labTls, mint, openOf, rawBulk, rawH2Transfer, serve, stopAll } from "./fakes/bulk";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { quietLogger, sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages, pattern } from "./fakes/stream";

const MiB = 1024 * KiB;

const CHUNK = 64 * KiB;
const closers: Array<() => unknown> = [];
after(async () => {
  for (const c of closers.splice(0)) await c();
  await stopAll();
});

/** A destination whose transfers go to the real sink; `clean()` asserts nothing was committed or kept. */
async function destination(o: { idleTimeoutMs?: number; revoked?: Revoked } = {}) {
  const ceph = new FakeCeph("backups");
  const before = poolState(ceph, "backups");
  const deps = sinkDeps(ceph);
  const served = await serve((m, signal) => runSink(deps, m, signal, { from: "network" }), o);
  const clean = async () => {
    await until(() => poolState(ceph, "backups") === before && deps.journal.entries.size === 0, "the sink's cleanup");
  };
  return { ceph, deps, served, clean };
}

function bulkClient(address: string, idleTimeoutMs?: number): BulkClient {
  const tls = labTls("agent-site-a");
  const log = quietLogger();
  const h2 = new TransferClient(address, tls, { log });
  closers.push(() => h2.close());
  return new BulkClient(address, tls, h2, { log, ...(idleTimeoutMs ? { idleTimeoutMs } : {}) });
}

/**
 * `h`'s header, then 64 MiB of chunks — more than loopback's socket buffers and the server's HTTP/2
 * window hold — cheap to make, for entries that check nothing and stop reading.
 */
function unread(h: ReturnType<typeof header>): Feed {
  const data = Buffer.alloc(1024 * KiB, 7);
  const chunks: TransferMessage[] = Array.from({ length: 64 }, (_, i) => ({
    body: { $case: "chunk", value: { offset: i * data.length, data, crc32: 1, compression: 0, rawLength: 0 } },
  }));
  return new Feed([{ body: { $case: "header", value: h } }, ...chunks]);
}

/** BulkOpen with a capability for `h`, then `h`'s header and first `n` messages after it, as frames. */
function start(n = 0) {
  const h = header();
  const msgs = messages(h, chunkParts(4, CHUNK));
  return { h, frames: [openOf(mint(h)), ...msgs.slice(0, 1 + n).map(frameOf)], msgs };
}

/** A refusal of exactly `code` whose message matches `why` (a ClientError's details, or an Error's message). */
const statusAndMessage =
  (code: Status, why: RegExp) =>
  (e: { code?: number; details?: string; message?: string }): true => {
    assert.equal(Status[e.code ?? -1], Status[code], e.details ?? e.message);
    assert.match(e.details ?? e.message ?? "", why);
    return true;
  };
describe("bulk channel: bad input", () => {
  it("a frame longer than the limit: RESOURCE_EXHAUSTED, nothing committed", async () => {
    const d = await destination();
    const { frames } = start(1);
    const big = Buffer.from([0, 0, 0, 0, 0]);
    big.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
    const r = await rawBulk(d.served.address, [...frames, big], { end: false });
    assert.equal(r.result?.code, Status.RESOURCE_EXHAUSTED, r.result?.message);
    assert.match(r.result?.message ?? "", /exceeds the limit/);
    await d.clean();
  });

  it("a truncated frame, then the close: the stream is cut short, INTERNAL, nothing committed", async () => {
    const d = await destination();
    const { frames, msgs } = start(1);
    const next = frameOf(msgs[2] as TransferMessage);
    const r = await rawBulk(d.served.address, [...frames, next.subarray(0, next.length - 100)]);
    assert.equal(r.result?.code, Status.INTERNAL, r.result?.message);
    assert.match(r.result?.message ?? "", /ended inside a message/);
    await d.clean();
  });

  it("a close before the trailer: the transfer is cut short, nothing committed", async () => {
    const d = await destination();
    const { frames } = start(2);
    const r = await rawBulk(d.served.address, frames);
    // What a half-closed Transfer call gets from the sink: the source went away (UNAVAILABLE, retried).
    assert.equal(r.result?.code, Status.UNAVAILABLE, r.result?.message);
    await d.clean();
  });

  it("a nonzero flags byte: UNIMPLEMENTED, nothing committed", async () => {
    const d = await destination();
    const { frames, msgs } = start(1);
    const next = frameOf(msgs[2] as TransferMessage);
    next[0] = 1;
    const r = await rawBulk(d.served.address, [...frames, next], { end: false });
    assert.equal(r.result?.code, Status.UNIMPLEMENTED, r.result?.message);
    await d.clean();
  });

  it("a chunk whose checksum does not match: DATA_LOSS from the sink, nothing committed", async () => {
    const d = await destination();
    const h = header();
    const c = bulkClient(d.served.address);
    await assert.rejects(
      c.transfer(new Feed(messages(h, chunkParts(4, CHUNK), { corrupt: 1 })), AbortSignal.timeout(10_000), mint(h)),
      { code: Status.DATA_LOSS },
    );
    assert.equal(c.negotiated, true);
    assert.equal(d.deps.counts.checksumFailures, 1);
    await d.clean();
  });

  it("a trailer whose digest does not match: DATA_LOSS, nothing committed", async () => {
    const d = await destination();
    const h = header();
    const c = bulkClient(d.served.address);
    const msgs = messages(h, chunkParts(4, CHUNK), { trailer: "wrong-digest" });
    await assert.rejects(c.transfer(new Feed(msgs), AbortSignal.timeout(10_000), mint(h)), {
      code: Status.DATA_LOSS,
      message: /digest/,
    });
    assert.equal(c.negotiated, true, "over the bulk channel");
    await d.clean();
  });

  it("a connection offering no ALPN, or another protocol: closed unanswered, the entry never runs", async () => {
    const d = await destination();
    const { frames } = start(3);
    for (const alpn of [null, ["rbdbackup-bulk/2"]]) {
      const r = await rawBulk(d.served.address, frames, { alpn });
      assert.equal(r.result, null, `no answer (ALPN ${JSON.stringify(alpn)})`);
    }
    assert.equal(d.served.entered, 0);
    await d.clean();
  });

  it("a destination busy longer than the source's idle bound (preparing) says so: the transfer completes, on both paths", async () => {
    for (const bulk of [true, false]) {
      const served = await serve(
        async (m) => {
          const it = m[Symbol.asyncIterator]();
          await it.next(); // the header
          // Prepares: 3⅓ idle bounds without reading. The bound is 600 ms, not less: the beats cross this
          // process's own event loop, and a pause of it (GC, the other test file) of ~250 ms let the
          // client's timer run before the beats already sent were read (at 300 ms: 7 runs in 16).
          await new Promise((r) => setTimeout(r, 2000));
          let n = 0;
          for (let r = await it.next(); !r.done; r = await it.next()) {
            n++;
            (r.value as Releasable)[RELEASE]?.();
          }
          return { dataChunks: n };
        },
        { idleTimeoutMs: 600, ...(bulk ? {} : { bulk: false as const }) },
      );
      const log = quietLogger();
      const h2 = new TransferClient(served.address, labTls("agent-site-a"), { log, idleTimeoutMs: 600 });
      closers.push(() => h2.close());
      const c = bulk ? new BulkClient(served.address, labTls("agent-site-a"), h2, { log, idleTimeoutMs: 600 }) : h2;
      // 64 MiB: far more than the socket buffers and the reader's queue hold while it prepares.
      const h = header({ imageSize: 64 * MiB, chunkSize: MiB });
      const parts = Array.from({ length: 64 }, (_, i) => ({ offset: i * MiB, data: pattern(MiB, i) }));
      const s = await c.transfer(new Feed(messages(h, parts)), AbortSignal.timeout(20_000), mint(h));
      assert.equal(s.dataChunks, 65, `${bulk ? "bulk" : "HTTP/2"}: the 64 chunks and the trailer`);
    }
  });

  it("16 busy transfers at once over one HTTP/2 connection: every one's beats get through (not only 10 PINGs)", async () => {
    const n = 16;
    const served = await serve(
      async (m) => {
        const it = m[Symbol.asyncIterator]();
        await it.next();
        await new Promise((r) => setTimeout(r, 2400)); // 4 idle bounds without reading (600 ms: see above)
        let got = 0;
        for (let r = await it.next(); !r.done; r = await it.next()) {
          got++;
          (r.value as Releasable)[RELEASE]?.();
        }
        return { dataChunks: got };
      },
      { idleTimeoutMs: 600, bulk: false, maxConcurrentTransfers: n },
    );
    const h2 = new TransferClient(served.address, labTls("agent-site-a"), { log: quietLogger(), idleTimeoutMs: 600 });
    closers.push(() => h2.close());
    const chunk = 256 * KiB; // 4 MiB each: more than the stream's window and the reader's queue hold
    const outcomes = await Promise.all(
      Array.from({ length: n }, (_, k) => {
        const h = header({ imageSize: 16 * chunk, chunkSize: chunk, transferId: `busy-${k}` });
        const parts = Array.from({ length: 16 }, (_, i) => ({ offset: i * chunk, data: pattern(chunk, i) }));
        return h2.transfer(new Feed(messages(h, parts)), AbortSignal.timeout(30_000), mint(h)).then(
          (s) => `ok ${s.dataChunks}`,
          (e: Error) => `failed: ${e.message}`,
        );
      }),
    );
    assert.deepEqual(outcomes, Array(n).fill("ok 17"));
  });

  it("a destination of the version before busy beats that stops reading: the client fails with DEADLINE_EXCEEDED within its idle bound", async () => {
    // The entry reads the header, then nothing until the client gave up; then it finds the stream cut.
    let clientGaveUp = () => {};
    const gaveUp = new Promise<void>((r) => {
      clientGaveUp = r;
    });
    let seen = "";
    const served = await serve(
      async (m) => {
        const it = m[Symbol.asyncIterator]();
        await it.next();
        await gaveUp;
        try {
          for (let r = await it.next(); !r.done; r = await it.next()) {
            if (r.value.body?.$case === "trailer") seen = "trailer";
          }
          seen ||= "an end without trailer";
        } catch (e) {
          seen = `error ${statusOf(e)}`;
        }
        throw new Error("cut short");
      },
      { busyBeats: false },
    );
    const c = bulkClient(served.address, 300);
    const h = header();
    const t0 = Date.now();
    await assert.rejects(c.transfer(unread(h), AbortSignal.timeout(20_000), mint(h)), {
      code: Status.DEADLINE_EXCEEDED,
      message: /took no bytes for 300 ms/,
    });
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    clientGaveUp();
    await until(() => seen !== "", "the destination finding its stream cut");
    // Cut mid-frame (INTERNAL: ended inside a message), lost (UNAVAILABLE), or between frames.
    assert.match(seen, /^(error 13|error 14|an end without trailer)$/);
  });

  it("the HTTP/2 Transfer call too: a destination of the version before busy beats that stops reading fails the source DEADLINE_EXCEEDED in its bound", async () => {
    let release = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const served = await serve(
      async (m) => {
        await m[Symbol.asyncIterator]().next(); // the header, then nothing until the test is done
        await held;
        throw new Error("cut short");
      },
      { bulk: false, busyBeats: false },
    );
    const log = quietLogger();
    const h2 = new TransferClient(served.address, labTls("agent-site-a"), { log, idleTimeoutMs: 300 });
    closers.push(() => h2.close());
    const h = header();
    const t0 = Date.now();
    await assert.rejects(h2.transfer(unread(h), AbortSignal.timeout(20_000), mint(h)), {
      code: Status.DEADLINE_EXCEEDED,
      message: /took no data for 300 ms/,
    });
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    release();
  });

  it("a source that never sends its trailer: DEADLINE_EXCEEDED after the server's idle bound, cleaned up", async () => {
    const d = await destination({ idleTimeoutMs: 300 });
    const h = header();
    const c = bulkClient(d.served.address);
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "hang" });
    const t0 = Date.now();
    await assert.rejects(c.transfer(feed, AbortSignal.timeout(20_000), mint(h)), {
      code: Status.DEADLINE_EXCEEDED,
      message: /sent nothing for 300 ms/,
    });
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    await d.clean();
  });

  it("a source that trickles its opening a byte at a time: DEADLINE_EXCEEDED once the idle bound has passed without a whole header, on both paths, the sink never reached", async () => {
    const d = await destination({ idleTimeoutMs: 300 });
    const { frames, h } = start(0); // BulkOpen, header
    const t0 = Date.now();
    const r = await rawBulk(d.served.address, frames, { trickleMs: 20, ms: 20_000 });
    assert.equal(r.result?.code, Status.DEADLINE_EXCEEDED, r.result?.message);
    // Either bound may end it: the opening's (its intent) or the trickle rule's, which starts one checker
    // tick later and so wins only when this process pauses ~250 ms (seen in 4–6 runs of 20 so).
    assert.match(
      r.result?.message ?? "",
      /BulkOpen and header did not arrive whole within 300 ms|only \d+ bytes of a message in \d+ ms/,
    );
    assert.ok(Date.now() - t0 < 5_000, `took ${Date.now() - t0} ms`);
    const over = await rawH2Transfer(d.served.address, mint(h), frames.slice(1), { trickleMs: 20, ms: 20_000 });
    assert.equal(over.status, Status.DEADLINE_EXCEEDED, over.message);
    assert.match(
      over.message,
      /first message did not arrive whole within 300 ms|only \d+ bytes of a message in \d+ ms/,
    );
    assert.equal(d.served.reached, 0);
    await d.clean();
  });

  it("a source that trickles a chunk a byte at a time after its header: DEADLINE_EXCEEDED once the message gained under 4 KiB in the idle bound, on both paths — not never", async () => {
    const d = await destination({ idleTimeoutMs: 300 });
    const { frames, h } = start(1); // BulkOpen, header, a 64 KiB chunk
    const t0 = Date.now();
    const r = await rawBulk(d.served.address, frames, { trickleMs: 20, trickleFrom: 2, ms: 20_000 });
    assert.equal(r.result?.code, Status.DEADLINE_EXCEEDED, r.result?.message);
    // A pause of this process (the trickling side) longer than the bound ends it as "sent nothing".
    assert.match(
      r.result?.message ?? "",
      /only \d+ bytes of a message in \d+ ms \(at least 4096 per 300 ms\)|sent nothing for 300 ms/,
    );
    assert.ok(Date.now() - t0 < 5_000, `took ${Date.now() - t0} ms`);
    const over = await rawH2Transfer(d.served.address, mint(h), frames.slice(1), {
      trickleMs: 20,
      trickleFrom: 1,
      ms: 20_000,
    });
    assert.equal(over.status, Status.DEADLINE_EXCEEDED, over.message);
    assert.match(over.message, /only \d+ bytes of a message in \d+ ms|nothing for 300 ms/);
    await d.clean();
  });

  it("a slow but steady source (each chunk spread over 4 idle bounds, 8 KiB at a time) completes: a slow link is no trickle", async () => {
    const d = await destination({ idleTimeoutMs: 300 });
    const { frames, msgs, h } = start(5); // BulkOpen, header, 4 chunks of 64 KiB, the trailer
    assert.equal(msgs.length, 6, "header, 4 chunks, trailer");
    const r = await rawBulk(d.served.address, frames, {
      trickleMs: 150,
      trickleFrom: 2,
      trickleBytes: 8192,
      ms: 30_000,
    });
    assert.equal(r.result?.code ?? -1, Status.OK, r.result?.message);
    const img = d.ceph.pool("backups").images.get(h.destination?.image ?? "");
    assert.deepEqual(
      img?.snaps.map((x) => x.name),
      [h.toSnapshot],
      "committed: the backup's snapshot exists",
    );
  });

  it("a certificate revoked after its connection opened is refused at the header it sends later (UNAUTHENTICATED, both paths), the sink never reached", async () => {
    const fp = new X509Certificate(readFileSync(labTls("agent-site-a").cert as string)).fingerprint256;
    const revoked = new Set<string>();
    const d = await destination({ revoked });
    const { frames, h } = start(3);
    // The connection and the BulkOpen are judged while the list does not name it; the list is reloaded
    // (revoked.add) before the header comes.
    const revokeOnceEntered = (n: number) => ({
      index: 1,
      wait: async () => {
        await until(() => d.served.entered === n, "the stream to be admitted");
        revoked.add(fp.replaceAll(":", "").toLowerCase());
      },
    });
    const r = await rawBulk(d.served.address, frames, { before: revokeOnceEntered(1) });
    assert.equal(r.result?.code, Status.UNAUTHENTICATED, r.result?.message);
    assert.match(r.result?.message ?? "", /is revoked/);
    revoked.clear();
    const over = await rawH2Transfer(d.served.address, mint(h), frames.slice(1), {
      before: { index: 0, wait: revokeOnceEntered(2).wait },
    });
    assert.equal(over.status, Status.UNAUTHENTICATED, over.message);
    assert.equal(d.served.reached, 0);
    await d.clean();
  });

  it("a resumable source that goes silent before its first checkpoint: DEADLINE_EXCEEDED, nothing kept (no checkpoint to resume from)", async () => {
    const d = await destination({ idleTimeoutMs: 300 });
    const h = header({ resumable: true });
    const c = bulkClient(d.served.address);
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "hang" });
    await assert.rejects(c.transfer(feed, AbortSignal.timeout(20_000), mint(h)), { code: Status.DEADLINE_EXCEEDED });
    await d.clean();
  });

  it("a BulkOpen longer than 64 KiB: RESOURCE_EXHAUSTED before a buffer for it is taken", async () => {
    const d = await destination();
    const big = Buffer.from([0, 0, 0, 0, 0]);
    big.writeUInt32BE(64 * 1024 + 1, 1);
    const r = await rawBulk(d.served.address, [big], { end: false });
    assert.equal(r.result?.code, Status.RESOURCE_EXHAUSTED, r.result?.message);
    assert.match(r.result?.message ?? "", /exceeds the limit of 65536 bytes/);
    assert.equal(d.served.entered, 0);
  });

  it("a complete stream whose flush outlasts the idle bound: committed, not DEADLINE_EXCEEDED", async () => {
    // The idle bound is for a source that stops sending. After the trailer the sink drains, flushes and
    // commits at Ceph's pace (bounded by the cluster's op timeout): a slow flush must not fail the backup,
    // nor send it down the cut-short path.
    const d = await destination({ idleTimeoutMs: 200 });
    let atFlush = false;
    let open = () => {};
    d.ceph.gates.flush = {
      // biome-ignore lint/suspicious/noThenProperty: a thenable gate, so the test sees the sink reach it
      then: (resolve: () => void) => {
        atFlush = true;
        open = resolve;
      },
    } as PromiseLike<void>;
    const h = header();
    const c = bulkClient(d.served.address);
    const outcome = c.transfer(new Feed(messages(h, chunkParts(4, CHUNK))), AbortSignal.timeout(20_000), mint(h));
    await until(() => atFlush, "the sink at its flush, the whole stream received");
    // The flush takes 5 idle bounds (the watcher polls every 50 ms here: 20 chances to fire).
    await new Promise((r) => setTimeout(r, 1000));
    open();
    const s = await outcome;
    assert.equal(s.dataChunks, 4);
    const img = d.ceph.pool("backups").images.get(h.destination?.image ?? "");
    assert.deepEqual(
      img?.snaps.map((x) => x.name),
      [h.toSnapshot],
      "committed: the backup's snapshot exists",
    );
    assert.equal(d.deps.journal.entries.size, 0, "nothing kept for a resume");
  });

  it("a sink preparing longer than the idle bound, the source done sending: not DEADLINE_EXCEEDED", async () => {
    // A stream of a header and its trailer only (an unchanged volume's incremental) is all in at once; the
    // sink then prepares the image — the source is not late while the sink has not asked for more.
    let preparing = false;
    let open = () => {};
    const h = header();
    const served = await serve(
      async (m) => {
        const it = m[Symbol.asyncIterator]();
        const first = await it.next();
        preparing = true;
        await new Promise<void>((r) => {
          open = r;
        });
        let n = first.done ? 0 : 1;
        for (let r = await it.next(); !r.done; r = await it.next()) n++;
        return TransferSummary.fromPartial({ dataChunks: n });
      },
      { idleTimeoutMs: 200 },
    );
    const c = bulkClient(served.address);
    const outcome = c.transfer(new Feed(messages(h, [])), AbortSignal.timeout(20_000), mint(h));
    await until(() => preparing, "the entry preparing after the header");
    await new Promise((r) => setTimeout(r, 1000)); // 5 idle bounds
    open();
    const s = await outcome;
    assert.equal(s.dataChunks, 2, "the header and the trailer, read after the wait");
  });

  it("a BulkOpen without a capability: PERMISSION_DENIED, audited, the sink never sees the stream", async () => {
    const d = await destination();
    const { frames, msgs } = start(3);
    const r = await rawBulk(d.served.address, [openOf(""), ...frames.slice(1)]);
    assert.equal(r.result?.code, Status.PERMISSION_DENIED, r.result?.message);
    assert.equal(d.served.reached, 0);
    assert.ok(d.served.lines.some((l) => l.level === "warn" || /refused|denied/.test(JSON.stringify(l))));
    const c = bulkClient(d.served.address);
    await assert.rejects(c.transfer(new Feed(msgs), AbortSignal.timeout(10_000)), { code: Status.PERMISSION_DENIED });
    assert.equal(d.served.reached, 0);
    await d.clean();
  });

  it("a certificate that does not name an agent: PERMISSION_DENIED before the entry is called", async () => {
    const d = await destination();
    const { frames } = start(3);
    const r = await rawBulk(d.served.address, frames, { name: "test-client" });
    assert.equal(r.result?.code, Status.PERMISSION_DENIED, r.result?.message);
    assert.match(r.result?.message ?? "", /only for agents/);
    assert.equal(d.served.entered, 0);
    assert.ok(d.served.lines.length > 0, "audited");
    await d.clean();
  });

  it("a certificate that does not name an agent is refused before anything it sends is read (a 4 MiB BulkOpen declared)", async () => {
    const d = await destination();
    const prefix = Buffer.from([0, 0, 0, 0, 0]);
    prefix.writeUInt32BE(MAX_MESSAGE_BYTES, 1);
    const r = await rawBulk(d.served.address, [prefix], { name: "test-client", end: false });
    assert.equal(r.result?.code, Status.PERMISSION_DENIED, r.result?.message);
    assert.match(r.result?.message ?? "", /only for agents/);
    assert.equal(d.served.entered, 0);
  });

  it("a source whose certificate the destination lists as revoked: UNAUTHENTICATED on the bulk channel and over HTTP/2, audited, the entry never called", async () => {
    const fp = new X509Certificate(readFileSync(labTls("agent-site-a").cert as string)).fingerprint256;
    const d = await destination({ revoked: new Set([fp.replaceAll(":", "").toLowerCase()]) });
    const { frames, msgs, h } = start(3);
    const r = await rawBulk(d.served.address, frames);
    assert.equal(r.result?.code, Status.UNAUTHENTICATED, r.result?.message);
    assert.match(r.result?.message ?? "", /this certificate \(sha256 [0-9a-f]{64}\) is revoked/);
    // The HTTP/2 Transfer call (an older destination's path, and ListChains/ResumePoint's): the same.
    const log = quietLogger();
    const h2 = new TransferClient(d.served.address, labTls("agent-site-a"), { log });
    closers.push(() => h2.close());
    await assert.rejects(h2.transfer(new Feed(msgs), AbortSignal.timeout(10_000), mint(h)), {
      code: Status.UNAUTHENTICATED,
    });
    assert.equal(d.served.entered, 0);
    const refusals = d.served.lines.filter((l) => JSON.stringify(l).includes("revoked_certificate"));
    assert.equal(refusals.length, 2, "both refusals audited");
    for (const l of refusals) assert.match(JSON.stringify(l), /"result":"UNAUTHENTICATED"/);
    // Another agent's certificate is let in (the refusal is the certificate's, not the channel's).
    const other = await rawBulk(d.served.address, start(3).frames, { name: "agent-site-b" });
    assert.notEqual(other.result?.code, Status.UNAUTHENTICATED, other.result?.message);
    await d.clean();
  });

  it("the source sends only to the agent its capability names: another agent, a non-agent or a revoked destination is refused before a byte goes out", async () => {
    const h = header();
    const feed = () => new Feed(messages(h, chunkParts(2, CHUNK)));
    const refused = async (address: string, capability: string, code: Status, why: RegExp, revoked?: Revoked) => {
      const tls = labTls("agent-site-a");
      const log = quietLogger();
      const h2 = new TransferClient(address, tls, { log });
      closers.push(() => h2.close());
      const c = new BulkClient(address, tls, h2, { log, ...(revoked ? { revoked } : {}) });
      await assert.rejects(c.transfer(feed(), AbortSignal.timeout(10_000), capability), statusAndMessage(code, why));
    };
    // A server holding another part's certificate of the deployment, at the destination's address.
    const impostor = await serve(async () => ({}), { tls: labTls("coordinator") });
    await refused(impostor.address, mint(h), Status.PERMISSION_DENIED, /not an agent of this deployment/);
    assert.equal(impostor.entered, 0);
    // Another agent than the one the coordinator named.
    const other = await serve(async () => ({}));
    await refused(other.address, mint(h, "agent-elsewhere"), Status.PERMISSION_DENIED, /not agent agent-elsewhere/);
    // The named agent, but its certificate revoked here.
    const fp = new X509Certificate(readFileSync(labTls("agent-site-b").cert as string)).fingerprint256;
    await refused(
      other.address,
      mint(h),
      Status.UNAUTHENTICATED,
      /is revoked/,
      new Set([fp.replaceAll(":", "").toLowerCase()]),
    );
    assert.equal(other.entered, 0, "nothing reached the destination's entry");
  });

  it("over HTTP/2 too (a peer that offers only h2, or bulk off): every transfer is judged with its own capability, exact status; the ListChains channel checks in its handshake", async () => {
    const h = header();
    const feed = () => new Feed(messages(h, chunkParts(2, CHUNK)));
    const log = quietLogger();
    const fp = new X509Certificate(readFileSync(labTls("agent-site-b").cert as string)).fingerprint256;
    const revoked = new Set<string>();
    const peers = (bulk: "auto" | "off") => {
      const p = new Peers(labTls("agent-site-a"), {} as TransferTarget, log, { bulk, revoked });
      closers.push(() => p.close());
      return p;
    };
    const refused = async (t: TransferTarget, capability: string, code: Status, why: RegExp) =>
      assert.rejects(t.transfer(feed(), AbortSignal.timeout(10_000), capability), statusAndMessage(code, why));
    // A server holding another part's certificate, offering only h2.
    const impostor = await serve(async () => ({}), { tls: labTls("coordinator"), bulk: false });
    await refused(
      peers("off").target(impostor.address),
      mint(h),
      Status.PERMISSION_DENIED,
      /not an agent of this deployment/,
    );
    // An agent, but not the one the coordinator named — twice through one Peers with bulk on: the second
    // goes straight to HTTP/2 (the peer is remembered as h2-only) and must be judged all the same.
    const other = await serve(async () => ({}), { bulk: false });
    const auto = peers("auto").target(other.address);
    await refused(auto, mint(h, "agent-elsewhere"), Status.PERMISSION_DENIED, /not agent agent-elsewhere/);
    await refused(auto, mint(h, "agent-elsewhere"), Status.PERMISSION_DENIED, /not agent agent-elsewhere/);
    assert.equal(impostor.entered + other.entered, 0, "nothing reached a destination's entry");
    // ListChains' channel: refused in the handshake (UNAVAILABLE, named).
    await assert.rejects(
      peers("off").target(impostor.address).listChains("backups", "", "vol", AbortSignal.timeout(10_000), mint(h)),
      statusAndMessage(Status.UNAVAILABLE, /not an agent of this deployment/),
    );
    // Revoked after the connection was made (a reload): the next transfer over the same HTTP/2
    // connection is refused; the ListChains channel opened before keeps serving (no volume data).
    const p = peers("off");
    await p.target(other.address).listChains("backups", "", "vol", AbortSignal.timeout(10_000), mint(h));
    revoked.add(fp.replaceAll(":", "").toLowerCase());
    await refused(p.target(other.address), mint(h), Status.UNAUTHENTICATED, /is revoked/);
    // A new channel's handshake is refused.
    await assert.rejects(
      peers("off").target(other.address).listChains("backups", "", "vol", AbortSignal.timeout(10_000), mint(h)),
      statusAndMessage(Status.UNAVAILABLE, /is revoked/),
    );
    assert.equal(other.entered, 0);
  });

  it("an unknown protocol version: UNIMPLEMENTED before the entry is called", async () => {
    const d = await destination();
    const { frames, h } = start(3);
    const r = await rawBulk(d.served.address, [openOf(mint(h), 2), ...frames.slice(1)]);
    assert.equal(r.result?.code, Status.UNIMPLEMENTED, r.result?.message);
    assert.match(r.result?.message ?? "", /version 2/);
    assert.equal(d.served.entered, 0);
  });

  it("bulk connections past the agent's transfers and the opening headroom: RESOURCE_EXHAUSTED before a byte is read; room again once they close", async () => {
    const ceph = new FakeCeph("backups");
    const deps = sinkDeps(ceph);
    const served = await serve((m, signal) => runSink(deps, m, signal, { from: "network" }), {
      maxConcurrentTransfers: 1,
    });
    const [host, port] = served.address.split(":");
    const limit = 1 + BULK_CONNECTIONS_HEADROOM;
    // Connections that open the bulk channel and send nothing (each would wait out the idle bound).
    const holders: tls.TLSSocket[] = [];
    closers.push(() => {
      for (const s of holders) s.destroy();
    });
    const hold = (name: string, read = true) => {
      const s = tls.connect({
        host,
        port: Number(port),
        servername: "localhost",
        ...tlsFiles(labTls(name), "test"),
        ALPNProtocols: [ALPN_BULK],
      });
      s.on("error", () => {});
      if (read) s.resume(); // read the answer, if any: its end is seen
      holders.push(s);
      return s;
    };
    const { frames } = start(5);
    // Connections refused for their certificate (not an agent's) take no place: they cannot lock agents out.
    // Held open after their refusal (the server lingers for their close): still counted as connections.
    Array.from({ length: limit + 5 }, () => hold("operator", false));
    await until(() => served.server.connections === limit + 5, "the non-agent connections open at the destination");
    const first = await rawBulk(served.address, frames);
    assert.equal(first.result?.code, Status.OK, first.result?.message);
    for (const s of holders.splice(0)) s.destroy();
    await until(() => served.server.connections === 0, "closed");
    for (let i = 0; i < limit; i++) hold("agent-site-a");
    await until(() => served.server.connections === limit, `${limit} bulk connections open at the destination`);
    const over = await rawBulk(served.address, start(5).frames);
    assert.equal(over.result?.code, Status.RESOURCE_EXHAUSTED, over.result?.message);
    assert.match(
      over.result?.message ?? "",
      /already has 33 bulk connections of agents open \(limit 33: its 1 transfers and 32 opening\); retry later/,
    );
    assert.equal(served.entered, 1, "the entry called for the first transfer only");
    for (const s of holders.splice(0)) s.destroy();
    await until(() => served.server.connections === 0, "the holders' connections closed at the destination");
    const another = start(5); // another backup (the first one's id is committed)
    const ok = await rawBulk(served.address, another.frames);
    assert.equal(ok.result?.code, Status.OK, ok.result?.message);
  });

  it("a connection closed before its BulkOpen: INVALID_ARGUMENT, the entry never called", async () => {
    const d = await destination();
    const r = await rawBulk(d.served.address, []);
    assert.equal(r.result?.code, Status.INVALID_ARGUMENT, r.result?.message);
    assert.equal(d.served.entered, 0);
  });
});
