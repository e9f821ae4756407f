/**
 * The floor under transport.ts's variants: the same bytes moved between two processes on loopback by
 * native code — Python's socket and ssl modules (CPython over OpenSSL: a 2 MiB `sendall` per message,
 * `recv_into` a 1 MiB buffer, nothing else per byte) — plain TCP and mutual TLS with the lab's
 * certificates. No Node transport can cost less than "native TLS" per GiB on this machine; the gap
 * between a Node variant and it is ours (or Node's) to cut, the rest is AES-GCM and loopback copies.
 *
 * Same protocol as transport.ts's roles: the server prints {"port","cpu"} once listening, then {"cpu"}
 * after each connection's last byte (the client announces its byte count first); the client prints {"cpu","seconds"} once the server answered.
 * CPU is the process's user+system time (os.times).
 */
import type { TlsConfig } from "../../src/common/tls";

export const NATIVE_VARIANTS = ["native TCP", "native TLS"] as const;
export type NativeVariant = (typeof NATIVE_VARIANTS)[number];

const SCRIPT = String.raw`
import json, os, socket, ssl, sys, time
def cpu():
    t = os.times()
    return t.user + t.system
def say(**kw):
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()
role, use_tls, ca, cert, key = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4], sys.argv[5]
if role == "server":
    ctx = None
    if use_tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(4)
    say(port=ls.getsockname()[1], cpu=cpu())
    buf = bytearray(1 << 20); mv = memoryview(buf)
    while True:
        c, _ = ls.accept()
        if ctx: c = ctx.wrap_socket(c, server_side=True)
        head = b""
        while len(head) < 8:
            head += c.recv(8 - len(head))
        left = int.from_bytes(head, "big")
        while left > 0:
            got = c.recv_into(mv)
            if not got: raise SystemExit("cut short")
            left -= got
        say(cpu=cpu(), cipher=c.cipher()[0] if ctx else "none")
        c.sendall(b"k"); c.close()
else:
    port, mib = int(sys.argv[6]), int(sys.argv[7])
    chunk = 2 << 20; n = (mib << 20) // chunk; data = b"\xab" * chunk
    c0, t0 = cpu(), time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    if use_tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(cert, key); ctx.load_verify_locations(ca); ctx.check_hostname = False
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall((n * chunk).to_bytes(8, "big"))
    for _ in range(n):
        s.sendall(data)
    s.recv(1)
    say(cpu=cpu() - c0, seconds=time.monotonic() - t0)
`;

/** argv for python3 (`python3 ...args`) playing `role` of `variant`. */
export function nativeArgs(
  variant: NativeVariant,
  role: "server" | "client",
  files: TlsConfig,
  port = 0,
  mib = 0,
): string[] {
  const tls = variant === "native TLS" ? "1" : "0";
  const rest = role === "client" ? [String(port), String(mib)] : [];
  return ["-c", SCRIPT, role, tls, files.ca ?? "", files.cert ?? "", files.key ?? "", ...rest];
}
