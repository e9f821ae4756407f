/**
 * The WAN bench's relay (test/bench/relay.ts) over real loopback sockets: bytes arrive intact and in
 * order in both directions, the delay line holds them back by its delay, the counters see every byte,
 * and a half-close passes through (the peer's end arrives after the last delayed byte).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { type Relay, startRelay } from "../../bench/relay";

describe("bench relay", () => {
  let echo: Server;
  let echoPort = 0;
  let relay: Relay;
  const counted = { fwd: 0, back: 0 };

  before(async () => {
    // Echoes what it receives and ends when its peer ends.
    echo = createServer({ allowHalfOpen: true }, (s) => {
      s.on("data", (d: Buffer) => s.write(d));
      s.on("end", () => s.end());
    });
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    echoPort = (echo.address() as { port: number }).port;
    relay = await startRelay({
      listen: "tcp:127.0.0.1:0",
      connect: () => `tcp:127.0.0.1:${echoPort}`,
      delayFwdMs: 40,
      delayBackMs: 0,
      windowBytes: 1 << 20,
      onBytes: (dir, n) => {
        counted[dir] += n;
      },
    });
  });

  after(async () => {
    await relay.close();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  it("delays, keeps the bytes and their order, counts them, and passes the half-close", async () => {
    const payload = randomBytes(4 << 20);
    const [host, port] = relay.hostPort.split(":") as [string, string];
    const s: Socket = connect({ host, port: Number(port), allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let firstAt = 0;
    const t0 = performance.now();
    const ended = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no end within 30 s")), 30_000);
      s.on("data", (d: Buffer) => {
        if (chunks.length === 0) firstAt = performance.now();
        chunks.push(d);
      });
      s.on("end", () => {
        clearTimeout(timer);
        resolve();
      });
      s.on("error", reject);
    });
    s.end(payload);
    await ended;
    s.destroy();
    assert.ok(firstAt - t0 >= 38, `first byte back after ${(firstAt - t0).toFixed(1)} ms, expected ≥ 40 ms`);
    assert.ok(Buffer.concat(chunks).equals(payload), "echoed bytes differ from the sent ones");
    assert.equal(counted.fwd, payload.length);
    assert.equal(counted.back, payload.length);
  });
});

describe("bench relay: a reply sent just before the far side closes", () => {
  it("still arrives, held back by the delay, before the end (as on a real link)", async () => {
    // Answers once its peer ended, then closes at once — as the bulk channel's server does.
    const server = createServer({ allowHalfOpen: true }, (s) => {
      s.resume();
      s.on("end", () => s.end(Buffer.from("result")));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const relay = await startRelay({
      listen: "tcp:127.0.0.1:0",
      connect: () => `tcp:127.0.0.1:${port}`,
      delayFwdMs: 10,
      delayBackMs: 40,
    });
    try {
      const [host, rport] = relay.hostPort.split(":") as [string, string];
      const s: Socket = connect({ host, port: Number(rport), allowHalfOpen: true });
      const got = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no end within 10 s")), 10_000);
        const chunks: Buffer[] = [];
        s.on("connect", () => s.end(randomBytes(64 << 10)));
        s.on("data", (d: Buffer) => chunks.push(d));
        s.on("end", () => {
          clearTimeout(timer);
          resolve(Buffer.concat(chunks).toString());
        });
        s.on("error", reject);
      });
      s.destroy();
      assert.equal(got, "result", "the reply written before the close arrived");
    } finally {
      await relay.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
