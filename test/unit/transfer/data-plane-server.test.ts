/**
 * The agent's data-plane listener (agents/transfer/data-plane-server.ts) as a server: who may
 * connect (a client certificate from our CA, nothing else), what it serves (TransferService's two
 * methods; UNIMPLEMENTED for anything else, HTTP 415 for what is not gRPC), its limits (concurrent
 * transfers, deadlines), its HTTP/2 settings (receive window, keepalive pings) and its lifecycle
 * (drain with GOAWAY, in-flight calls finish, the grace period bounds the wait). Handlers are plain
 * functions: no Ceph. The wire behaviour of Transfer itself is in transport.test.ts.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { createChannel, createClient, Status } from "nice-grpc";
import { BulkClient } from "../../../agents/transfer/bulk/client";
import { type DataPlaneOptions, DataPlaneServer } from "../../../agents/transfer/data-plane-server";
import { TransferClient } from "../../../agents/transfer/transfer-client";
import { CAPABILITY_HEADER } from "../../../src/common/capability";
import { AppError, notFound } from "../../../src/common/errors";
import {
  channelCredentials,
  channelCredentialsCaOnly,
  type TlsConfig,
  tlsChannelOptions,
  tlsFiles,
} from "../../../src/common/tls";
import { AgentServiceDefinition } from "../../../src/gen/rbdbackup/v1/agent";
import {
  ListChainsRequest,
  type TransferMessage,
  TransferServiceDefinition,
} from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import { until } from "../../helpers/wait";

const MiB = 1 << 20;
const serverTls = labTls("agent-site-b");
const clientTls = labTls("agent-site-a");
let foreignDir = "";

const running: DataPlaneServer[] = [];

async function start(opts: Partial<DataPlaneOptions> = {}): Promise<{ server: DataPlaneServer; address: string }> {
  const server = new DataPlaneServer({
    tls: serverTls,
    transfer: async (messages) => {
      for await (const _ of messages) {
        // consume
      }
      return { dataBytesWritten: 0 };
    },
    listChains: async (req) => ({ chains: [], clusterFsid: `fsid-of-${req.pool}` }),
    maxMessageBytes: 5 * MiB,
    maxConcurrentTransfers: 8,
    ...opts,
  });
  running.push(server);
  return { server, address: await server.listen("127.0.0.1:0") };
}

function grpcClient(address: string, creds = channelCredentials(clientTls)) {
  return createClient(TransferServiceDefinition, createChannel(address, creds, tlsChannelOptions(address, clientTls)));
}

/** A promise with its resolver, for handlers that wait on a test. */
function gate<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    open = r;
  });
  return { promise, open };
}

/** A bare HTTP/2 client (mutual TLS with the lab's files) for what gRPC clients never send. */
function rawSession(address: string, tls: TlsConfig = clientTls): http2.ClientHttp2Session {
  const s = http2.connect(`https://${address}`, { ...tlsFiles(tls, "test client"), servername: "localhost" });
  s.on("error", () => {});
  return s;
}

/** A request stream opened and left open (never a byte, never its end); resolves with its answer's headers and trailers. */
function openStream(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<{ headers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", te: "trailers", ...headers }, { endStream: false });
    let h: http2.IncomingHttpHeaders = {};
    // The answer (a trailers-only response carries its status in the headers); the stream itself may
    // linger on the server's side (server-call.ts), so its close is not waited for.
    req.on("response", (x) => {
      h = { ...h, ...x };
      if (x["grpc-status"] !== undefined) resolve({ headers: h });
    });
    req.on("trailers", (x) => {
      h = { ...h, ...x };
      resolve({ headers: h });
    });
    req.on("data", () => {});
    req.on("error", reject);
    req.on("close", () => resolve({ headers: h }));
  });
}

/** A Transfer call opened and left silent (openStream), with or without a capability header. */
const silentTransfer = (session: http2.ClientHttp2Session, capability?: string) =>
  openStream(session, {
    ":path": "/rbdbackup.v1.TransferService/Transfer",
    "content-type": "application/grpc",
    ...(capability !== undefined ? { [CAPABILITY_HEADER]: capability } : {}),
  });

/** A whole (header-only) transfer from a real client; resolves with what the entry reported written. */
async function transferOnce(address: string, capability?: string): Promise<number> {
  const client = new TransferClient(address, clientTls);
  try {
    return (await client.transfer(messages(header), new AbortController().signal, capability)).dataBytesWritten;
  } finally {
    client.close();
  }
}

