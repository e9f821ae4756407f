/**
 * gRPC credentials for every part: mutual TLS from PEM files (a CA that signs every part, plus this
 * part's certificate and key), or plaintext only when explicitly asked for (`insecure: true`).
 */
import { readFileSync } from "node:fs";
import { ChannelCredentials, ServerCredentials } from "@grpc/grpc-js";

export interface TlsConfig {
  /** PEM file of the CA that signs the peers' certificates. */
  ca?: string;
  /** PEM certificate and key of this part. */
  cert?: string;
  key?: string;
  /** Plaintext, no authentication: only for tests and only when set explicitly. */
  insecure?: boolean;
}

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read the TLS ${what} ${path}: ${(e as Error).message}`);
  }
}

export function checkTls(tls: TlsConfig | undefined, who: string): void {
  if (tls?.insecure) return;
  if (!tls?.ca || !tls.cert || !tls.key) {
    throw new Error(`${who}: TLS needs ca, cert and key (PEM files); set insecure: true only for tests`);
  }
}

/**
 * Server side. "require": the TLS handshake demands a client certificate signed by the CA (agents).
 * "request": a client certificate is asked for and verified, but a client without one (or with one
 * from another CA) still connects — the call is then judged by the coordinator's auth interceptor,
 * which admits verified certificates or bearer tokens only (src/coordinator/auth.ts).
 */
export function serverCredentials(
  tls: TlsConfig | undefined,
  clientCert: "require" | "request" = "require",
): ServerCredentials {
  if (tls?.insecure) return ServerCredentials.createInsecure();
  const f = tlsFiles(tls, "server");
  const creds = ServerCredentials.createSsl(f.ca, [{ cert_chain: f.cert, private_key: f.key }], true);
  if (clientCert === "request") {
    // grpc-js has no option for "request but do not require"; its constructor options go to
    // http2.createSecureServer, where rejectUnauthorized=false does exactly that. Checked by a test
    // (a foreign-CA certificate gets UNAUTHENTICATED, a token-only client gets through).
    const opts = (creds as unknown as { serverConstructorOptions: Record<string, unknown> | null })
      .serverConstructorOptions;
    if (!opts) throw new Error("grpc-js changed: cannot make the client certificate optional");
    opts.rejectUnauthorized = false;
  }
  return creds;
}

/** Client side with a CA only (no client certificate): for API clients that authenticate by token. */
export function channelCredentialsCaOnly(caFile: string): ChannelCredentials {
  return ChannelCredentials.createSsl(read(caFile, "CA"));
}

/** The PEM files of a (non-insecure) TLS config, read; a missing piece or file is a clear error. */
export function tlsFiles(tls: TlsConfig | undefined, who: string): { ca: Buffer; cert: Buffer; key: Buffer } {
  checkTls(tls, who);
  const t = tls as Required<Pick<TlsConfig, "ca" | "cert" | "key">>;
  return { ca: read(t.ca, "CA"), cert: read(t.cert, "certificate"), key: read(t.key, "key") };
}

/** Client side: verifies the server against the CA and presents our certificate. */
export function channelCredentials(tls: TlsConfig | undefined): ChannelCredentials {
  if (tls?.insecure) return ChannelCredentials.createInsecure();
  const f = tlsFiles(tls, "client");
  return ChannelCredentials.createSsl(f.ca, f.key, f.cert);
}

/**
 * The name to check the server's certificate against when reaching `address` (undefined: its host,
 * an IP literal checked against the certificate's IP SANs). For a loopback IP literal it is
 * "localhost" (which lab certificates carry), because TLS forbids IP literals as server names.
 */
export function tlsServerName(address: string, serverName?: string): string | undefined {
  if (serverName) return serverName;
  const host = address.startsWith("[")
    ? address.slice(1, address.indexOf("]"))
    : address.slice(0, address.lastIndexOf(":"));
  if (host === "127.0.0.1" || host === "::1") return "localhost";
  return undefined;
}

/** Channel options for reaching `address` over TLS: the server name rule of tlsServerName. */
export function tlsChannelOptions(
  address: string,
  tls: TlsConfig | undefined,
  serverName?: string,
): Record<string, string> {
  if (tls?.insecure) return {};
  const name = tlsServerName(address, serverName);
  return name ? { "grpc.ssl_target_name_override": name } : {};
}
