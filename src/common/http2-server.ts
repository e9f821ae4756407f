/**
 * Hooks into the node:http2 servers that grpc-js creates (installed once per process, before the
 * server is created; grpc-js exposes neither):
 *
 * - Receive windows. grpc-js lets a client choose its receive window ('grpc-node.flow_control_window')
 *   but gives a server no way to: its sessions keep HTTP/2's 64 KiB default, so a client streaming
 *   1 MiB messages stalls on a WINDOW_UPDATE every 64 KiB. `setServerReceiveWindow` makes every server
 *   session advertise `bytes` as its initial stream window and open its connection window to match.
 *   The window bounds what a peer may have in flight toward us, per stream.
 * - Routes. `routeStreams(path, handler)` hands the HTTP/2 streams of one gRPC method to our own
 *   handler instead of grpc-js (the agent's bulk Transfer stream, agents/transfer/transfer-server.ts,
 *   which keeps received chunks in reused buffers). Everything else about the connection — TLS and its
 *   client-certificate check, sessions, keepalive, shutdown — stays grpc-js's.
 */
import http2 from "node:http2";

export type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

let windowBytes = 0;
const routes = new Map<string, StreamHandler>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  type Factory = (options: http2.ServerOptions, ...rest: unknown[]) => http2.Http2Server | http2.Http2SecureServer;
  const wrap =
    (orig: Factory): Factory =>
    (options: http2.ServerOptions = {}, ...rest: unknown[]) => {
      const opts = windowBytes
        ? { ...options, settings: { ...(options.settings ?? {}), initialWindowSize: windowBytes } }
        : options;
      const server = orig(opts, ...rest);
      if (windowBytes) {
        const bytes = windowBytes;
        server.on("session", (session: http2.ServerHttp2Session) => {
          try {
            session.setLocalWindowSize(bytes);
          } catch {
            // session already closing
          }
        });
      }
      const serverRoutes = new Map(routes); // the routes at creation: each server keeps its own
      if (serverRoutes.size === 0) return server;
      const emit = server.emit;
      server.emit = function (this: typeof server, event: string | symbol, ...args: unknown[]): boolean {
        if (event === "stream") {
          const headers = args[1] as http2.IncomingHttpHeaders;
          const route = serverRoutes.get(String(headers[":path"]));
          if (route) {
            route(args[0] as http2.ServerHttp2Stream, headers);
            return true;
          }
        }
        return emit.call(this, event, ...args);
      } as typeof server.emit;
      return server;
    };
  const mod = http2 as unknown as Record<string, unknown>;
  mod.createSecureServer = wrap(http2.createSecureServer as unknown as Factory);
  mod.createServer = wrap(http2.createServer as unknown as Factory);
}

/** Every HTTP/2 server created from now on advertises `bytes` as its receive window. */
export function setServerReceiveWindow(bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < 65535 || bytes > 2 ** 31 - 1) {
    throw new RangeError(`HTTP/2 window must be in [65535, 2^31-1], got ${bytes}`);
  }
  windowBytes = bytes;
  install();
}

/**
 * Streams for `path` on every HTTP/2 server created from now on go to `handler` (null: servers
 * created from now on leave `path` to grpc-js). A server keeps the routes it was created with.
 */
export function routeStreams(path: string, handler: StreamHandler | null): void {
  if (handler) routes.set(path, handler);
  else routes.delete(path);
  install();
}
