/**
 * The CLI's connection to the coordinator: channel credentials (mutual TLS, CA + bearer token, or
 * plaintext), the bearer token metadata, and unary calls bounded by --timeout. With several coordinator
 * addresses the calls follow the leader (leader-follower.ts).
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { ChannelCredentials } from "@grpc/grpc-js";
import { ClientError, createChannel, createClient, Metadata } from "nice-grpc";
import { notCoordinator } from "../common/identity";
import { type TlsConfig, tlsChannelOptions } from "../common/tls";
import { type BackupServiceClient, BackupServiceDefinition } from "../gen/rbdbackup/v1/backup_service";
import { type ConnectionSettings, connectionSettings, UsageError } from "./args";
import { DeadlineError } from "./exit-codes";
import { LeaderFollower } from "./leader-follower";

function readPem(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UsageError(`cannot read the --${flag} file ${path}: ${(e as Error).message}`);
  }
}

/**
 * A client certificate outside its validity is refused here, naming its dates: the server would refuse
 * the handshake, which reaches the CLI as UNAVAILABLE (exit 6, "retry") — a retry that never helps.
 */
function checkValidNow(pem: Buffer, file: string): void {
  let c: X509Certificate;
  try {
    c = new X509Certificate(pem);
  } catch (e) {
    throw new UsageError(`--cert ${file} is not a PEM certificate: ${(e as Error).message}`);
  }
  const now = Date.now();
  if (Date.parse(c.validTo) < now) throw new UsageError(`--cert ${file} expired on ${c.validTo}: renew it`);
  // A certificate issued a moment ago on a host whose clock is ahead of this one's: 5 min allowed.
  if (Date.parse(c.validFrom) > now + 5 * 60_000)
    throw new UsageError(`--cert ${file} is not valid before ${c.validFrom}`);
}

/**
 * With the deployment's CA (--ca), the server must also be a coordinator: its certificate names
 * rbdbackup://coordinator/<id> — an agent's or another client's certificate from the same CA (valid for
 * its host name too) would otherwise collect the caller's bearer token and requests.
 */
const aCoordinator = {
  checkServerIdentity: (host: string, cert: PeerCertificate): Error | undefined => {
    const hostError = checkServerIdentity(host, cert);
    if (hostError) return hostError;
    const why = notCoordinator(cert);
    return why ? new Error(`refusing the server at ${host}: ${why}`) : undefined;
  },
};

/** Plaintext when asked; mutual TLS with a client certificate; else server-verified TLS (token auth). */
function credentials(tls: TlsConfig): ChannelCredentials {
  if (tls.insecure) return ChannelCredentials.createInsecure();
  if (tls.ca && tls.cert && tls.key) {
    // Read here so an unreadable file is a usage error naming the flag.
    const ca = readPem(tls.ca, "ca");
    const cert = readPem(tls.cert, "cert");
    const key = readPem(tls.key, "key");
    checkValidNow(cert, tls.cert);
    try {
      return ChannelCredentials.createSsl(ca, key, cert, aCoordinator);
    } catch (e) {
      // OpenSSL's own words ("key values mismatch", "no start line"), without its stack.
      throw new UsageError(
        `--ca ${tls.ca}, --cert ${tls.cert} and --key ${tls.key} are not a usable CA, certificate and its key: ${(e as Error).message}`,
      );
    }
  }
  // Only a CA: verify the server and rely on the bearer token. No CA: the system's roots (a server
  // certificate from a public CA names no rbdbackup identity: only its host name is checked).
  return tls.ca
    ? ChannelCredentials.createSsl(readPem(tls.ca, "ca"), null, null, aCoordinator)
    : ChannelCredentials.createSsl();
}

/**
 * A bearer token travels in a header: one line of printable ASCII. Anything else (a comment line above
 * it, a stray control character) is refused here, naming where it came from and never echoing it —
 * left to gRPC, the whole value was printed in its error.
 */
function checkedToken(t: string | undefined, from: string): string | undefined {
  if (t === undefined) return undefined;
  if (!/^[\x21-\x7e]+$/.test(t)) {
    throw new UsageError(
      `${from}: a token is one line of printable characters without spaces (the value is not shown)`,
    );
  }
  return t;
}

function token(settings: ConnectionSettings): string | undefined {
  if (settings.tokenFile === undefined) return checkedToken(settings.token?.trim() || undefined, "RBDBACKUP_TOKEN");
  return checkedToken(tokenFromFile(settings.tokenFile), `--token-file ${settings.tokenFile}`);
}

function tokenFromFile(tokenFile: string): string {
  let text: string;
  try {
    text = readFileSync(tokenFile, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read the --token-file ${tokenFile}: ${(e as Error).message}`);
  }
  const t = text.trim();
  if (t === "") throw new UsageError(`--token-file ${tokenFile} is empty`);
  return t;
}

/**
 * HTTP/2 keepalive while a call is open (a watch, an upload or download): a coordinator gone without a
 * word (its host off, the path cut) ends the call within ~30 s instead of never. The coordinator accepts
 * pings every 5 s (grpc.http2.min_ping_interval_without_data_ms).
 */
const KEEPALIVE = { "grpc.keepalive_time_ms": 20_000, "grpc.keepalive_timeout_ms": 10_000 };
/**
 * Answers up to 64 MiB (grpc-js takes 4 MiB by default): RebuildCatalog's report names every backup it
 * found — ~110 bytes each, so a rebuild of ~37,000 backups was past 4 MiB and unreadable here, after a
 * real run had written the catalog.
 */
const RECEIVE = { "grpc.max_receive_message_length": 64 << 20 };

export class Connection {
  readonly client: BackupServiceClient;
  readonly #follower: LeaderFollower;

  constructor(readonly settings: ConnectionSettings) {
    const creds = credentials(settings.tls);
    const bearer = token(settings);
    const metadata = Metadata();
    if (bearer) metadata.set("authorization", `Bearer ${bearer}`);
    this.#follower = new LeaderFollower(settings.addresses ?? [settings.address], (address) => {
      const channel = createChannel(address, creds, {
        ...KEEPALIVE,
        ...RECEIVE,
        ...tlsChannelOptions(address, settings.tls),
      });
      return { channel, client: createClient(BackupServiceDefinition, channel, { "*": { metadata } }) };
    });
    this.client = this.#follower.client;
  }

  /** The coordinator address calls go to now (the leader, once a standby named it). */
  get address(): string {
    return this.#follower.address;
  }

  /**
   * Runs a unary call with the --timeout deadline. A call cut short by it fails with DeadlineError
   * (reported as DEADLINE_EXCEEDED, exit code 6).
   */
  async call<T>(fn: (options: { signal: AbortSignal }) => Promise<T>): Promise<T> {
    const signal = AbortSignal.timeout(this.settings.timeoutMs);
    try {
      return await fn({ signal });
    } catch (e) {
      // nice-grpc rejects with the signal's reason (a TimeoutError) or an AbortError.
      if (signal.aborted && !(e instanceof ClientError)) {
        throw new DeadlineError(
          `no answer from the coordinator at ${this.address} within ${this.settings.timeoutMs / 1000} s (--timeout)`,
        );
      }
      throw e;
    }
  }

  close(): void {
    this.#follower.close();
  }
}

/** Opens a connection from the global flags (and the environment), runs `fn`, closes it. */
export async function withConnection<T>(
  values: Parameters<typeof connectionSettings>[0],
  fn: (conn: Connection) => Promise<T>,
): Promise<T> {
  const conn = new Connection(connectionSettings(values, process.env));
  try {
    return await fn(conn);
  } finally {
    conn.close();
  }
}
