/**
 * Fakes for the agent session's unit tests: a real in-process gRPC server on 127.0.0.1:0 implementing
 * CoordinatorAgentService (insecure credentials, loopback only) that records every stream and lets a
 * test send messages and end streams; fake AgentOperations whose attempts the test finishes by hand;
 * a waiter that wakes on every change (no sleeps) and fails after a deadline.
 */
import { ServerCredentials } from "@grpc/grpc-js";
import { createServer, type Server } from "nice-grpc";
import { type Metadata, ServerError, Status } from "nice-grpc-common";
import { Changes } from "../../../agents/agent/changes";
import type { SessionOperations } from "../../../agents/agent/operations";
import type { Progress } from "../../../agents/engine/progress";
import { AppError } from "../../../src/common/errors";
import type { Logger } from "../../../src/common/log";
import { AsyncQueue } from "../../../src/common/queue";
import { abortError } from "../../../src/common/retry";
import { serverCredentials, type TlsConfig } from "../../../src/common/tls";
import type {
  BackupRequest,
  BackupResult,
  DeleteBackupDataRequest,
  DeleteBackupDataResult,
  FlattenRequest,
  FlattenResult,
  GetBackupMetadataRequest,
  ListImageSnapshotsRequest,
  RestoreRequest,
  RestoreResult,
  VerifyRequest,
  VerifyResult,
} from "../../../src/gen/rbdbackup/v1/agent";
import {
  type AgentMessage,
  CoordinatorAgentServiceDefinition,
  type CoordinatorMessage,
  type DigestMapRequest,
  type DigestMapResponse,
  type ProbeResponse,
} from "../../../src/gen/rbdbackup/v1/session";
import type { BackupSnapshot } from "../../../src/gen/rbdbackup/v1/transfer";

/** Everything observable in these tests notifies this; `waitFor` wakes on it. */
export const changes = new Changes();

/** Waits until `cond()` holds; fails naming `what` after `ms`. */
export async function waitFor(what: string, cond: () => boolean, ms = 5_000): Promise<void> {
  if (!(await changes.until(cond, ms))) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** A logger that keeps its lines (for assertions) and prints nothing. */
export function recordingLogger(lines: string[] = []): Logger & { lines: string[] } {
  const rec = (msg: string) => {
    lines.push(msg);
    changes.notify();
  };
  return { lines, debug: rec, info: rec, warn: rec, error: rec, child: () => recordingLogger(lines) };
}

export interface FakeStream {
  received: AgentMessage[];
  /** When each of `received` arrived (Date.now()). */
  receivedAt: number[];
  out: AsyncQueue<CoordinatorMessage>;
  ended: boolean;
}

/** A coordinator that accepts sessions, records them and answers only what a test tells it to. */
export class FakeCoordinator {
  streams: FakeStream[] = [];
  /** Streams refused with UNAVAILABLE (counted). */
  refused = 0;
  refuse = false;
  /** As a standby: refuse every stream UNAVAILABLE naming this leader address in the rbdbackup-leader trailer. */
  standbyOf = "";
  /** Acknowledge every outcome at once (as the real coordinator does). */
  autoAck = false;
  /** Answer Register with Registered. */
  autoRegister = true;
  heartbeatIntervalMs = 60_000;
  /** Registered.idle_heartbeat_interval_ms (0: unset, as a coordinator of before that field). */
  idleHeartbeatIntervalMs = 0;
  #server: Server | null = null;
  address = "";

  /** `tls`: mutual TLS with these files (a client certificate required); plaintext without. */
  async start(tls?: TlsConfig): Promise<this> {
    const server = createServer();
    server.add(CoordinatorAgentServiceDefinition, {
      session: (req, ctx) => this.#session(req, ctx.signal, ctx.trailer),
      exportData: async () => {
        throw new ServerError(Status.UNIMPLEMENTED, "not in the fake");
      },
      // biome-ignore lint/correctness/useYield: a fake that refuses
      importData: async function* () {
        throw new ServerError(Status.UNIMPLEMENTED, "not in the fake");
      },
    });
    const port = await server.listen("127.0.0.1:0", tls ? serverCredentials(tls) : ServerCredentials.createInsecure());
    this.#server = server;
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.streams) s.out.close();
    this.#server?.forceShutdown();
  }

  /** The stream number `i` (0-based), once the agent has opened it. */
  async stream(i: number): Promise<FakeStream> {
    await waitFor(`session stream #${i}`, () => this.streams.length > i);
    return this.streams[i] as FakeStream;
  }

  get last(): FakeStream {
    const s = this.streams.at(-1);
    if (!s) throw new Error("no stream yet");
    return s;
  }

  send(s: FakeStream, msg: CoordinatorMessage["msg"]): void {
    s.out.push({ msg });
  }

  /** The messages of one kind a stream has received. */
  static of<K extends NonNullable<AgentMessage["msg"]>["$case"]>(
    s: FakeStream,
    kind: K,
  ): Array<Extract<NonNullable<AgentMessage["msg"]>, { $case: K }>["value"]> {
    return s.received.flatMap((m) => (m.msg?.$case === kind ? [m.msg.value as never] : []));
  }

  async *#session(
    requests: AsyncIterable<AgentMessage>,
    signal: AbortSignal,
    trailer?: Metadata,
  ): AsyncGenerator<CoordinatorMessage> {
    if (this.standbyOf) {
      this.refused++;
      changes.notify();
      trailer?.set("rbdbackup-leader", this.standbyOf);
      throw new ServerError(Status.UNAVAILABLE, `this coordinator is a standby; the leader is l at ${this.standbyOf}`);
    }
    if (this.refuse) {
      this.refused++;
      changes.notify();
      throw new ServerError(Status.UNAVAILABLE, "refused by the fake coordinator");
    }
    const s: FakeStream = { received: [], receivedAt: [], out: new AsyncQueue(), ended: false };
    this.streams.push(s);
    signal.addEventListener("abort", () => s.out.close(), { once: true });
    (async () => {
      for await (const m of requests) {
        s.received.push(m);
        s.receivedAt.push(Date.now());
        if (m.msg?.$case === "register" && this.autoRegister) {
          this.send(s, {
            $case: "registered",
            value: {
              heartbeatIntervalMs: this.heartbeatIntervalMs,
              leaseTtlMs: 60_000,
              revokedTokens: [],
              idleHeartbeatIntervalMs: this.idleHeartbeatIntervalMs,
            },
          });
        }
        if (m.msg?.$case === "outcome" && this.autoAck) {
          this.send(s, { $case: "heartbeatAck", value: { revokedTokens: [], outcomesReceived: [m.msg.value.token] } });
        }
        changes.notify();
      }
    })()
      .catch(() => {})
      .finally(() => {
        s.ended = true;
        s.out.close();
        changes.notify();
      });
    changes.notify();
    yield* s.out;
  }
}