function rawCall(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body: Buffer = Buffer.alloc(0),
): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", te: "trailers", ...headers });
    let h: http2.IncomingHttpHeaders = {};
    let t: http2.IncomingHttpHeaders = {};
    req.on("response", (x) => {
      h = x;
    });
    req.on("trailers", (x) => {
      t = x;
    });
    req.on("data", () => {});
    req.on("error", reject);
    req.on("close", () => resolve({ headers: h, trailers: t }));
    req.end(body);
  });
}

const grpcFrameOf = (b: Uint8Array) => {
  const out = Buffer.alloc(5 + b.length);
  out.writeUInt32BE(b.length, 1);
  out.set(b, 5);
  return out;
};

/** A ListChains request over a raw session, with grpc-timeout `timeout`. */
const listChainsWithin = (s: http2.ClientHttp2Session, timeout: string) =>
  rawCall(
    s,
    {
      ":path": "/rbdbackup.v1.TransferService/ListChains",
      "content-type": "application/grpc",
      "grpc-timeout": timeout,
    },
    grpcFrameOf(ListChainsRequest.encode({ pool: "p", namespace: "", volumeImage: "v" }).finish()),
  );

async function* messages(...m: TransferMessage[]) {
  yield* m;
}
const header = { body: { $case: "header", value: {} } } as TransferMessage;

before(() => {
  foreignDir = mkdtempSync(path.join(tmpdir(), "rbdbackup-foreign-ca-"));
  execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [foreignDir, "intruder"], { stdio: "ignore" });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.shutdown(0)));
});
after(() => rmSync(foreignDir, { recursive: true, force: true }));

describe("data-plane server: who may connect", () => {
  it("a client without a certificate is refused in the handshake; no handler runs", async () => {
    let called = false;
    const { address } = await start({
      listChains: async () => {
        called = true;
        return {};
      },
    });
    const client = grpcClient(address, channelCredentialsCaOnly(clientTls.ca as string));
    await assert.rejects(
      client.listChains({ pool: "rbd", namespace: "", volumeImage: "v" }, { signal: AbortSignal.timeout(20_000) }),
      { code: Status.UNAVAILABLE },
    );
    assert.equal(called, false);
  });

  it("a client whose certificate another CA signed is refused; no handler runs", async () => {
    let called = 0;
    const { address } = await start({
      transfer: async () => {
        called++;
        return {};
      },
      listChains: async () => {
        called++;
        return {};
      },
    });
    const intruder: TlsConfig = {
      ca: clientTls.ca as string, // it trusts our server…
      cert: path.join(foreignDir, "intruder.pem"), // …but its own certificate is not ours
      key: path.join(foreignDir, "intruder.key"),
    };
    const grpc = createClient(
      TransferServiceDefinition,
      createChannel(address, channelCredentials(intruder), tlsChannelOptions(address, intruder)),
    );
    await assert.rejects(
      grpc.listChains({ pool: "rbd", namespace: "", volumeImage: "v" }, { signal: AbortSignal.timeout(20_000) }),
      { code: Status.UNAVAILABLE },
    );
    // Our own client too (it reports the refusal as a reset stream: a failure either way).
    const client = new TransferClient(address, intruder);
    await assert.rejects(client.transfer(messages(header), new AbortController().signal), (e: { code?: Status }) => {
      assert.notEqual(e.code, Status.OK);
      return true;
    });
    client.close();
    assert.equal(called, 0);
  });

  it("the bulk client refuses a server whose certificate another CA signed, on every connection", async () => {
    let called = 0;
    const { address } = await start({
      tls: {
        ca: serverTls.ca,
        cert: path.join(foreignDir, "intruder.pem"),
        key: path.join(foreignDir, "intruder.key"),
      },
      transfer: async () => {
        called++;
        return {};
      },
    });
    const h2 = new TransferClient(address, clientTls);
    const bulk = new BulkClient(address, clientTls, h2, { connectTimeoutMs: 20_000 });
    // Twice: the client's TLS context is made once and reused; each handshake still checks the peer.
    for (let i = 0; i < 2; i++) {
      await assert.rejects(bulk.transfer(messages(header), AbortSignal.timeout(20_000)), (e: { code?: Status }) => {
        assert.equal(e.code, Status.UNAVAILABLE);
        return true;
      });
    }
    h2.close();
    assert.equal(called, 0);
  });

  it("a client with our CA's certificate is served (ListChains, the generated codec both ways)", async () => {
    let got: ListChainsRequest | undefined;
    const { address } = await start({
      listChains: async (req) => {
        got = req;
        return { chains: [{ baseImage: "v.backup.1", snapshots: [] }], clusterFsid: "fsid-b" };
      },
    });
    const res = await grpcClient(address).listChains({ pool: "backups", namespace: "ns", volumeImage: "v" });
    assert.deepEqual(got, { pool: "backups", namespace: "ns", volumeImage: "v" });
    assert.equal(res.clusterFsid, "fsid-b");
    assert.equal(res.chains[0]?.baseImage, "v.backup.1");
  });
});

