/**
 * HTTP/2 flow-control windows for gRPC servers that receive bulk data (the destination agent).
 *
 * grpc-js lets a client choose its receive window ('grpc-node.flow_control_window') but gives a
 * server no way to: its sessions keep HTTP/2's 64 KiB default, so a client streaming 1 MiB messages
 * stalls on a WINDOW_UPDATE every 64 KiB. This wraps node:http2's server constructors (once, for this
 * process) so every server session advertises `bytes` as its initial stream window and opens its
 * connection window to match. The window bounds what a peer may have in flight toward us, per stream.
 */
import http2 from "node:http2";

let installed = 0;

export function setServerReceiveWindow(bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < 65535 || bytes > 2 ** 31 - 1) {
    throw new RangeError(`HTTP/2 window must be in [65535, 2^31-1], got ${bytes}`);
  }
  const first = installed === 0;
  installed = bytes;
  if (!first) return;
  type Factory = (options: http2.ServerOptions, ...rest: unknown[]) => http2.Http2Server | http2.Http2SecureServer;
  const wrap =
    (orig: Factory): Factory =>
    (options: http2.ServerOptions = {}, ...rest: unknown[]) => {
      const opts = { ...options, settings: { ...(options.settings ?? {}), initialWindowSize: installed } };
      const server = orig(opts, ...rest);
      server.on("session", (session: http2.ServerHttp2Session) => {
        try {
          session.setLocalWindowSize(installed);
        } catch {
          // session already closing
        }
      });
      return server;
    };
  const mod = http2 as unknown as Record<string, unknown>;
  mod.createSecureServer = wrap(http2.createSecureServer as unknown as Factory);
  mod.createServer = wrap(http2.createServer as unknown as Factory);
}