export interface FakeAttempt {
  kind: "backup" | "restore" | "delete" | "flatten" | "verify";
  req: BackupRequest | RestoreRequest | DeleteBackupDataRequest | FlattenRequest | VerifyRequest;
  signal: AbortSignal | null;
  progress: Progress | null;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/** Operations whose attempts wait for the test; an abort rejects them, as the engine does. */
export class FakeOps implements SessionOperations {
  attempts: FakeAttempt[] = [];
  fenced: Array<[string, number]> = [];
  probes = 0;
  ctx = {
    cluster: {
      addrs: () => "10.0.0.1:0/111",
      blocklistAdd: async (addr: string, seconds: number) => {
        this.fenced.push([addr, seconds]);
      },
    },
  };

  #attempt<T>(kind: FakeAttempt["kind"], req: FakeAttempt["req"], signal?: AbortSignal, progress?: Progress) {
    return new Promise<T>((resolve, reject) => {
      this.attempts.push({
        kind,
        req,
        signal: signal ?? null,
        progress: progress ?? null,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      signal?.addEventListener("abort", () => reject(abortError(signal)), { once: true });
      changes.notify();
    });
  }

  backup(req: BackupRequest, signal: AbortSignal, progress?: Progress): Promise<BackupResult> {
    return this.#attempt("backup", req, signal, progress);
  }
  restore(req: RestoreRequest, signal: AbortSignal, progress?: Progress): Promise<RestoreResult> {
    return this.#attempt("restore", req, signal, progress);
  }
  deleteBackup(req: DeleteBackupDataRequest): Promise<DeleteBackupDataResult> {
    return this.#attempt("delete", req);
  }
  flatten(req: FlattenRequest, signal: AbortSignal): Promise<FlattenResult> {
    return this.#attempt("flatten", req, signal);
  }
  verify(req: VerifyRequest, signal: AbortSignal, progress?: Progress): Promise<VerifyResult> {
    return this.#attempt("verify", req, signal, progress);
  }
  async digestMap(req: DigestMapRequest): Promise<DigestMapResponse> {
    if (req.backupId === "no-map") return { found: false, map: new Uint8Array(0) };
    return { found: true, map: Buffer.from(`map of ${req.backupId} in ${req.pool}`) };
  }
  async checkCluster(): Promise<never> {
    throw new AppError(Status.PERMISSION_DENIED, "no caps in this fake");
  }
  /** Backup snapshots by image name (an image not named here is NOT_FOUND); metadata JSON by backup id. */
  snapshots = new Map<string, BackupSnapshot[]>();
  metadata = new Map<string, string>();
  /** The listing and metadata questions asked, in order ("list <image>", "meta <id>"). */
  asked: string[] = [];
  async listBackupSnapshots(req: ListImageSnapshotsRequest): Promise<{ snapshots: BackupSnapshot[] }> {
    this.asked.push(`list ${req.image?.image}`);
    const s = this.snapshots.get(req.image?.image ?? "");
    if (!s) throw new AppError(Status.NOT_FOUND, "no such image in this fake");
    return { snapshots: s };
  }
  async getBackupMetadata(req: GetBackupMetadataRequest): Promise<{ found: boolean; json: string }> {
    this.asked.push(`meta ${req.backupId}`);
    if (!this.metadata.size) throw new AppError(Status.NOT_FOUND, "no metadata in this fake");
    const json = this.metadata.get(req.backupId);
    return { found: json !== undefined, json: json ?? "" };
  }
  async listImages(): Promise<{ images: string[] }> {
    return { images: ["vol-a", "vol-b"] };
  }
  pruned: Array<{ image: string; backupIds: string[] }> = [];
  async pruneBackupSnapshots(req: {
    image?: { image: string };
    backupIds: string[];
  }): Promise<{ removed: string[]; warnings: string[] }> {
    this.pruned.push({ image: req.image?.image ?? "", backupIds: req.backupIds });
    return { removed: req.backupIds.map((id) => `backup.${id}.snap.1`), warnings: [] };
  }
  async scanBackups(): Promise<{ clusterFsid: string; backups: never[]; nextCursor: string }> {
    return { clusterFsid: "fake-fsid", backups: [], nextCursor: "" };
  }
  async probe(): Promise<ProbeResponse> {
    this.probes++;
    return { missingPools: ["nope"], missingNamespaces: [], imageExists: false, imageSize: 0, imageSnapshots: [] };
  }
}