describe("data-plane server: what it serves", () => {
  it("a handler's failure reaches the client with its status and message; an unexpected one is INTERNAL", async () => {
    const { address } = await start({
      listChains: async (req) => {
        if (req.pool === "gone") throw notFound("pool gone: does not exist, see /var/log?x#y (100%) — créez-le");
        throw new Error("secret internals");
      },
    });
    const client = grpcClient(address);
    await assert.rejects(client.listChains({ pool: "gone", namespace: "", volumeImage: "v" }), {
      code: Status.NOT_FOUND,
      // grpc-js reads grpc-message with decodeURI: ':' ',' '/' '?' '#' must travel as they are.
      details: "pool gone: does not exist, see /var/log?x#y (100%) — créez-le",
    });
    await assert.rejects(client.listChains({ pool: "p", namespace: "", volumeImage: "v" }), {
      code: Status.INTERNAL,
      details: /internal error/,
    });
  });

  it("any other method (e.g. AgentService.GetInfo): UNIMPLEMENTED", async () => {
    const { address } = await start();
    const agent = createClient(
      AgentServiceDefinition,
      createChannel(address, channelCredentials(clientTls), tlsChannelOptions(address, clientTls)),
    );
    await assert.rejects(agent.getInfo({}), { code: Status.UNIMPLEMENTED, details: /GetInfo/ });
  });

  it("a request that is not gRPC: HTTP 415", async () => {
    const { address } = await start();
    const s = rawSession(address);
    try {
      const r = await rawCall(s, { ":path": "/rbdbackup.v1.TransferService/ListChains", "content-type": "text/plain" });
      assert.equal(r.headers[":status"], 415);
    } finally {
      s.close();
    }
  });

  it("a unary call with two request messages: UNIMPLEMENTED, the handler never runs", async () => {
    let called = false;
    const { address } = await start({
      listChains: async () => {
        called = true;
        return {};
      },
    });
    const s = rawSession(address);
    try {
      const one = grpcFrameOf(ListChainsRequest.encode({ pool: "p", namespace: "", volumeImage: "v" }).finish());
      const r = await rawCall(
        s,
        { ":path": "/rbdbackup.v1.TransferService/ListChains", "content-type": "application/grpc" },
        Buffer.concat([one, one]),
      );
      assert.equal(r.headers["grpc-status"], String(Status.UNIMPLEMENTED));
      assert.match(decodeURIComponent(String(r.headers["grpc-message"])), /second request message/);
      assert.equal(called, false);
    } finally {
      s.close();
    }
  });

  it("ListChains: a request over 64 KiB is RESOURCE_EXHAUSTED; one declared and never sent is DEADLINE_EXCEEDED within the idle bound", async () => {
    let called = 0;
    const { address } = await start({
      idleTimeoutMs: 300,
      listChains: async () => {
        called++;
        return {};
      },
    });
    const s = rawSession(address);
    try {
      const big = grpcFrameOf(
        ListChainsRequest.encode({ pool: "p", namespace: "", volumeImage: "v".repeat(70_000) }).finish(),
      );
      const r1 = await rawCall(
        s,
        { ":path": "/rbdbackup.v1.TransferService/ListChains", "content-type": "application/grpc" },
        big,
      );
      assert.equal(r1.trailers["grpc-status"] ?? r1.headers["grpc-status"], String(Status.RESOURCE_EXHAUSTED));
      // 5 bytes declaring a 60 KiB request, then nothing (the stream left open).
      const prefix = Buffer.from([0, 0, 0, 0, 0]);
      prefix.writeUInt32BE(60 * 1024, 1);
      const t0 = Date.now();
      const r2 = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = s.request(
          {
            ":method": "POST",
            te: "trailers",
            ":path": "/rbdbackup.v1.TransferService/ListChains",
            "content-type": "application/grpc",
          },
          { endStream: false },
        );
        let h: http2.IncomingHttpHeaders = {};
        req.on("response", (x) => {
          h = { ...h, ...x };
          if (x["grpc-status"] !== undefined) resolve(h); // trailers-only answer
        });
        req.on("trailers", (x) => resolve({ ...h, ...x }));
        req.on("data", () => {});
        req.on("error", reject);
        req.on("close", () => resolve(h));
        req.write(prefix);
      });
      assert.equal(r2["grpc-status"], String(Status.DEADLINE_EXCEEDED));
      assert.ok(Date.now() - t0 < 5_000, `took ${Date.now() - t0} ms`);
      assert.equal(called, 0);
    } finally {
      s.close();
    }
  });

  it("a grpc-timeout beyond setTimeout's range (30 days) is no deadline, not an instant one", async () => {
    const { address } = await start({ listChains: async () => ({ chains: [], clusterFsid: "f" }) });
    const s = rawSession(address);
    try {
      const r = await listChainsWithin(s, "2592000S");
      assert.equal(r.trailers["grpc-status"], String(Status.OK));
    } finally {
      s.close();
    }
  });

  it("the client's deadline (grpc-timeout): DEADLINE_EXCEEDED, the handler's signal aborts", async () => {
    let aborted = false;
    const { address } = await start({
      listChains: (_req, signal) =>
        new Promise((_ok, fail) =>
          signal.addEventListener("abort", () => {
            aborted = true;
            fail(signal.reason);
          }),
        ),
    });
    const s = rawSession(address);
    try {
      const r = await listChainsWithin(s, "200m");
      assert.equal(r.headers["grpc-status"], String(Status.DEADLINE_EXCEEDED));
      await until(() => aborted, "the handler's signal to abort");
    } finally {
      s.close();
    }
  });
});

