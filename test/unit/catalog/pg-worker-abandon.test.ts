/**
 * The PostgreSQL bridge's worker (src/coordinator/catalog/pg/worker.ts) against a server that accepts
 * connections and never answers (a loopback TCP listener of this test): a request whose caller timed out
 * while it waited behind a stuck one is abandoned when its turn comes — it opens no connection, so a
 * write can never run after its caller was told UNAVAILABLE. Counted by the connections the listener sees.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { AppError } from "../../../src/common/errors";
import { SyncBridge } from "../../../src/coordinator/catalog/pg/bridge";
import { until } from "../../helpers/wait";

describe("PostgreSQL worker: requests abandoned while they waited", () => {
  let server: net.Server;
  let port = 0;
  const sockets: net.Socket[] = [];

  before(async () => {
    server = net.createServer((s) => {
      sockets.push(s); // accepted, never answered: the client's startup waits until its connect timeout
      s.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as net.AddressInfo).port;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it("a request queued behind a stuck connect whose caller timed out opens no connection when its turn comes", async () => {
    // The worker's connect timeout is the bridge's statement timeout (600 ms); each call below waits 100.
    const bridge = new SyncBridge(`postgres://rbdbackup@127.0.0.1:${port}/catalog`, 600);
    try {
      const unavailable = (e: unknown) => e instanceof AppError && /did not answer within 100 ms/.test(e.message);
      // A: stuck in connect (the listener never answers); its caller gives up after 100 ms.
      assert.throws(() => bridge.run([{ sql: "select 1", params: [] }], "none", undefined, 100), unavailable);
      // B: posted behind A, its caller gives up too, while A still waits for its connect timeout.
      assert.throws(() => bridge.run([{ sql: "insert 1", params: [] }], "none", undefined, 100), unavailable);
      // C: waits long enough for A to end and B to get its turn; C connects (and times out) itself.
      assert.throws(() => bridge.run([{ sql: "select 3", params: [] }], "none", undefined, 5_000), AppError);
      await until(() => sockets.length >= 2, "the connections of A and C to arrive");
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(sockets.length, 2, "A's and C's connections only: B, abandoned, opened none");
    } finally {
      bridge.close();
    }
  });
});
