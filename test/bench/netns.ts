/**
 * An emulated WAN for benchmarks, between two processes that both stay on 127.0.0.1 in the root
 * network namespace (the lab's Ceph clusters live there): two namespaces A and B joined by a veth pair
 * whose ends are shaped (rate; and delay with `tc netem` where the kernel has it), and relays:
 *
 *   client → 127.0.0.1:P (entry relay, root) → unix a.sock → relay in A → veth → relay in B
 *          → unix b.sock → exit relay (root) → 127.0.0.1:<target>
 *
 * Unix sockets cross namespaces through the filesystem. TLS passes through the relays untouched. The
 * entry relay counts the bytes of each direction (what crossed the "WAN"). Where the kernel has no
 * netem (CONFIG_NET_SCH_NETEM unset, as on the lab VM), the rate is a `tbf` qdisc on each veth end and
 * the delay is a delay line in the relays of A (towards B) and of B (towards A), holding at most a TCP
 * window's worth of bytes. Everything is named `<prefix>-<hex>` and removed by `close()` (idempotent).
 * Needs root.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type Relay, startRelay } from "./relay";

const execFileP = promisify(execFile);
const ip = (...args: string[]) => execFileP("ip", args, { timeout: 10_000 });
const inNs = (ns: string, cmd: string, ...args: string[]) =>
  execFileP("ip", ["netns", "exec", ns, cmd, ...args], { timeout: 10_000 });

export interface WanOptions {
  /** Name prefix of the namespaces and devices (≤ 6 characters; default "rbdwan"). */
  prefix?: string;
  /** Round-trip time added, ms (half each way). */
  rttMs: number;
  /** Link rate, Mbit/s. */
  rateMbit: number;
  /** Bytes a relay's delay line holds at most (default 8 MiB: Linux's default TCP buffers reach ~6 MiB). */
  windowBytes?: number;
}

export interface WanCounters {
  /** Bytes from the client towards the target (through the entry relay). */
  fwd: number;
  back: number;
  /** performance.now() of the first and last forward chunk since the last reset. */
  firstAt: number;
  lastAt: number;
}

export interface WanPath {
  /** host:port clients dial (the entry relay). */
  entry: string;
  /** How the delay is made: "netem" (kernel) or "relay" (delay line in the namespace relays). */
  delayBy: "netem" | "relay";
  names: { nsA: string; nsB: string };
  /** Where the exit relay forwards new connections (host:port). */
  setTarget(hostPort: string): void;
  counters: WanCounters;
  resetCounters(): void;
  close(): Promise<void>;
}

async function netemAvailable(ns: string, dev: string): Promise<boolean> {
  try {
    await inNs(ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms");
    await inNs(ns, "tc", "qdisc", "del", "dev", dev, "root");
    return true;
  } catch {
    return false;
  }
}

function waitListening(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${what}: not listening after 10 s`)), 10_000);
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"listening"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited ${code} before listening`));
    });
  });
}

