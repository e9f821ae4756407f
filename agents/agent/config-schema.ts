/**
 * The agent's configuration schema: every field once, with its type, range, default and meaning.
 * `AgentFile` (the checked file, defaults filled in) is derived from it, and so is the published
 * deploy/schema/agent.schema.json. Regenerate that file after a change here:
 *
 *   npm run build:ts && node dist/agents/agent/config-schema.js > deploy/schema/agent.schema.json \
 *     && npx biome format --write deploy/schema/agent.schema.json
 */
import { Type } from "@sinclair/typebox";
import {
  block,
  daemonSchema,
  HOST_PORT_PATTERN,
  hostPort,
  int,
  type Loaded,
  optionalText,
  schemaFile,
  TlsSchema,
  text,
} from "../../src/common/config/fields";
import type { FlagSpec } from "../../src/common/config/load";
import { DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MiB } from "../transfer/protocol";

const Cluster = block("The Ceph cluster this agent serves.", {
  name: text('Name of the cluster, e.g. "site-a".'),
  conf: text("Path of its ceph.conf."),
  clientId: text('Ceph user without "client.", e.g. "rbdbackup".', "rbdbackup"),
  keyring: Type.Optional(Type.String({ description: "Keyring of that user (default: as ceph.conf says)." })),
  connectTimeoutSeconds: int("Seconds to wait for the cluster when connecting.", 1, 3600, 30),
  opTimeoutSeconds: int("Seconds a single librados/librbd operation may take.", 1, 3600, 60),
});

export const MAX_WINDOW_BYTES = 4096 * MiB;
export const MAX_READS_IN_FLIGHT = 1024;

const Limits = block("Throughput and concurrency limits.", {
  chunkSizeBytes: int("Largest data chunk sent, bytes (at most 4 MiB).", 4096, MAX_CHUNK_BYTES, DEFAULT_CHUNK_BYTES),
  // × 2 MiB chunks: 16 MiB read ahead at most; 4, 8 and 16 within noise, small extents (incrementals) want more.
  readsInFlight: int("Source: reads ahead of the network.", 1, MAX_READS_IN_FLIGHT, 8),
  maxReadsInFlight: int(
    "Source: while reads are slow (50 ms or more on average: OSD latency) the read window may grow, in steps of half readsInFlight each kept only if throughput rose, up to this many; 0 = one and a half times readsInFlight; = readsInFlight keeps it fixed.",
    0,
    MAX_READS_IN_FLIGHT,
    0,
  ),
  // Issue 16: the window's bytes bound the memory (agent peak RSS ≤ 192 MiB), the count bounds small writes:
  // 16 of an incremental's 64 KiB extents cut its receive 535 → 404 ms with 0–4 ms of OSD latency and changed
  // nothing on the CPU-bound lab (README, seventh round). 32 MiB (16 × 2 MiB chunks) since the twelfth round:
  // when writes are slow (OSD latency, a busy OSD) the receive waited for room 90 % of its time at 16 MiB; the
  // window fills only then, so the destination's peak grew 124–131 → 141–148 MiB there and not at all when
  // writes keep up (README, Measured).
  writesInFlight: int("Destination: aio writes in flight.", 1, 1024, 16),
  windowBytes: int("Destination: bytes held for the writes in flight.", MAX_CHUNK_BYTES, MAX_WINDOW_BYTES, 32 * MiB),
  // 0–100 ms of OSD latency: 64 MiB (32 writes) took the receive from 80 % to 107 % of raw `rbd bench` write, at
  // +20 MiB of peak; a fixed 64 MiB would cost that everywhere, growing only while it pays does not (widening.ts).
  maxWindowBytes: int(
    "Destination: while writes are slow (50 ms or more on average: OSD or network latency) the window may grow, in steps of half windowBytes each kept only if throughput rose, up to this many bytes, writesInFlight in proportion; 0 = twice windowBytes; = windowBytes keeps it fixed.",
    0,
    MAX_WINDOW_BYTES,
    0,
  ),
  maxConcurrentTransfers: int("Destination: transfers served at once (more get RESOURCE_EXHAUSTED).", 1, 1024, 8),
  maxConcurrentJobs: int("Jobs leased from the coordinator that run at once (the capacity it registers).", 1, 1024, 4),
  fullCheckIntervalMs: int(
    "Destination: how often a running transfer checks whether its pool became full.",
    100,
    60_000,
    2000,
  ),
  http2WindowBytes: int(
    "HTTP/2 receive window of the gRPC server (per stream and per connection), bytes.",
    65535,
    2 ** 31 - 1,
    16 * MiB,
  ),
  bandwidthBytesPerSecond: int(
    "Source: cap on the bytes per second all this agent's transfers to other agents put on the wire together, after compression (0 = none; else at least 1048576). A job's TransferOptions cap applies on top.",
    0,
    2 ** 40,
    0,
  ),
});

