/**
 * The bulk Transfer call's own HTTP/2 client and server (agents/transfer/transfer-client.ts, and the
 * data-plane server: data-plane-server.ts, transfer-server.ts) against the standard ones — grpc-js's
 * server and nice-grpc's client — over real loopback connections with mutual TLS. The handlers here
 * are plain functions (no Ceph): what is tested is the gRPC wire behaviour — results, status codes and
 * messages, early errors, cancellation, backpressure, buffers given back. The listener itself (TLS
 * refusals, admission, routing, lifecycle) is tested in data-plane-server.test.ts; backups through
 * these paths in test/integration.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createChannel, createClient, createServer, type Server, ServerError, Status } from "nice-grpc";
import { DataPlaneServer } from "../../../agents/transfer/data-plane-server";
import { ReceivePool } from "../../../agents/transfer/message-reader";
import { RefusalReason, reasonOf, withReason } from "../../../agents/transfer/protocol";
import { TransferClient } from "../../../agents/transfer/transfer-client";
import type { TransferEntry } from "../../../agents/transfer/transfer-server";

import { FRAME, FramePool, finishChunkFrame, RELEASE, type Releasable } from "../../../agents/transfer/wire";
import { AppError, failedPrecondition, statusOf } from "../../../src/common/errors";
import { delay } from "../../../src/common/retry";
import { channelCredentials, serverCredentials, tlsChannelOptions } from "../../../src/common/tls";
import {
  type TransferMessage,
  TransferServiceDefinition,
  type TransferSummary,
} from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import { until } from "../../helpers/wait";

const MiB = 1 << 20;
const summary = (n: number): TransferSummary => ({
  dataBytesWritten: n,
  zeroBytesWritten: 0,
  dataChunks: 0,
  zeroRanges: 0,
  snapshotCreated: "snap-é",
  imageCreated: true,
  seconds: 1.5,
  destinationFsid: "fsid",
  warnings: ["w"],
  imageDigest: "",
  digestBlockSize: 0,
  resumedFrom: 0,
});

/** What the test handler does with a call; set per test. */
/** What the test servers do with a transfer (whoever called: these tests are not about authorization). */
type Behaviour = (messages: AsyncIterable<TransferMessage>, signal: AbortSignal) => ReturnType<TransferEntry>;
let behaviour: Behaviour = async () => summary(0);

/** grpc-js's server with the same handler: the standard server TransferClient must work against. */
async function serveGrpcJs(): Promise<{ server: Server; address: string }> {
  const server = createServer();
  server.add(TransferServiceDefinition, {
    transfer: (messages, ctx) => behaviour(messages, ctx.signal) as Promise<TransferSummary>,
    listChains: async () => ({ chains: [], clusterFsid: "" }),
    resumePoint: async () => ({}),
  });
  const port = await server.listen("127.0.0.1:0", serverCredentials(labTls("agent-site-b")));
  return { server, address: `127.0.0.1:${port}` };
}

/** Ours: the agents' data-plane server (64 KiB HTTP/2 default window: no windowBytes). */
async function serveOurs(pool: ReceivePool): Promise<{ server: DataPlaneServer; address: string }> {
  const server = new DataPlaneServer({
    tls: labTls("agent-site-b"),
    transfer: (m, s) => behaviour(m, s),
    listChains: async () => ({ chains: [], clusterFsid: "" }),
    maxMessageBytes: 5 * MiB,
    maxConcurrentTransfers: 64,
    pool,
  });
  return { server, address: await server.listen("127.0.0.1:0") };
}

/** n chunk messages of `size` bytes each, in pooled frames; counts how many were pulled, notes when closed. */
function chunks(n: number, size: number, frames: FramePool, pulled = { n: 0, closed: false }) {
  return (async function* () {
    try {
      yield { body: { $case: "header", value: {} } } as TransferMessage;
      for (let i = 0; i < n; i++) {
        pulled.n++;
        const f = frames.acquire(size, size);
        f.data.fill(i & 0xff);
        finishChunkFrame(f, i * size, i);
        const m = {
          body: { $case: "chunk", value: { offset: i * size, data: f.data, crc32: i, compression: 0, rawLength: 0 } },
        } as TransferMessage & {
          [FRAME]?: unknown;
        };
        m[FRAME] = f;
        yield m;
      }
      yield { body: { $case: "trailer", value: {} } } as TransferMessage;
    } finally {
      pulled.closed = true;
    }
  })();
}

