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
  checkTls(tls, "server");
  const t = tls as Required<Pick<TlsConfig, "ca" | "cert" | "key">>;
  const creds = ServerCredentials.createSsl(
    read(t.ca, "CA"),
    [{ cert_chain: read(t.cert, "certificate"), private_key: read(t.key, "key") }],
    true,
  );
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

/** Client side: verifies the server against the CA and presents our certificate. */
export function channelCredentials(tls: TlsConfig | undefined): ChannelCredentials {
  if (tls?.insecure) return ChannelCredentials.createInsecure();
  checkTls(tls, "client");
  const t = tls as Required<Pick<TlsConfig, "ca" | "cert" | "key">>;
  return ChannelCredentials.createSsl(read(t.ca, "CA"), read(t.key, "key"), read(t.cert, "certificate"));
}

/**
 * Channel options for reaching `address` over TLS. The name checked against the server's certificate
 * is the address's host; for a loopback IP literal it is "localhost" (which lab certificates carry),
 * because TLS forbids IP literals as server names. `serverName` overrides it.
 */
export function tlsChannelOptions(
  address: string,
  tls: TlsConfig | undefined,
  serverName?: string,
): Record<string, string> {
  if (tls?.insecure) return {};
  if (serverName) return { "grpc.ssl_target_name_override": serverName };
  const host = address.startsWith("[")
    ? address.slice(1, address.indexOf("]"))
    : address.slice(0, address.lastIndexOf(":"));
  if (host === "127.0.0.1" || host === "::1") return { "grpc.ssl_target_name_override": "localhost" };
  return {};
}
