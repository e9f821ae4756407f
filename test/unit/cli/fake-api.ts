/**
 * A fake coordinator for the CLI's unit tests: a BackupService in this process that answers with the
 * handlers a test gives (every other method: UNIMPLEMENTED), and `cli(args)` running the real CLI
 * binary against it (insecure, loopback, 20 s deadline).
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { createServer, type Server, ServerError, Status } from "nice-grpc";
import {
  BackupServiceDefinition,
  type BackupServiceImplementation,
} from "../../../src/gen/rbdbackup/v1/backup_service";

const CLI = path.join(__dirname, "../../../src/cli/main.js");

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export class FakeApi {
  #server: Server | undefined;
  #address = "";

  constructor(private readonly handlers: Partial<BackupServiceImplementation>) {}

  async start(): Promise<void> {
    const impl = new Proxy(this.handlers, {
      get: (t, k: string) =>
        t[k as keyof BackupServiceImplementation] ??
        (async () => {
          throw new ServerError(Status.UNIMPLEMENTED, "not in the fake");
        }),
    }) as BackupServiceImplementation;
    const server = createServer();
    server.add(BackupServiceDefinition, impl);
    this.#address = `127.0.0.1:${await server.listen("127.0.0.1:0")}`;
    this.#server = server;
  }

  /** host:port it listens on (after start). */
  get address(): string {
    return this.#address;
  }

  stop(): void {
    this.#server?.forceShutdown();
  }

  /** Runs `rbdbackup ARGS --insecure` against this fake; the exit code and both outputs. */
  cli(args: string[]): Promise<CliRun> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args, "--insecure"],
        { env: { PATH: process.env.PATH ?? "", RBDBACKUP_COORDINATOR: this.#address }, timeout: 20_000 },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }
}