const Transfer = block("Transfers between agents: resuming (as a destination), compression (as a source).", {
  resumeTtlSeconds: int(
    "How long a transfer cut short (source gone, network cut, this agent killed) keeps its half-written image and checkpoint for a retry to resume; then it is undone.",
    0,
    30 * 86400,
    3600,
  ),
  bulk: Type.Union([Type.Literal("auto"), Type.Literal("off")], {
    description:
      'The bulk channel (transfer.proto BulkOpen: TLS without HTTP/2, ALPN "rbdbackup-bulk/1"): "auto" offers it as a destination and uses it as a source when the peer offers it (else the HTTP/2 Transfer call); "off" neither.',
    default: "auto",
  }),
  bulkIdleTimeoutMs: int(
    "Bulk channel and HTTP/2 Transfer call alike: a destination waiting for the source's next message (its header too) that receives nothing (or a message under way that gains under 4 KiB in this time), or a source whose bytes are not taken while the destination does not say it is busy (it does every third of this, when asked), for this long ends the transfer with DEADLINE_EXCEEDED; the destination's own work (prepare, drain, flush, commit) is bounded by cluster.opTimeoutSeconds instead.",
    100,
    3_600_000,
    30_000,
  ),
  zstdLevel: int(
    "Source: the zstd level of transfers sent with compression ZSTD (1 = fastest, the default; up to 19).",
    1,
    19,
    1,
  ),
});

const TestFaults = Type.Optional(
  block("Test-only faults; honoured only when the environment has RBDBACKUP_ENABLE_TEST_FAULTS=1.", {
    corruptChunk: Type.Optional(int("Flip a byte of this data chunk (1-based) when sending.", 0, 2 ** 31 - 1)),
    writeDelayMs: Type.Optional(int("Delay every write on the destination by this many ms.", 0, 600_000)),
    growBeforeSnapshotBytes: Type.Optional(
      int("Grow a volume by this many bytes just before its backup snapshot is made.", 0, 2 ** 40),
    ),
    dieBeforeOutcome: Type.Optional(
      Type.Boolean({ description: "Die (SIGKILL) when a backup attempt succeeded, before its outcome is sent." }),
    ),
  }),
);

