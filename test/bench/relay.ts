/**
 * A byte relay for the WAN bench (test/bench/netns.ts): accepts connections on one endpoint (TCP
 * `tcp:host:port` or a unix socket `unix:/path`), dials another for each, and copies bytes both ways
 * untouched (TLS passes through), with backpressure and half-close. Optionally it is a delay line:
 * bytes in one direction leave `delayMs` after they arrived, in order, holding at most `windowBytes`
 * (then it stops reading: what a TCP window does on a long link). Counts the bytes of each direction.
 *
 * Run alone (the bench runs it inside a network namespace with `ip netns exec`):
 *   node dist/test/bench/relay.js --listen unix:/tmp/x/a.sock --connect tcp:10.1.2.2:7000
 *                                 [--delay-fwd-ms 10] [--delay-back-ms 0] [--window-bytes 8388608]
 * It prints one JSON line {"listening": "..."} when ready and runs until SIGTERM.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface RelayOptions {
  /** "tcp:host:port" (port 0: a free one) or "unix:/path". */
  listen: string;
  /** Where each accepted connection is forwarded (read at each connection: may change). */
  connect: string | (() => string);
  /** Delay of bytes from the accepting side towards the dialled side (ms; 0 = a plain copy). */
  delayFwdMs?: number;
  /** Delay of bytes coming back. */
  delayBackMs?: number;
  /** Bytes a delay line holds before it stops reading (default 8 MiB). */
  windowBytes?: number;
  /** Called for every chunk relayed ("fwd": towards the dialled side). */
  onBytes?(dir: "fwd" | "back", n: number): void;
}

export interface Relay {
  /** The listening endpoint ("tcp:127.0.0.1:41234" or "unix:/path"). */
  endpoint: string;
  /** host:port for a TCP relay. */
  hostPort: string;
  close(): Promise<void>;
}

function dial(spec: string): Socket {
  if (spec.startsWith("unix:")) return createConnection({ path: spec.slice(5), allowHalfOpen: true });
  const m = /^tcp:(.+):(\d+)$/.exec(spec);
  if (!m) throw new Error(`bad endpoint ${spec} (tcp:host:port or unix:/path)`);
  return createConnection({ host: m[1] as string, port: Number(m[2]), allowHalfOpen: true });
}

/** Copies `from` to `to`, each chunk `delayMs` late (0: at once), at most `window` bytes held. */
function pump(from: Socket, to: Socket, delayMs: number, window: number, count: (n: number) => void): void {
  const queue: Array<{ at: number; buf: Buffer }> = [];
  let held = 0;
  let ended = false;
  let timer: NodeJS.Timeout | undefined;
  const maybeResume = () => {
    if (from.isPaused() && held + to.writableLength <= window) from.resume();
  };
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && (queue[0] as { at: number }).at <= now) {
      const { buf } = queue.shift() as { buf: Buffer };
      held -= buf.length;
      to.write(buf);
    }
    if (queue.length > 0) timer = setTimeout(flush, Math.max(1, (queue[0] as { at: number }).at - now));
    else if (ended) to.end();
    maybeResume();
  };
  from.on("data", (buf: Buffer) => {
    count(buf.length);
    if (delayMs <= 0 && queue.length === 0) {
      if (!to.write(buf)) from.pause();
      return;
    }
    queue.push({ at: performance.now() + delayMs, buf });
    held += buf.length;
    if (held + to.writableLength > window) from.pause();
    timer ??= setTimeout(flush, delayMs);
  });
  to.on("drain", maybeResume);
  // The sender's end — or its close, which comes right after it when the other way ended first — still
  // lets what it sent before go through, as a real link does: the queue drains, then `to` ends.
  const finish = () => {
    if (ended) return;
    ended = true;
    if (queue.length === 0) to.end();
  };
  from.on("end", finish);
  from.on("close", finish);
  to.on("close", () => {
    if (timer) clearTimeout(timer);
    queue.length = 0;
  });
}

export function startRelay(o: RelayOptions): Promise<Relay> {
  const open = new Set<Socket>();
  const window = o.windowBytes ?? 8 << 20;
  const server: Server = createServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = dial(typeof o.connect === "function" ? o.connect() : o.connect);
    for (const s of [inbound, outbound]) {
      open.add(s);
      s.setNoDelay?.(true);
      s.on("close", () => open.delete(s));
      // One side failing ends both (the peer sees a reset, as on a cut link).
      s.on("error", () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    pump(inbound, outbound, o.delayFwdMs ?? 0, window, (n) => o.onBytes?.("fwd", n));
    pump(outbound, inbound, o.delayBackMs ?? 0, window, (n) => o.onBytes?.("back", n));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const done = () => {
      const a = server.address();
      const endpoint = typeof a === "string" ? `unix:${a}` : `tcp:${a?.address}:${a?.port}`;
      const hostPort = typeof a === "string" ? "" : `${a?.address}:${a?.port}`;
      resolve({
        endpoint,
        hostPort,
        close: () =>
          new Promise<void>((res) => {
            for (const s of open) s.destroy();
            server.close(() => res());
          }),
      });
    };
    if (o.listen.startsWith("unix:")) server.listen(o.listen.slice(5), done);
    else {
      const m = /^tcp:(.+):(\d+)$/.exec(o.listen);
      if (!m) return reject(new Error(`bad endpoint ${o.listen}`));
      server.listen(Number(m[2]), m[1], done);
    }
  });
}

if (require.main === module) {
  const arg = (name: string, def = "") => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? (process.argv[i + 1] ?? def) : def;
  };
  startRelay({
    listen: arg("listen"),
    connect: arg("connect"),
    delayFwdMs: Number(arg("delay-fwd-ms", "0")),
    delayBackMs: Number(arg("delay-back-ms", "0")),
    windowBytes: Number(arg("window-bytes", String(8 << 20))),
  }).then(
    (r) => {
      process.stdout.write(`${JSON.stringify({ listening: r.endpoint })}\n`);
      process.on("SIGTERM", () => void r.close().then(() => process.exit(0)));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