describe("data-plane server: limits and HTTP/2 settings", () => {
  it("maxConcurrentTransfers: the next transfer gets RESOURCE_EXHAUSTED with the limit; after one ends, it is served", async () => {
    const hold = gate();
    let started = 0;
    const { address } = await start({
      maxConcurrentTransfers: 1,
      transfer: async (msgs) => {
        started++;
        for await (const _ of msgs) {
          // consume
        }
        await hold.promise;
        return { dataBytesWritten: 7 };
      },
    });
    const client = new TransferClient(address, clientTls);
    const first = client.transfer(messages(header), new AbortController().signal);
    await until(() => started === 1, "the first transfer to start");
    await assert.rejects(client.transfer(messages(header), new AbortController().signal), {
      code: Status.RESOURCE_EXHAUSTED,
      details: "this agent already serves 1 transfers (limit 1); retry later",
    });
    hold.open();
    assert.equal((await first).dataBytesWritten, 7);
    assert.equal((await client.transfer(messages(header), new AbortController().signal)).dataBytesWritten, 7);
    client.close();
  });

  it("a caller the admission refuses never takes a slot: streams that send nothing without a valid capability cannot crowd out a real transfer", {
    timeout: 20_000,
  }, async () => {
    let started = 0;
    const { address } = await start({
      maxConcurrentTransfers: 1,
      admit: (caller) => {
        if (caller.capability !== "valid") throw new AppError(Status.PERMISSION_DENIED, "capability refused: bad");
      },
      transfer: async (msgs) => {
        started++;
        for await (const _ of msgs) {
          // consume
        }
        return { dataBytesWritten: 7 };
      },
    });
    const s = rawSession(address);
    try {
      // Three streams that never send a byte nor end: each is answered at once, none reaches the entry.
      const silent = await Promise.all([undefined, "forged", ""].map((cap) => silentTransfer(s, cap)));
      for (const r of silent) assert.equal(r.headers["grpc-status"], String(Status.PERMISSION_DENIED));
      assert.equal(await transferOnce(address, "valid"), 7);
      assert.equal(started, 1, "only the admitted transfer reached the entry");
    } finally {
      s.destroy(); // the silent streams stay open on this side: no graceful close to wait for
    }
  });

  it("ResumePoint and ListChains judge the caller before reading a byte: refused at once, the entry never called, the method named", {
    timeout: 20_000,
  }, async () => {
    const called: string[] = [];
    const judged: string[] = [];
    const { address } = await start({
      admit: (caller, method) => {
        judged.push(method);
        if (caller.capability !== "valid") throw new AppError(Status.PERMISSION_DENIED, "capability refused: bad");
      },
      listChains: async () => {
        called.push("listChains");
        return { chains: [], clusterFsid: "" };
      },
      resumePoint: async () => {
        called.push("resumePoint");
        return {};
      },
    });
    const s = rawSession(address);
    try {
      for (const method of ["ResumePoint", "ListChains"]) {
        // The request never comes (nor its end): before, each held a request buffer until the idle timeout.
        const r = await openStream(s, {
          ":path": `/rbdbackup.v1.TransferService/${method}`,
          "content-type": "application/grpc",
          [CAPABILITY_HEADER]: "forged",
        });
        assert.equal(r.headers["grpc-status"], String(Status.PERMISSION_DENIED), method);
      }
      assert.deepEqual(called, []);
      assert.deepEqual(judged, [
        "/rbdbackup.v1.TransferService/ResumePoint",
        "/rbdbackup.v1.TransferService/ListChains",
      ]);
    } finally {
      s.destroy();
    }
  });

  it("a transfer that sends nothing, not even its header, ends DEADLINE_EXCEEDED after the idle timeout and frees its slot", {
    timeout: 20_000,
  }, async () => {
    let ended: unknown = null;
    const { address } = await start({
      maxConcurrentTransfers: 1,
      idleTimeoutMs: 300,
      transfer: async (msgs) => {
        try {
          for await (const _ of msgs) {
            // consume
          }
        } catch (e) {
          ended = e;
          throw e;
        }
        return { dataBytesWritten: 7 };
      },
    });
    const s = rawSession(address);
    try {
      const t0 = Date.now();
      const r = await silentTransfer(s);
      assert.equal(r.headers["grpc-status"], String(Status.DEADLINE_EXCEEDED));
      assert.match(decodeURIComponent(String(r.headers["grpc-message"])), /went quiet .*nothing for 300 ms/);
      assert.ok(Date.now() - t0 >= 300, "not before the idle timeout");
      assert.equal(
        (ended as { status?: number } | null)?.status,
        Status.DEADLINE_EXCEEDED,
        "the entry's reader failed",
      );
      assert.equal(await transferOnce(address), 7, "the slot is free again");
    } finally {
      s.destroy(); // the silent streams stay open on this side: no graceful close to wait for
    }
  });

  it("a destination that took the whole stream and never answers: the source ends DEADLINE_EXCEEDED after resultWaitMs, the stream reset", {
    timeout: 20_000,
  }, async () => {
    let consumed = false;
    let aborted = false;
    const { address } = await start({
      transfer: async (msgs, signal) => {
        for await (const _ of msgs) {
          // consume
        }
        consumed = true;
        await new Promise((r) => signal.addEventListener("abort", r, { once: true })); // a commit that hangs
        aborted = true;
        throw new AppError(Status.CANCELLED, "reset");
      },
    });
    // 1 s: the destination (this process) must read the stream's end before the wait runs out.
    const client = new TransferClient(address, clientTls, { resultWaitMs: 1_000 });
    await assert.rejects(client.transfer(messages(header), new AbortController().signal), {
      code: Status.DEADLINE_EXCEEDED,
      details: `no result from ${address} within 1000 ms of the transfer's end`,
    });
    assert.equal(consumed, true, "the whole stream had been taken");
    await until(() => aborted, "the destination to see the reset");
    client.close();
  });

  it("not accepting (the agent drains): UNAVAILABLE", async () => {
    const { address } = await start({ accepting: () => false });
    const client = new TransferClient(address, clientTls);
    await assert.rejects(client.transfer(messages(header), new AbortController().signal), {
      code: Status.UNAVAILABLE,
      details: /shutting down/,
    });
    client.close();
  });

  it("advertises windowBytes as its initial stream window (HTTP/2 SETTINGS)", async () => {
    const { address } = await start({ windowBytes: 16 * MiB });
    const s = rawSession(address);
    try {
      const settings = await new Promise<http2.Settings>((r) => s.once("remoteSettings", r));
      assert.equal(settings.initialWindowSize, 16 * MiB);
    } finally {
      s.close();
    }
  });

  it("pings its peers every keepaliveMs", async () => {
    const { address } = await start({ keepaliveMs: 50 });
    const s = rawSession(address);
    let pings = 0;
    s.on("ping", () => pings++);
    try {
      await until(() => pings >= 2, "two keepalive pings from the server");
    } finally {
      s.close();
    }
  });

  it("a session with no stream for idleSessionMs is closed; one whose stream stays open is not", async () => {
    const hold = gate();
    const { address } = await start({
      keepaliveMs: 50, // pings do not count as use
      idleSessionMs: 200,
      transfer: async (messages) => {
        await hold.promise;
        for await (const _ of messages) {
          // consume
        }
        return { dataBytesWritten: 0 };
      },
    });
    const idle = rawSession(address);
    const busy = rawSession(address);
    let idleGone = false;
    let busyGone = false;
    idle.on("goaway", () => {
      idleGone = true;
    });
    busy.on("goaway", () => {
      busyGone = true;
    });
    try {
      // A Transfer stream left open for longer than the idle time (its handler waits).
      const req = busy.request(
        { ":method": "POST", ":path": "/rbdbackup.v1.TransferService/Transfer", "content-type": "application/grpc" },
        { endStream: false },
      );
      req.on("error", () => {});
      await until(() => idleGone, "the idle session's GOAWAY", 5_000);
      assert.equal(busyGone, false, "a session with an open stream stays");
      hold.open();
      req.close();
      await until(() => busyGone, "its GOAWAY once its stream ended and it was idle", 5_000);
    } finally {
      idle.close();
      busy.close();
    }
  });
  it("a connection made for a transfer that then did not start (refused by the destination check) is closed idleCloseMs after it connected", async () => {
    const { server, address } = await start();
    const client = new TransferClient(address, clientTls, {
      idleCloseMs: 1_000,
      checkDestination: () => ({ status: Status.PERMISSION_DENIED, message: "not that one" }),
    });
    try {
      await assert.rejects(client.transfer(messages(header), new AbortController().signal), {
        code: Status.PERMISSION_DENIED,
      });
      await until(() => server.connections === 1, "the server to count the connection");
      await until(() => server.connections === 0, "the source to close the connection it made", 5_000);
    } finally {
      client.close();
    }
  });

  it("a source closes its own connection idleCloseMs after its last transfer, before the server's GOAWAY; the next transfer connects again", async () => {
    const { server, address } = await start(); // the server's own idle close: 5 minutes
    const client = new TransferClient(address, clientTls, { idleCloseMs: 200 });
    try {
      assert.equal((await client.transfer(messages(header, header), new AbortController().signal)).dataBytesWritten, 0);
      assert.equal(server.connections, 1);
      await until(() => server.connections === 0, "the source to close its idle connection", 5_000);
      assert.equal((await client.transfer(messages(header), new AbortController().signal)).dataBytesWritten, 0);
      assert.equal(server.connections, 1, "a new connection");
    } finally {
      client.close();
    }
  });
});