export const AgentConfigSchema = daemonSchema("rbdbackup agent configuration", {
  agentId: Type.Optional(text("Stable id of this agent (default: <hostname>-<cluster name>).")),
  cluster: Cluster,
  listen: hostPort("host:port of the gRPC server (AgentService, health). Port 0 picks a free one.", "127.0.0.1:7400"),
  transferListen: hostPort(
    "host:port of the data plane (TransferService, its own listener). Port 0 picks a free one.",
    "127.0.0.1:7401",
  ),
  transferAdvertiseAddress: hostPort(
    'host:port peers use to reach the data plane; "" = the address it listens on.',
    "",
    true,
  ),
  coordinator: block(
    "The coordinator this agent dials: `address` first, then `addresses` (duplicates dropped), tried in turn; none = the agent only serves direct calls.",
    {
      address: hostPort('host:port of the coordinator; "" = none.', "", true),
      addresses: Type.Array(Type.String({ pattern: HOST_PORT_PATTERN }), {
        description:
          "More host:port addresses of the coordinator (e.g. its standby, or its old and new address), tried in order after `address`: a failed dial or a lost session moves to the next, and the reconnect backoff waits between full rounds.",
        default: [],
      }),
    },
  ),
  metricsListen: hostPort(
    'host:port of the Prometheus /metrics endpoint (plain HTTP; keep it on a trusted network); "" = off.',
    "127.0.0.1:9740",
    true,
  ),
  tls: TlsSchema,
  stateDir: text("Where the agent keeps its recovery journal.", "/var/lib/rbdbackup/agent"),
  backupPool: text("Default pool for backups written into this cluster.", "backups"),
  sourcePaths: Type.Array(Type.String({ minLength: 1, pattern: "^/" }), {
    description:
      "Absolute paths (files, block devices, or directories holding them) that a backup may read as a path source; [] (the default) refuses every path source.",
    default: [],
  }),
  limits: Limits,
  transfer: Transfer,
  auth: block("Certificates this agent refuses whatever the CA says.", {
    revokedCertificatesFile: optionalText(
      'File of revoked certificates, one SHA-256 fingerprint per line as `openssl x509 -noout -fingerprint -sha256 -in CERT.pem` prints it (or bare hex; "#" starts a comment) — the same file as the coordinator\'s auth.revokedCertificatesFile. This agent refuses a coordinator presenting one (its session is not opened, and an open one ends at the reload), its AgentService calls and the leases and transfer capabilities signed with it, and a peer agent\'s TransferService calls presenting one; as a source it starts no transfer to a peer presenting one. A bad line is refused at start. Reloaded on SIGHUP (a bad file then keeps the old list). "" = none revoked.',
    ),
  }),
  audit: block("The audit log (refused AgentService and Transfer calls, direct mutating calls).", {
    file: optionalText(
      'File the audit lines (JSON) are appended to; "" = the log only (they always go there, with "audit": true). Reopened at its path on SIGHUP (log rotation).',
    ),
  }),
  shutdownGraceSeconds: int("Seconds to let running work finish on SIGTERM.", 0, 3600, 30),
  testFaults: TestFaults,
});

/** The checked file, every default filled in. */
export type AgentFile = Loaded<typeof AgentConfigSchema>;

/** The agent's flags: each overrides one field of the file. */
export const agentFlags: Record<string, FlagSpec> = {
  "agent-id": { path: "agentId" },
  "cluster-name": { path: "cluster.name" },
  "ceph-conf": { path: "cluster.conf" },
  "client-id": { path: "cluster.clientId" },
  keyring: { path: "cluster.keyring" },
  listen: { path: "listen" },
  "transfer-listen": { path: "transferListen" },
  "transfer-advertise-address": { path: "transferAdvertiseAddress" },
  // Repeated or comma-separated: the whole list (it replaces both fields of the file).
  coordinator: {
    path: "coordinator.addresses",
    kind: "list",
    replaces: ["coordinator.address"],
    help: "Every coordinator address (host:port), tried in order: replaces both coordinator.address and coordinator.addresses of the file",
  },
  "metrics-listen": { path: "metricsListen" },
  "tls-ca": { path: "tls.ca" },
  "tls-cert": { path: "tls.cert" },
  "tls-key": { path: "tls.key" },
  insecure: { path: "tls.insecure", kind: "boolean" },
  "revoked-certificates-file": { path: "auth.revokedCertificatesFile" },
  "state-dir": { path: "stateDir" },
  "backup-pool": { path: "backupPool" },
};

if (require.main === module) process.stdout.write(schemaFile(AgentConfigSchema));
