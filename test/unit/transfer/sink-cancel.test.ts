/**
 * The cancel guarantee across the wire, without Ceph: TransferClient → transferStreamHandler →
 * runSink on an in-memory cluster, over a loopback HTTP/2 connection. A source that gives up
 * (cancelled, or its reads failed) half-closes the stream; the destination cleans up, then answers;
 * only then does the source's call settle — so when it does, the destination is already clean. A
 * destination that never answers is given up on after the client's bound, with a warning.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { DataPlaneServer } from "../../../agents/transfer/data-plane-server";
import { ReceivePool } from "../../../agents/transfer/message-reader";
import { MAX_MESSAGE_BYTES } from "../../../agents/transfer/protocol";
import { runSink } from "../../../agents/transfer/sink";
import { TransferClient } from "../../../agents/transfer/transfer-client";
import type { TransferEntry } from "../../../agents/transfer/transfer-server";
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { until } from "../../helpers/wait";
import { FakeCeph, poolState } from "./fakes/fake-ceph";
import { type LogLine, quietLogger, sinkDeps } from "./fakes/sink-deps";
import { chunkParts, Feed, header, KiB, messages, pattern } from "./fakes/stream";

const CHUNK = 64 * KiB;
const servers: Array<() => Promise<void>> = [];
after(async () => {
  for (const stop of servers) await stop();
});

/** The agent's data-plane server (plain h2c) on 127.0.0.1 whose Transfer calls go to `handler`. */
async function serve(handler: TransferEntry): Promise<string> {
  const server = new DataPlaneServer({
    tls: { insecure: true },
    transfer: handler,
    listChains: async () => ({}),
    maxMessageBytes: MAX_MESSAGE_BYTES,
    maxConcurrentTransfers: 8,
    pool: new ReceivePool(8),
  });
  const address = await server.listen("127.0.0.1:0");
  servers.push(() => server.shutdown(0));
  return address;
}

function cluster(): FakeCeph {
  const ceph = new FakeCeph("backups");
  ceph.addImage("backups", "other.backup.x", pattern(CHUNK, 9), ["backup.x.snap.1"]);
  return ceph;
}

function client(address: string, lines: LogLine[], cancelWaitMs?: number): TransferClient {
  return new TransferClient(
    address,
    { insecure: true },
    { log: quietLogger(lines), ...(cancelWaitMs ? { cancelWaitMs } : {}) },
  );
}

describe("cancel: the source settles only once the destination cleaned up", () => {
  it("a cancelled transfer rejects with AbortError after the destination removed the image it created", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const address = await serve((m, signal) => runSink(deps, m, signal));
    const lines: LogLine[] = [];
    const c = client(address, lines);
    const h = header();
    const feed = new Feed(messages(h, chunkParts(4, CHUNK)), { holdAfter: 3, after: "hang" });
    const ac = new AbortController();
    const call = c.transfer(feed, ac.signal);
    await until(() => ceph.log.some((l) => l.startsWith(`write ${h.destination?.image}`)), "the destination writing");
    ac.abort();
    const e = await call.catch((x: unknown) => x);
    assert.equal((e as Error).name, "AbortError");
    // Checked the moment the call settled: no waiting for the destination here.
    assert.equal(poolState(ceph, "backups"), before, "the new base image is already gone");
    assert.equal(deps.journal.entries.size, 0);
    assert.deepEqual(
      lines.filter((l) => l.level === "warn"),
      [],
    );
    c.close();
  });

  it("a source whose reads fail: the call rejects with the source's error after the destination cleaned up", async () => {
    const ceph = cluster();
    const before = poolState(ceph, "backups");
    const deps = sinkDeps(ceph);
    const address = await serve((m, signal) => runSink(deps, m, signal));
    const c = client(address, []);
    const h = header();
    const msgs = messages(h, chunkParts(4, CHUNK));
    const failing = (async function* (): AsyncGenerator<TransferMessage> {
      yield* msgs.slice(0, 3);
      await until(() => ceph.log.some((l) => l.startsWith("write")), "the destination writing");
      throw new Error("read failed at 42");
    })();
    const e = await c.transfer(failing, new AbortController().signal).catch((x: unknown) => x);
    assert.match((e as Error).message, /read failed at 42/);
    assert.equal(poolState(ceph, "backups"), before, "the new base image is already gone");
    c.close();
  });

  it("a cancel that comes after the whole stream was sent cannot stop the commit: the summary comes back", async () => {
    const ceph = cluster();
    const deps = sinkDeps(ceph);
    let openGate!: () => void;
    ceph.gates.flush = new Promise<void>((r) => {
      openGate = r;
    });
    const address = await serve((m, signal) => runSink(deps, m, signal));
    const c = client(address, []);
    const h = header();
    const ac = new AbortController();
    const call = c.transfer(new Feed(messages(h, chunkParts(2, CHUNK))), ac.signal);
    await until(() => ceph.inFlightAtFlush.length > 0, "the destination flushing");
    ac.abort();
    openGate();
    const s = await call;
    assert.equal(s.snapshotCreated, h.toSnapshot, "the destination committed; the caller learns it");
    c.close();
  });

  it("a destination that never answers: given up after the client's bound, with a warning", async () => {
    let handlerAborted = false;
    const address = await serve(
      (_m, signal) =>
        new Promise(() => {
          signal.addEventListener("abort", () => {
            handlerAborted = true;
          });
        }),
    );
    const lines: LogLine[] = [];
    const c = client(address, lines, 50);
    const ac = new AbortController();
    const call = c.transfer(
      new Feed(messages(header(), chunkParts(2, CHUNK)), { holdAfter: 2, after: "hang" }),
      ac.signal,
    );
    await new Promise<void>((r) => setImmediate(r));
    ac.abort();
    await assert.rejects(call, { name: "AbortError" });
    assert.ok(
      lines.some((l) => l.level === "warn" && /did not confirm its cleanup/.test(l.msg)),
      JSON.stringify(lines),
    );
    await until(() => handlerAborted, "the reset to reach the destination");
    c.close();
  });
});