describe("data-plane server: lifecycle", () => {
  it("shutdown: a transfer in flight finishes, a new one is refused, then the server stops", async () => {
    const hold = gate();
    let started = 0;
    const { server, address } = await start({
      transfer: async (msgs) => {
        started++;
        await hold.promise;
        let n = 0;
        for await (const _ of msgs) n++;
        return { dataChunks: n };
      },
    });
    const client = new TransferClient(address, clientTls);
    const inFlight = client.transfer(messages(header, header), new AbortController().signal);
    await until(() => started === 1, "the transfer to start");
    const stopped = server.shutdown(20_000);
    assert.equal(server.state, "draining");
    // A new transfer: on the old connection it meets the GOAWAY, a new connection finds no listener.
    const late = new TransferClient(address, clientTls);
    await assert.rejects(late.transfer(messages(header), new AbortController().signal), {
      code: Status.UNAVAILABLE,
    });
    late.close();
    assert.equal(started, 1);
    hold.open();
    assert.equal((await inFlight).dataChunks, 2);
    await stopped;
    assert.equal(server.state, "stopped");
    assert.equal(server.connections, 0);
    client.close();
  });

  it("shutdown: a transfer still running after the grace period is cancelled; shutdown ends", async () => {
    let aborted = false;
    let started = false;
    const { server, address } = await start({
      transfer: (_msgs, signal) =>
        new Promise((_ok, fail) => {
          started = true;
          signal.addEventListener("abort", () => {
            aborted = true;
            fail(signal.reason);
          });
        }),
    });
    const client = new TransferClient(address, clientTls);
    const call = client.transfer(messages(header), new AbortController().signal);
    call.catch(() => {});
    await until(() => started, "the transfer to start");
    const t0 = Date.now();
    await server.shutdown(300);
    assert.ok(Date.now() - t0 < 5_000, `shutdown took ${Date.now() - t0} ms`);
    assert.equal(server.state, "stopped");
    await until(() => aborted, "the handler's signal to abort");
    await assert.rejects(call, (e: { code?: Status }) => e.code !== Status.OK);
    client.close();
  });
});