/** Builds the namespaces, the shaped link and the relays; the exit forwards to `target` (host:port). */
export async function startWanPath(o: WanOptions, target: string): Promise<WanPath> {
  const id = `${o.prefix ?? "rbdwan"}${randomBytes(2).toString("hex")}`;
  const nsA = `${id}-a`;
  const nsB = `${id}-b`;
  const devA = `${id}a`;
  const devB = `${id}b`;
  const [addrA, addrB] = ["10.254.77.1", "10.254.77.2"];
  const dir = mkdtempSync(path.join(tmpdir(), `${id}-`));
  const children: ChildProcess[] = [];
  const relays: Relay[] = [];
  let made = false;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    await Promise.all(relays.map((r) => r.close().catch(() => {})));
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((res) => {
            if (c.exitCode !== null || c.signalCode !== null) return res();
            const t = setTimeout(() => {
              c.kill("SIGKILL");
              res();
            }, 3000);
            c.once("exit", () => {
              clearTimeout(t);
              res();
            });
          }),
      ),
    );
    // Deleting a namespace deletes the veth end in it (and so the pair).
    if (made) for (const ns of [nsA, nsB]) await ip("netns", "del", ns).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    made = true;
    await ip("netns", "add", nsA);
    await ip("netns", "add", nsB);
    await ip("link", "add", devA, "netns", nsA, "type", "veth", "peer", "name", devB, "netns", nsB);
    for (const [ns, dev, addr] of [
      [nsA, devA, addrA],
      [nsB, devB, addrB],
    ] as const) {
      await inNs(ns, "ip", "link", "set", "lo", "up");
      await inNs(ns, "ip", "addr", "add", `${addr}/30`, "dev", dev);
      await inNs(ns, "ip", "link", "set", dev, "up");
    }
    const oneWay = o.rttMs / 2;
    const delayBy = (await netemAvailable(nsA, devA)) ? "netem" : "relay";
    for (const [ns, dev] of [
      [nsA, devA],
      [nsB, devB],
    ] as const) {
      const rate = `${o.rateMbit}mbit`;
      if (delayBy === "netem")
        await inNs(
          ns,
          "tc",
          "qdisc",
          "add",
          "dev",
          dev,
          "root",
          "netem",
          "delay",
          `${oneWay}ms`,
          "rate",
          rate,
          "limit",
          "100000",
        );
      // Burst: one GSO segment and then some; a queue of up to 50 ms before tbf drops.
      else
        await inNs(
          ns,
          "tc",
          "qdisc",
          "add",
          "dev",
          dev,
          "root",
          "tbf",
          "rate",
          rate,
          "burst",
          "256kb",
          "latency",
          "50ms",
        );
    }
    const relayDelay = delayBy === "relay" ? oneWay : 0;
    const window = String(o.windowBytes ?? 8 << 20);
    const script = path.join(__dirname, "relay.js");
    const sockA = path.join(dir, "a.sock");
    const sockB = path.join(dir, "b.sock");
    // Exit first (root: b.sock → target), then B (veth → b.sock), then A (a.sock → veth), then the entry.
    let targetNow = target;
    relays.push(await startRelay({ listen: `unix:${sockB}`, connect: () => `tcp:${targetNow}` }));
    const spawnIn = async (ns: string, args: string[], what: string) => {
      const c = spawn("ip", ["netns", "exec", ns, process.execPath, script, ...args], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      children.push(c);
      await waitListening(c, what);
    };
    await spawnIn(
      nsB,
      ["--listen", `tcp:${addrB}:7000`, "--connect", `unix:${sockB}`, "--delay-back-ms", String(relayDelay)],
      "relay in B",
    );
    await spawnIn(
      nsA,
      [
        "--listen",
        `unix:${sockA}`,
        "--connect",
        `tcp:${addrB}:7000`,
        "--delay-fwd-ms",
        String(relayDelay),
        "--window-bytes",
        window,
      ],
      "relay in A",
    );
    const counters: WanCounters = { fwd: 0, back: 0, firstAt: 0, lastAt: 0 };
    const entry = await startRelay({
      listen: "tcp:127.0.0.1:0",
      connect: `unix:${sockA}`,
      onBytes(dir, n) {
        if (dir === "back") {
          counters.back += n;
          return;
        }
        const now = performance.now();
        if (counters.fwd === 0) counters.firstAt = now;
        counters.fwd += n;
        counters.lastAt = now;
      },
    });
    relays.push(entry);
    return {
      entry: entry.hostPort,
      delayBy,
      names: { nsA, nsB },
      setTarget: (t) => {
        targetNow = t;
      },
      counters,
      resetCounters: () => Object.assign(counters, { fwd: 0, back: 0, firstAt: 0, lastAt: 0 }),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** A loopback server for probing a path: echoes (mode "echo") or discards and counts ("sink"). */
export async function probeServer(
  mode: "echo" | "sink",
): Promise<{ address: string; received(): number; close(): Promise<void> }> {
  let received = 0;
  const socks = new Set<Socket>();
  const server: Server = createServer((s) => {
    socks.add(s);
    s.on("close", () => socks.delete(s));
    s.on("error", () => {});
    s.on("data", (d: Buffer) => {
      received += d.length;
      if (mode === "echo") s.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    received: () => received,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  };
}

function dialHostPort(hostPort: string): Promise<Socket> {
  const i = hostPort.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const s = connect({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) }, () => resolve(s));
    s.setNoDelay(true);
    s.once("error", reject);
  });
}

/** Round trips of one byte through `entry` to an echo server: each RTT, ms (the connection's first excluded). */
export async function measureRttMs(entry: string, count = 10): Promise<number[]> {
  const s = await dialHostPort(entry);
  const rtts: number[] = [];
  try {
    for (let i = 0; i <= count; i++) {
      const t = performance.now();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no echo within 5 s")), 5000);
        s.once("data", () => {
          clearTimeout(timer);
          resolve();
        });
        s.write(Buffer.from([i & 0xff]));
      });
      if (i > 0) rtts.push(performance.now() - t);
    }
  } finally {
    s.destroy();
  }
  return rtts;
}

/** Sends `bytes` through `entry` to a sink and times until the sink has them all: MiB/s. */
export async function measureThroughputMiBps(
  entry: string,
  sink: { received(): number },
  bytes: number,
  timeoutMs = 120_000,
): Promise<number> {
  const s = await dialHostPort(entry);
  const start = sink.received();
  const block = randomBytes(1 << 20);
  const t = performance.now();
  try {
    for (let sent = 0; sent < bytes; sent += block.length) {
      if (!s.write(block)) await new Promise((r) => s.once("drain", r));
    }
    const deadline = t + timeoutMs;
    while (sink.received() - start < bytes) {
      if (performance.now() > deadline)
        throw new Error(`throughput probe: ${sink.received() - start} of ${bytes} bytes after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return bytes / (1 << 20) / ((performance.now() - t) / 1000);
  } finally {
    s.destroy();
  }
}
