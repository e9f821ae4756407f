/**
 * The transfer data plane without Ceph: what moving bytes between two agents' processes costs in CPU,
 * per implementation, side by side in one run (client and server in separate processes, mutual TLS on
 * loopback, 2 MiB chunk messages as agents send them):
 *
 *   grpc-js      nice-grpc client → grpc-js server (the agents' transport before transfer-client.ts
 *                and transfer-server.ts)
 *   ours→grpc-js TransferClient (node:http2, pooled zero-copy frames) → grpc-js server
 *   ours         TransferClient → the data-plane server (node:http2, pooled receive buffers)
 *   bulk         BulkClient → the data-plane server's bulk channel (ALPN "rbdbackup-bulk/1": TLS without
 *                HTTP/2, the same frames and pools; agents with transfer.bulk "auto")
 *   raw TLS      the same bytes over a bare TLS socket: the floor for any TLS transport in Node
 *   raw TCP      the same bytes over a bare plaintext socket in Node (what TLS adds, by difference)
 *   native TLS   the same bytes, mutual TLS, by CPython's ssl over OpenSSL (native-floor.ts): the
 *                floor for any TLS transport on this machine — AES-GCM plus loopback copies
 *   native TCP   the same, plaintext (the kernel's loopback copies alone)
 *
 *   node dist/test/bench/transport.js [--mib 1024] [--rounds 3] [--variants bulk,native TLS] [--node-args "--max-semi-space-size=64"]
 *
 * `--node-args`: every Node variant also runs as "V+" with those flags for node (both roles), in the
 * same rounds, alternating with the plain run.
 *
 * Variants take turns: each round starts one later in the list. Prints, per variant, the median MiB/s
 * and CPU seconds per GiB of each side (the client's from connecting to the answer, the server's from
 * listening to the last byte; the client's includes filling each frame, which stands for the Ceph read).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { createChannel, createClient, createServer } from "nice-grpc";
import { BulkClient } from "../../agents/transfer/bulk/client";
import { DataPlaneServer } from "../../agents/transfer/data-plane-server";
import { TransferClient } from "../../agents/transfer/transfer-client";
import { FRAME, finishChunkFrame, framePool, RELEASE, type Releasable } from "../../agents/transfer/wire";
import { channelCredentials, serverCredentials, tlsChannelOptions, tlsFiles } from "../../src/common/tls";
import { type TransferMessage, TransferServiceDefinition } from "../../src/gen/rbdbackup/v1/transfer";
import { labTls } from "../../src/lab/agent-process";
import { arg, median } from "./measure";
import { NATIVE_VARIANTS, type NativeVariant, nativeArgs } from "./native-floor";

const MiB = 1 << 20;
const CHUNK = 2 * MiB;
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
type Variant = "grpc-js" | "ours→grpc-js" | "ours" | "bulk" | "raw TLS" | "raw TCP" | NativeVariant;
const isNative = (v: Variant): v is NativeVariant => (NATIVE_VARIANTS as readonly string[]).includes(v);
const serverTls = labTls("agent-site-b");
const clientTls = labTls("agent-site-a");

// --- server role: `--role server --variant V`; prints {"port"} then {"cpu"} after every transfer ----------
async function server(variant: Variant): Promise<void> {
  const report = () => process.stdout.write(`${JSON.stringify({ cpu: cpuSeconds() })}\n`);
  if (variant === "raw TLS" || variant === "raw TCP") {
    const onConnection = (c: net.Socket) => {
      c.on("data", () => {});
      c.on("end", () => {
        report();
        c.end();
      });
    };
    const s =
      variant === "raw TCP"
        ? net.createServer(onConnection)
        : tls.createServer({ ...tlsFiles(serverTls, "bench server"), requestCert: true }, onConnection);
    s.listen(0, "127.0.0.1", () =>
      process.stdout.write(`${JSON.stringify({ port: (s.address() as { port: number }).port, cpu: cpuSeconds() })}\n`),
    );
    return;
  }
  const consume = async (messages: AsyncIterable<TransferMessage>) => {
    let bytes = 0;
    for await (const m of messages) {
      if (m.body?.$case === "chunk") bytes += m.body.value.data.length;
      (m as Releasable)[RELEASE]?.();
    }
    report();
    return { dataBytesWritten: bytes };
  };
  if (variant === "ours" || variant === "bulk") {
    const dp = new DataPlaneServer({
      tls: serverTls,
      transfer: consume,
      listChains: async () => ({}),
      maxMessageBytes: 5 * MiB,
      maxConcurrentTransfers: 8,
    });
    const bound = await dp.listen("127.0.0.1:0");
    const port = Number(bound.slice(bound.lastIndexOf(":") + 1));
    process.stdout.write(`${JSON.stringify({ port, cpu: cpuSeconds() })}\n`);
    return;
  }
  const s = createServer({ "grpc.max_receive_message_length": 5 * MiB });
  s.add(TransferServiceDefinition, {
    transfer: (m) => consume(m),
    listChains: async () => ({}),
    resumePoint: async () => ({}),
  });
  const port = await s.listen("127.0.0.1:0", serverCredentials(serverTls));
  process.stdout.write(`${JSON.stringify({ port, cpu: cpuSeconds() })}\n`);
}

// --- client role: `--role client --variant V --port P --mib N`; prints {"cpu","seconds"} ------------------
async function client(variant: Variant, port: number, mib: number): Promise<void> {
  const n = Math.ceil((mib * MiB) / CHUNK);
  const address = `127.0.0.1:${port}`;
  const data = Buffer.alloc(CHUNK, 0xab);
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  if (variant === "raw TLS") {
    const c = tls.connect(port, "127.0.0.1", {
      ...tlsFiles(clientTls, "bench client"),
      servername: "localhost",
    });
    await once(c, "secureConnect");
    for (let i = 0; i < n; i++) if (!c.write(data)) await once(c, "drain");
    c.end();
    c.on("data", () => {});
    await once(c, "end");
  } else if (variant === "raw TCP") {
    const c = net.connect(port, "127.0.0.1");
    await once(c, "connect");
    for (let i = 0; i < n; i++) if (!c.write(data)) await once(c, "drain");
    c.end();
    c.on("data", () => {});
    await once(c, "end");
  } else if (variant === "grpc-js") {
    const cl = createClient(
      TransferServiceDefinition,
      createChannel(address, channelCredentials(clientTls), {
        ...tlsChannelOptions(address, clientTls),
        "grpc.max_send_message_length": 5 * MiB,
      }),
    );
    await cl.transfer(
      (async function* () {
        for (let i = 0; i < n; i++) yield { body: { $case: "chunk", value: { offset: i * CHUNK, data, crc32: 1 } } };
      })(),
    );
  } else {
    const h2 = new TransferClient(address, clientTls);
    const cl = variant === "bulk" ? new BulkClient(address, clientTls, h2) : h2;
    await cl.transfer(
      (async function* () {
        for (let i = 0; i < n; i++) {
          const f = framePool.acquire(CHUNK, CHUNK);
          f.data.set(data); // stands for the Ceph read into the frame
          finishChunkFrame(f, i * CHUNK, 1);
          const m = {
            body: {
              $case: "chunk",
              value: { offset: i * CHUNK, data: f.data, crc32: 1, compression: 0, rawLength: 0 },
            },
          } as TransferMessage & {
            [FRAME]?: unknown;
          };
          m[FRAME] = f;
          yield m;
        }
      })(),
      new AbortController().signal,
    );
    if (variant === "bulk" && !(cl as BulkClient).negotiated) throw new Error("the bulk channel was not negotiated");
    h2.close();
  }
  process.stdout.write(`${JSON.stringify({ cpu: cpuSeconds() - cpu0, seconds: (performance.now() - t0) / 1000 })}\n`);
  process.exit(0);
}

// --- driver --------------------------------------------------------------------------------------------
function lines(p: ChildProcess): AsyncIterator<Record<string, number>> {
  return (async function* () {
    let buf = "";
    for await (const d of p.stdout as AsyncIterable<Buffer>) {
      buf += d.toString();
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i);
        if (line.startsWith("{")) yield JSON.parse(line);
        buf = buf.slice(i + 1);
        i = buf.indexOf("\n");
      }
    }
  })();
}

async function drive(): Promise<void> {
  const mib = Number(arg("mib", "1024"));
  const rounds = Number(arg("rounds", "3"));
  const variants: Variant[] = (
    arg("variants", "grpc-js,ours→grpc-js,ours,bulk,raw TLS,raw TCP,native TLS,native TCP") as string
  ).split(",") as Variant[];
  const nodeArgs = arg("node-args", "").split(" ").filter(Boolean);
  const runs: Array<[string, Variant, string[]]> = variants.flatMap(
    (v): Array<[string, Variant, string[]]> =>
      nodeArgs.length && !isNative(v)
        ? [
            [v, v, []],
            [`${v}+`, v, nodeArgs],
          ]
        : [[v, v, []]],
  );
  const results = new Map<string, Array<{ mibps: number; client: number; server: number }>>();
  const self = process.argv[1] as string;
  for (let r = 0; r < rounds; r++) {
    // Each round starts one variant later, so none always runs first (on a machine warming up or
    // growing busier) and each follows a different one from round to round.
    const order = runs.map((_, i) => runs[(i + r) % runs.length] as [string, Variant, string[]]);
    for (const [name, v, flags] of order) {
      const srv = isNative(v)
        ? spawn("python3", nativeArgs(v, "server", serverTls), { stdio: ["ignore", "pipe", "inherit"] })
        : spawn(process.execPath, [...flags, self, "--role", "server", "--variant", v], {
            stdio: ["ignore", "pipe", "inherit"],
          });
      const out = lines(srv);
      const { port, cpu: before } = (await out.next()).value as { port: number; cpu: number };
      const cli = isNative(v)
        ? spawn("python3", nativeArgs(v, "client", clientTls, port, mib), { stdio: ["ignore", "pipe", "inherit"] })
        : spawn(
            process.execPath,
            [...flags, self, "--role", "client", "--variant", v, "--port", String(port), "--mib", String(mib)],
            {
              stdio: ["ignore", "pipe", "inherit"],
            },
          );
      const c = (await lines(cli).next()).value as { cpu: number; seconds: number };
      const s = (await out.next()).value as { cpu: number };
      srv.kill();
      const gib = mib / 1024;
      const list = results.get(name) ?? [];
      list.push({ mibps: mib / c.seconds, client: c.cpu / gib, server: (s.cpu - before) / gib });
      results.set(name, list);
    }
  }
  console.log(
    `transport only (no Ceph), ${mib} MiB of ${CHUNK / MiB} MiB messages, mutual TLS on loopback, ${rounds} rounds, medians`,
  );
  console.log("variant         MiB/s   client CPU s/GiB   server CPU s/GiB   (CPU from connect to last byte)");
  if (nodeArgs.length) console.log(`V+: node ${nodeArgs.join(" ")}`);
  const base = results.get("grpc-js") ?? [];
  for (const [v] of runs) {
    const l = results.get(v) ?? [];
    const m = median(l.map((x) => x.mibps));
    console.log(
      `${v.padEnd(14)} ${m.toFixed(0).padStart(6)}   ${median(l.map((x) => x.client))
        .toFixed(2)
        .padStart(16)}   ${median(l.map((x) => x.server))
        .toFixed(2)
        .padStart(16)}   ${base.length ? `${(m / median(base.map((x) => x.mibps))).toFixed(2)}× grpc-js` : ""}`,
    );
  }
  const floor = results.get("native TLS");
  if (floor) {
    const [fc, fs] = [median(floor.map((x) => x.client)), median(floor.map((x) => x.server))];
    console.log(`above the native TLS floor (${fc.toFixed(2)} + ${fs.toFixed(2)} CPU-s/GiB), client + server:`);
    for (const [v] of runs.filter(([, x]) => !isNative(x))) {
      const l = results.get(v) ?? [];
      const [c, s] = [median(l.map((x) => x.client)), median(l.map((x) => x.server))];
      console.log(`${v.padEnd(14)} ${(c - fc).toFixed(2).padStart(6)} + ${(s - fs).toFixed(2)}`);
    }
  }
  console.log(JSON.stringify({ transport: Object.fromEntries(results) }));
}

const role = arg("role", "");
const variant = arg("variant", "") as Variant;
if (role === "server") void server(variant);
else if (role === "client") void client(variant, Number(arg("port", "0")), Number(arg("mib", "1024")));
else void drive();