/**
 * Consumes every message, checks chunk order and content, gives pooled buffers back; like the real
 * sink, a stream that ends without its trailer is a failure (a cancelled call may look like an end).
 */
const consumeAll: Behaviour = async (messages) => {
  let bytes = 0;
  let i = 0;
  let trailer = false;
  for await (const m of messages) {
    if (m.body?.$case === "trailer") trailer = true;
    if (m.body?.$case !== "chunk") continue;
    const c = m.body.value;
    assert.equal(c.crc32, i);
    assert.equal(c.data[0], i & 0xff);
    assert.equal(c.data[c.data.length - 1], i & 0xff);
    bytes += c.data.length;
    i++;
    (m as Releasable)[RELEASE]?.();
  }
  if (!trailer) throw new ServerError(Status.UNAVAILABLE, "the stream ended before its trailer");
  return summary(bytes);
};

let grpcJsServer: Server;
let ourServer: DataPlaneServer;
let grpcJs: string;
let ours: string;
const receive = new ReceivePool(8);
const clientTls = labTls("agent-site-a");
const tmpDirs: string[] = [];

before(async () => {
  const a = await serveGrpcJs();
  const b = await serveOurs(receive);
  grpcJsServer = a.server;
  ourServer = b.server;
  grpcJs = a.address;
  ours = b.address;
});
after(async () => {
  grpcJsServer.forceShutdown();
  await ourServer.shutdown(0);
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

for (const side of ["grpc-js server", "our server"] as const) {
  describe(`TransferClient → ${side}`, () => {
    const address = () => (side === "grpc-js server" ? grpcJs : ours);

    it("streams 64 MiB and returns the summary; every frame goes back to the pool", async () => {
      behaviour = consumeAll;
      const frames = new FramePool(8);
      const client = new TransferClient(address(), clientTls, { frames });
      const s = await client.transfer(chunks(32, 2 * MiB, frames), new AbortController().signal);
      assert.equal(s.dataBytesWritten, 64 * MiB);
      assert.equal(s.snapshotCreated, "snap-é");
      assert.deepEqual(s.warnings, ["w"]);
      assert.ok(frames.allocated < 32, `frames were reused (${frames.allocated} allocated for 32 chunks)`);
      // The last writes' callbacks (which give their frames back) may run just after the answer.
      await until(() => frames.idle === frames.allocated, "every frame to come back");
      client.close();
    });

    it("16 transfers at once over one connection: all complete, no listener warning", async () => {
      behaviour = consumeAll;
      const warnings: Error[] = [];
      const onWarning = (w: Error) => warnings.push(w);
      process.on("warning", onWarning);
      const frames = new FramePool(64);
      const client = new TransferClient(address(), clientTls, { frames });
      try {
        const all = await Promise.all(
          Array.from({ length: 16 }, () =>
            client.transfer(chunks(4, 256 * 1024, frames), new AbortController().signal),
          ),
        );
        for (const s of all) assert.equal(s.dataBytesWritten, MiB);
        await new Promise((r) => setImmediate(r)); // a warning is emitted on the next tick
        assert.deepEqual(
          warnings.filter((w) => w.name === "MaxListenersExceededWarning").map((w) => w.message),
          [],
        );
      } finally {
        process.off("warning", onWarning);
        client.close();
      }
    });

    it("an early server error: its status and message, and the client stops reading its source", async () => {
      behaviour = async (messages) => {
        for await (const _ of messages) break;
        throw new ServerError(Status.FAILED_PRECONDITION, "the base image changed — déjà vu 100%");
      };
      const frames = new FramePool(8);
      const pulled = { n: 0, closed: false };
      const client = new TransferClient(address(), clientTls, { frames });
      await assert.rejects(client.transfer(chunks(1000, 2 * MiB, frames, pulled), new AbortController().signal), {
        code: Status.FAILED_PRECONDITION,
        details: "the base image changed — déjà vu 100%",
      });
      // The client closes its message source once settled: after that nothing more is pulled.
      await until(() => pulled.closed, "the client to close its message source");
      assert.ok(pulled.n < 100, `the source was not drained (${pulled.n} of 1000 chunks pulled)`);
      client.close();
    });

    it("a refusal's typed reason travels with it; a refusal without one has none", {
      skip: side !== "our server",
    }, async () => {
      const client = new TransferClient(address(), clientTls, { frames: new FramePool(8) });
      behaviour = async (messages) => {
        for await (const _ of messages) break;
        throw new AppError(Status.FAILED_PRECONDITION, "wrapped", {
          cause: withReason(failedPrecondition("no common snapshot: gone"), RefusalReason.NO_COMMON_SNAPSHOT),
        });
      };
      const e1 = await client.transfer(chunks(4, MiB, new FramePool(8)), new AbortController().signal).catch((e) => e);
      assert.equal(statusOf(e1), Status.FAILED_PRECONDITION);
      assert.equal(reasonOf(e1), RefusalReason.NO_COMMON_SNAPSHOT, "through the cause, over the wire");
      behaviour = async (messages) => {
        for await (const _ of messages) break;
        throw failedPrecondition("no common snapshot for an incremental failback: only the text");
      };
      const e2 = await client.transfer(chunks(4, MiB, new FramePool(8)), new AbortController().signal).catch((e) => e);
      assert.equal(statusOf(e2), Status.FAILED_PRECONDITION);
      assert.equal(reasonOf(e2), "", "the message text alone is no reason");
      client.close();
    });

    it("the source fails: the call rejects with the source's error and the server's handler ends", async () => {
      let started!: () => void;
      const handlerStarted = new Promise<void>((r) => {
        started = r;
      });
      // The server's handler must end (aborted, or its message stream failing) instead of waiting.
      let handlerEnded!: Promise<boolean>;
      behaviour = (messages, signal) => {
        const run = consumeAll(messages, signal);
        handlerEnded = new Promise((r) => {
          signal.addEventListener("abort", () => r(true));
          run.then(
            () => r(false), // a normal end would mean the cancellation was missed
            () => r(true),
          );
        });
        started();
        return run;
      };
      const client = new TransferClient(address(), clientTls);
      const failing = (async function* () {
        yield { body: { $case: "header", value: {} } } as TransferMessage;
        await handlerStarted;
        throw new Error("read failed at 42");
      })();
      await assert.rejects(client.transfer(failing, new AbortController().signal), /read failed at 42/);
      const ended = await Promise.race([handlerEnded, delay(5000).then(() => "timeout")]);
      assert.equal(ended, true, "the server's handler was cancelled (not a normal end, not still waiting)");
      client.close();
    });

    it("cancelling by signal: AbortError at once, the server's handler is aborted", async () => {
      let aborted!: Promise<void>;
      let started = false;
      behaviour = (_messages, signal) => {
        aborted = new Promise((r) => signal.addEventListener("abort", () => r()));
        started = true;
        return new Promise(() => {}); // never answers by itself
      };
      const client = new TransferClient(address(), clientTls, { cancelWaitMs: 200 });
      const ac = new AbortController();
      const call = client.transfer(chunks(2, 1024, new FramePool()), ac.signal);
      await until(() => started, "the server's handler to start");
      ac.abort();
      await assert.rejects(call, { name: "AbortError" });
      await aborted;
      client.close();
    });

    it("a bad header from the handler side is reported with its exact code (RESOURCE_EXHAUSTED)", async () => {
      behaviour = async () => {
        throw new ServerError(
          Status.RESOURCE_EXHAUSTED,
          "this agent already serves 8 transfers (limit 8); retry later",
        );
      };
      const client = new TransferClient(address(), clientTls);
      await assert.rejects(client.transfer(chunks(1, 1024, new FramePool()), new AbortController().signal), {
        code: Status.RESOURCE_EXHAUSTED,
        details: /retry later/,
      });
      client.close();
    });
  });
}

describe("TransferClient, connection failures", () => {
  it("nothing listening: UNAVAILABLE, naming the address", async () => {
    const client = new TransferClient("127.0.0.1:1", clientTls);
    await assert.rejects(client.transfer(chunks(1, 1024, new FramePool()), new AbortController().signal), {
      code: Status.UNAVAILABLE,
      details: /127\.0\.0\.1:1/,
    });
    client.close();
  });

  it("a server whose certificate our CA did not sign: UNAVAILABLE, no data sent", async () => {
    let called = false;
    behaviour = async () => {
      called = true;
      return summary(0);
    };
    // The lab CA signs every part; a client trusting another CA must refuse the server.
    const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-foreign-ca-"));
    tmpDirs.push(dir);
    execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [dir, "foreign"], { stdio: "ignore" });
    const client = new TransferClient(ours, { ...clientTls, ca: `${dir}/ca.pem` });
    await assert.rejects(client.transfer(chunks(1, 1024, new FramePool()), new AbortController().signal), {
      code: Status.UNAVAILABLE,
    });
    assert.equal(called, false);
    client.close();
  });
});

describe("nice-grpc client → our server", () => {
  const client = () =>
    createClient(
      TransferServiceDefinition,
      createChannel(ours, channelCredentials(clientTls), tlsChannelOptions(ours, clientTls)),
    );

  it("streams 16 MiB of plain messages and returns the summary; received buffers go back to the pool", async () => {
    behaviour = consumeAll;
    const before = receive.allocated;
    const msgs = (async function* () {
      yield { body: { $case: "header", value: {} } } as TransferMessage;
      for (let i = 0; i < 16; i++) {
        yield {
          body: {
            $case: "chunk",
            value: { offset: i * MiB, data: Buffer.alloc(MiB, i), crc32: i, compression: 0, rawLength: 0 },
          },
        } as TransferMessage;
      }
      yield { body: { $case: "trailer", value: {} } } as TransferMessage;
    })();
    const s = await client().transfer(msgs);
    assert.equal(s.dataBytesWritten, 16 * MiB);
    assert.ok(receive.allocated - before < 16, `receive buffers were reused (${receive.allocated - before} for 16)`);
  });

  it("a message above the limit: RESOURCE_EXHAUSTED before the handler sees it", async () => {
    let seen = 0;
    behaviour = async (messages) => {
      for await (const _ of messages) seen++;
      return summary(0);
    };
    const msgs = (async function* () {
      yield { body: { $case: "header", value: {} } } as TransferMessage;
      yield {
        body: {
          $case: "chunk",
          value: { offset: 0, data: Buffer.alloc(6 * MiB), crc32: 0, compression: 0, rawLength: 0 },
        },
      } as TransferMessage;
    })();
    await assert.rejects(client().transfer(msgs), { code: Status.RESOURCE_EXHAUSTED, details: /exceeds the limit/ });
    assert.equal(seen, 1);
  });

  it("bytes that are not a TransferMessage: INVALID_ARGUMENT", async () => {
    behaviour = consumeAll;
    const raw = createClient(
      {
        ...TransferServiceDefinition,
        methods: {
          ...TransferServiceDefinition.methods,
          transfer: {
            ...TransferServiceDefinition.methods.transfer,
            requestType: {
              ...TransferServiceDefinition.methods.transfer.requestType,
              encode: () => ({ finish: () => Uint8Array.from([0xff, 0xff, 0xff]) }),
              fromPartial: (x: unknown) => x,
            },
          },
        },
      } as unknown as typeof TransferServiceDefinition,
      createChannel(ours, channelCredentials(clientTls), tlsChannelOptions(ours, clientTls)),
    );
    const msgs = (async function* () {
      yield { body: { $case: "header", value: {} } } as TransferMessage;
    })();
    await assert.rejects(raw.transfer(msgs), { code: Status.INVALID_ARGUMENT, details: /not a TransferMessage/ });
  });

  it("backpressure: a handler that does not read holds the client back", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let pulled = 0;
    const msgs = (async function* () {
      yield { body: { $case: "header", value: {} } } as TransferMessage;
      for (let i = 0; i < 200; i++) {
        pulled++;
        yield {
          body: {
            $case: "chunk",
            value: { offset: i * MiB, data: Buffer.alloc(MiB, i), crc32: i, compression: 0, rawLength: 0 },
          },
        } as TransferMessage;
      }
      yield { body: { $case: "trailer", value: {} } } as TransferMessage;
    })();
    let started = false;
    behaviour = async (messages, signal) => {
      started = true;
      await gate;
      return consumeAll(messages, signal);
    };
    const call = client().transfer(msgs);
    await until(() => started, "the server's handler to start");
    // Held back = the client stops pulling: wait until the count stays put for 300 ms (bounded).
    let last = -1;
    let stableSince = Date.now();
    await until(
      () => {
        if (pulled !== last) {
          last = pulled;
          stableSince = Date.now();
        }
        return Date.now() - stableSince >= 300;
      },
      "the client to stop pulling",
      10_000,
    );
    // The HTTP/2 window (64 KiB default here: no windowBytes) and the reader's queue hold a few MiB at most.
    assert.ok(pulled < 40, `the client was not held back: ${pulled} of 200 MiB pulled while nothing was read`);
    release();
    const s = await call;
    assert.equal(s.dataBytesWritten, 200 * MiB);
  });
});
