/**
 * For the bulk channel's tests (bulk-*.test.ts): the agents' data-plane server on 127.0.0.1 with the
 * lab's certificates and the agent's own transfer entry (authorizeTransfer — same function, same
 * audit — then the sink or any function), the capability minted for a header, a raw bulk client
 * that writes arbitrary bytes and reads the one BulkResult, and a raw HTTP/2 Transfer call alike.
 */
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import tls from "node:tls";
import { AuthzAudit } from "../../../../agents/transfer/authz-audit";
import { ALPN_BULK, parseResult } from "../../../../agents/transfer/bulk/protocol";
import { DataPlaneServer } from "../../../../agents/transfer/data-plane-server";
import { ReceivePool } from "../../../../agents/transfer/message-reader";
import { MAX_MESSAGE_BYTES } from "../../../../agents/transfer/protocol";
import { authorizeTransfer } from "../../../../agents/transfer/transfer-authz";
import type { TransferEntry } from "../../../../agents/transfer/transfer-server";
import { encodeTransferMessage, grpcFrame } from "../../../../agents/transfer/wire";
import { CAPABILITY_HEADER, CapabilitySigner, CapabilityVerifier } from "../../../../src/common/capability";
import { transferAsks } from "../../../../src/common/grants";
import type { Revoked } from "../../../../src/common/revocations";
import { type TlsConfig, tlsFiles } from "../../../../src/common/tls";
import {
  BulkOpen,
  type BulkResult,
  type TransferHeader,
  type TransferMessage,
} from "../../../../src/gen/rbdbackup/v1/transfer";
import { labTls as makeLabTls } from "../../../../src/lab/agent-process";
import { type LogLine, quietLogger } from "./sink-deps";

const tlsByName = new Map<string, TlsConfig>();
/** The lab's certificate `name` (made once per process: the script that checks them takes seconds). */
export function labTls(name: string): TlsConfig {
  let t = tlsByName.get(name);
  if (!t) {
    t = makeLabTls(name);
    tlsByName.set(name, t);
  }
  return t;
}

/** The destination's cluster (sinkDeps' fsid). */
export const FSID = "fsid-b";
const coord = labTls("coordinator");
const signer = new CapabilitySigner(readFileSync(coord.cert as string), readFileSync(coord.key as string));
const verifier = new CapabilityVerifier(readFileSync(coord.ca as string));

/** The coordinator's capability for `h`, held by agent-site-a, naming destination agent `toAgent`. */
export const mint = (h: TransferHeader, toAgent = "agent-site-b") =>
  signer.sign(
    {
      scope: "transfer",
      job: "j",
      attempt: 1,
      holder: { cluster: "site-a", agentId: "agent-site-a" },
      allows: { ...transferAsks(h, FSID), toAgent },
    },
    60_000,
  );

export type Inner = (messages: AsyncIterable<TransferMessage>, signal: AbortSignal) => ReturnType<TransferEntry>;

export interface Served {
  server: DataPlaneServer;
  address: string;
  /** How many streams passed authorization (reached the sink). */
  reached: number;
  /** How many times the server called the entry at all. */
  entered: number;
  /** The audit's lines. */
  lines: LogLine[];
  pool: ReceivePool;
}

const running: DataPlaneServer[] = [];
export async function stopAll(): Promise<void> {
  for (const s of running.splice(0)) await s.shutdown(0);
}

/** The data-plane server as the agent builds it (site-b's certificate), its transfers going to `inner`. */
export async function serve(
  inner: Inner,
  o: {
    idleTimeoutMs?: number;
    bulk?: false;
    maxConcurrentTransfers?: number;
    revoked?: Revoked;
    tls?: TlsConfig;
    /** false: a destination of the version before busy beats (it never says it is busy). */
    busyBeats?: false;
  } = {},
): Promise<Served> {
  const lines: LogLine[] = [];
  const audit = new AuthzAudit(quietLogger(lines));
  const pool = new ReceivePool(8);
  const served = { reached: 0, entered: 0, lines, pool } as Served;
  served.server = new DataPlaneServer({
    tls: o.tls ?? labTls("agent-site-b"),
    ...(o.revoked ? { revoked: o.revoked } : {}),
    transfer: async (messages, signal, caller) => {
      served.entered++;
      const authorized = await authorizeTransfer(
        verifier,
        messages,
        caller,
        { fsid: FSID, agentId: "agent-site-b" },
        audit,
      );
      served.reached++;
      return inner(authorized, signal);
    },
    listChains: async () => ({}),
    maxMessageBytes: MAX_MESSAGE_BYTES,
    maxConcurrentTransfers: o.maxConcurrentTransfers ?? 8,
    pool,
    audit,
    log: quietLogger(),
    bulk: o.bulk !== false,
    idleTimeoutMs: o.idleTimeoutMs ?? 30_000,
    ...(o.busyBeats === false ? { busyBeats: false } : {}),
  });
  served.address = await served.server.listen("127.0.0.1:0");
  running.push(served.server);
  return served;
}

