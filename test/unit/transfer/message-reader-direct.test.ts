/**
 * MessageReader's `direct` mode (the bulk channel's): on an accepted TLS socket the TLS layer decrypts
 * straight into the reader's buffers (Node's onread, switched on for a server socket). Over real
 * loopback TLS with the lab's certificates: the same messages as the 'data' path, bytes the socket had
 * buffered before the switch included, pooled buffers given back, the exact errors for bad framing,
 * and backpressure (a reader nobody drains stops the sender's writes).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, describe, it } from "node:test";
import tls, { type TLSSocket } from "node:tls";
import { Status } from "nice-grpc-common";
import { MessageReader, ReceivePool } from "../../../agents/transfer/message-reader";
import { statusOf } from "../../../src/common/errors";
import { tlsFiles } from "../../../src/common/tls";
import { until } from "../../helpers/wait";
import { labTls } from "./fakes/bulk";

const KiB = 1024;
const MiB = 1024 * KiB;
const closers: Array<() => unknown> = [];
after(async () => {
  for (const c of closers.splice(0)) await c();
});

/** A gRPC-style frame of `len` bytes whose content is derived from `seed`. */
function frame(len: number, seed: number, flag = 0): Buffer {
  const b = Buffer.allocUnsafe(5 + len);
  b[0] = flag;
  b.writeUInt32BE(len, 1);
  for (let i = 0; i < len; i++) b[5 + i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

/** A TLS server on loopback; `accepted()` gives the next server-side socket, a client connected to it. */
async function pair(): Promise<{ server: TLSSocket; client: TLSSocket }> {
  const srv = tls.createServer({ ...tlsFiles(labTls("agent-site-b"), "test server"), requestCert: true });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const accepted = once(srv, "secureConnection") as Promise<[TLSSocket]>;
  const client = tls.connect({
    ...tlsFiles(labTls("agent-site-a"), "test client"),
    host: "127.0.0.1",
    port: (srv.address() as { port: number }).port,
    servername: "localhost",
  });
  client.on("error", () => {});
  await once(client, "secureConnect");
  const [server] = await accepted;
  server.on("error", () => {});
  closers.push(() => {
    client.destroy();
    server.destroy();
    srv.close();
  });
  return { server, client };
}

/** Writes `bytes` in pieces of varying size (records and message boundaries fall anywhere). */
async function writeInPieces(s: TLSSocket, bytes: Buffer): Promise<void> {
  let p = 0;
  let i = 0;
  while (p < bytes.length) {
    const n = Math.min(bytes.length - p, [1, 3, 5, 700, 16 * KiB + 3, 40_000, 200 * KiB][i++ % 7] as number);
    if (!s.write(bytes.subarray(p, p + n))) await once(s, "drain");
    p += n;
  }
}

function reader(server: TLSSocket, pool: ReceivePool, direct = true) {
  const released: number[] = [];
  const r = new MessageReader<{ bytes: Buffer; release: (() => void) | null }>(server, {
    maxMessageBytes: 4 * MiB,
    pool,
    direct,
    decode: (bytes, release) => ({ bytes: Buffer.from(bytes), release }),
  });
  return { r, released };
}

async function collect(r: MessageReader<{ bytes: Buffer; release: (() => void) | null }>) {
  const got: Buffer[] = [];
  for await (const m of r) {
    got.push(m.bytes);
    m.release?.();
  }
  return got;
}

const SIZES = [10, 0, 100 * KiB, MiB, 1, 64 * KiB, 2 * MiB + 17, 5];

describe("message reader: direct reads on a TLS socket", () => {
  for (const direct of [true, false]) {
    it(`${direct ? "direct" : "'data' events"}: every message intact, buffered bytes first, pooled buffers back`, async () => {
      const { server, client } = await pair();
      const frames = SIZES.map((n, i) => frame(n, i));
      const all = Buffer.concat(frames);
      // Part of the stream arrives before the reader exists: the socket has buffered it.
      server.pause();
      client.write(all.subarray(0, 100 * KiB));
      await until(() => server.readableLength > 0, "bytes buffered by the server socket");
      const pool = new ReceivePool(8);
      const { r } = reader(server, pool, direct);
      assert.equal(r.direct, direct);
      if (!direct) server.resume(); // paused by the test above; 'data' events need it flowing
      const got = collect(r);
      await writeInPieces(client, all.subarray(100 * KiB));
      client.end();
      const messages = await got;
      assert.equal(messages.length, SIZES.length);
      for (const [i, n] of SIZES.entries())
        assert.ok(messages[i]?.equals(frame(n, i).subarray(5)), `message ${i} (${n} bytes)`);
      assert.equal(r.ended, true);
      assert.equal(r.received, all.length);
      // Four messages were pooled (>= 64 KiB): each buffer came back once.
      assert.equal(pool.idle, 4);
    });
  }

  it("a compressed flag: UNIMPLEMENTED", async () => {
    const { server, client } = await pair();
    const { r } = reader(server, new ReceivePool());
    assert.equal(r.direct, true);
    const got = collect(r);
    client.write(Buffer.concat([frame(20, 1), frame(20, 2, 1), frame(MiB, 3)]));
    await assert.rejects(got, (e) => statusOf(e) === Status.UNIMPLEMENTED);
  });

  it("a pooled message that does not decode: the error, and its buffer back in the pool", async () => {
    const { server, client } = await pair();
    const pool = new ReceivePool(8);
    const r = new MessageReader<Buffer>(server, {
      maxMessageBytes: 4 * MiB,
      pool,
      decode: (bytes) => {
        if (bytes[0] !== 0) throw new Error("not a message this decoder knows");
        return bytes;
      },
    });
    const got = (async () => {
      for await (const _ of r);
    })();
    const bad = frame(MiB, 3); // its first byte is 3 * 31 & 0xff, not 0
    client.write(bad);
    await assert.rejects(got, /not a message this decoder knows/);
    assert.equal(pool.out, 0, "no buffer left out");
    assert.equal(pool.idle, 1, "the message's buffer is idle in the pool");
  });

  it("a message over the limit: RESOURCE_EXHAUSTED, before any of it is buffered", async () => {
    const { server, client } = await pair();
    const { r } = reader(server, new ReceivePool());
    const got = collect(r);
    const big = Buffer.from([0, 0, 0, 0, 0]);
    big.writeUInt32BE(4 * MiB + 1, 1);
    client.write(Buffer.concat([frame(20, 1), big, Buffer.alloc(64 * KiB)]));
    await assert.rejects(got, (e) => statusOf(e) === Status.RESOURCE_EXHAUSTED && /exceeds the limit/.test(String(e)));
  });

  it("the stream ends inside a message: INTERNAL", async () => {
    const { server, client } = await pair();
    const { r } = reader(server, new ReceivePool());
    const got = collect(r);
    const f = frame(300 * KiB, 9);
    client.end(Buffer.concat([frame(7, 1), f.subarray(0, f.length - 1)]));
    await assert.rejects(got, (e) => statusOf(e) === Status.INTERNAL && /ended inside a message/.test(String(e)));
    assert.equal(r.ended, false);
  });

  it("backpressure: a reader nobody drains stops the sender's writes; all arrives once drained", async () => {
    const { server, client } = await pair();
    const pool = new ReceivePool(8);
    const { r } = reader(server, pool);
    const n = 48;
    const frames = Array.from({ length: n }, (_, i) => frame(MiB, i));
    for (const f of frames) client.write(f); // queued: the socket's buffer grows while the peer does not read
    await until(() => server.isPaused(), "the server paused its socket", 10_000);
    // The sender's bytes stop draining: at least 16 MiB are still queued on its side.
    await until(() => client.writableLength > 16 * MiB, "the sender's writes stopped draining", 10_000);
    assert.ok(r.received < n * (MiB + 5) - 16 * MiB, `received ${r.received}`);
    client.end();
    const got = await collect(r);
    assert.equal(got.length, n);
    for (const [i, m] of got.entries()) assert.ok(m.equals((frames[i] as Buffer).subarray(5)), `message ${i}`);
  });
});