export const openOf = (capability: string, version = 1, busyIntervalMs = 0) =>
  grpcFrame(BulkOpen.encode({ version, capability, busyIntervalMs }).finish());
export const frameOf = (m: TransferMessage) => grpcFrame(encodeTransferMessage(m));

/**
 * Connects as lab certificate `name` offering only the bulk channel, writes `bytes`, then closes its
 * side (unless `end: false`); resolves with the server's BulkResult (null if none) once the server
 * closed, and how long that took. Rejects after `ms`.
 */
/**
 * Writes `bytes` to `to` as a test's peer would: `trickleMs`, `trickleBytes` (default one) at a time this
 * far apart (from `bytes[trickleFrom]` on);
 * `before`, awaited before `bytes[before.index]`. Stops once `to` is gone.
 */
async function writeScripted(
  to: { write(b: Buffer): unknown; readonly destroyed: boolean },
  bytes: Buffer[],
  o: {
    trickleMs?: number;
    trickleFrom?: number;
    trickleBytes?: number;
    before?: { index: number; wait: () => Promise<void> };
  },
): Promise<void> {
  const step = o.trickleBytes ?? 1;
  for (const [i, b] of bytes.entries()) {
    if (o.before?.index === i) await o.before.wait();
    if (!o.trickleMs || i < (o.trickleFrom ?? 0)) {
      to.write(b);
      continue;
    }
    for (let j = 0; j < b.length && !to.destroyed; j += step) {
      to.write(b.subarray(j, j + step));
      await new Promise((r) => setTimeout(r, o.trickleMs));
    }
  }
}

export function rawBulk(
  address: string,
  bytes: Buffer[],
  /**
   * `alpn`: the protocols offered (default the bulk channel's; null: none). `trickleMs`: the bytes go one
   * at a time, this far apart. `before`: awaited before `bytes[before.index]` is written.
   */
  o: {
    name?: string;
    end?: boolean;
    ms?: number;
    alpn?: string[] | null;
    trickleMs?: number;
    /** The bytes before this one go whole (default 0: all trickled). */
    trickleFrom?: number;
    /** Bytes per piece when trickling (default 1). */
    trickleBytes?: number;
    before?: { index: number; wait: () => Promise<void> };
  } = {},
): Promise<{ result: BulkResult | null; ms: number }> {
  const t0 = Date.now();
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port: Number(port),
      servername: "localhost",
      ...tlsFiles(labTls(o.name ?? "agent-site-a"), "test"),
      ...(o.alpn === null ? {} : { ALPNProtocols: o.alpn ?? [ALPN_BULK] }),
    });
    socket.allowHalfOpen = true;
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${o.ms ?? 10_000} ms`));
    }, o.ms ?? 10_000);
    socket.on("error", () => {});
    socket.on("data", (d: Buffer) => got.push(d));
    socket.on("end", () => socket.end());
    socket.on("secureConnect", () => {
      writeScripted(socket, bytes, o)
        .then(() => {
          if (o.end !== false && !socket.destroyed) socket.end();
        })
        .catch(() => socket.destroy());
    });
    socket.on("close", () => {
      clearTimeout(timer);
      try {
        resolve({ result: parseResult(Buffer.concat(got)), ms: Date.now() - t0 });
      } catch (e) {
        reject(e);
      }
    });
  });
}

/**
 * A Transfer call over HTTP/2 (site-a's certificate) writing `frames` raw — `trickleMs`: one byte at a
 * time, this far apart; `before`: awaited before `frames[before.index]` — then its end; the gRPC status
 * and message of the answer.
 */
export function rawH2Transfer(
  address: string,
  capability: string,
  frames: Buffer[],
  o: {
    trickleMs?: number;
    trickleFrom?: number;
    trickleBytes?: number;
    before?: { index: number; wait: () => Promise<void> };
    ms?: number;
  } = {},
): Promise<{ status: number; message: string }> {
  const session = http2.connect(`https://${address}`, {
    ...tlsFiles(labTls("agent-site-a"), "test"),
    servername: "localhost",
  });
  session.on("error", () => {});
  const stream = session.request(
    {
      ":method": "POST",
      ":path": "/rbdbackup.v1.TransferService/Transfer",
      "content-type": "application/grpc",
      te: "trailers",
      [CAPABILITY_HEADER]: capability,
    },
    { endStream: false },
  );
  stream.on("error", () => {});
  stream.resume();
  const write = async () => {
    await writeScripted(stream, frames, o);
    if (!stream.closed) stream.end();
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`no answer within ${o.ms ?? 10_000} ms`));
    }, o.ms ?? 10_000);
    let headers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => {
      headers = h;
    });
    stream.on("trailers", (t) => {
      headers = { ...headers, ...t };
    });
    stream.on("close", () => {
      clearTimeout(timer);
      session.close();
      resolve({
        status: Number(headers["grpc-status"] ?? -1),
        message: decodeURIComponent(String(headers["grpc-message"] ?? "")),
      });
    });
    write().catch(() => stream.close());
  });
}
