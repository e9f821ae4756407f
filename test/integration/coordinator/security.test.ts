/**
 * Who may talk to the coordinator, against a real coordinator process: mutual TLS or a bearer token for
 * API clients, a CA-signed certificate for agents; no credential → UNAUTHENTICATED; a certificate
 * from another CA is refused; health is SERVING, then NOT_SERVING while draining on SIGTERM.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ChannelCredentials } from "@grpc/grpc-js";
import { ClientError, createChannel, createClient, Metadata, Status } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import { ServerReflectionClient } from "nice-grpc-server-reflection/lib/proto/grpc/reflection/v1/reflection_grpc_pb";
import {
  ServerReflectionRequest,
  type ServerReflectionResponse,
} from "nice-grpc-server-reflection/lib/proto/grpc/reflection/v1/reflection_pb";
import { tlsChannelOptions } from "../../../src/common/tls";
import { CoordinatorAgentServiceDefinition } from "../../../src/gen/rbdbackup/v1/session";
import { labTls, repoRoot } from "../../../src/lab/agent-process";
import { apiClient, type CoordinatorProcess } from "../../../src/lab/coordinator-process";
import { startCoordinator } from "../../helpers/coordinator";
import { exited, tempDir } from "../../helpers/wait";

const TOKEN = "test-token-0123456789abcdef";

async function code(p: Promise<unknown>): Promise<Status | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    if (e instanceof ClientError) return e.code;
    throw e;
  }
}

/**
 * Opens an agent session with a Register and returns how the stream ended. The request stream stays open
 * until the response stream ends (the coordinator answers), at most 10 s ("no answer").
 */
async function sessionStatus(
  address: string,
  creds: ChannelCredentials,
  token?: string,
): Promise<Status | "ok" | "no answer"> {
  const ch = createChannel(address, creds, tlsChannelOptions(address, labTls("test-client")));
  const sc = createClient(CoordinatorAgentServiceDefinition, ch);
  let answered = () => {};
  const done = new Promise<void>((r) => {
    answered = r;
  });
  const signal = AbortSignal.timeout(10_000);
  const messages = (async function* () {
    yield {
      msg: {
        $case: "register" as const,
        value: {
          agentId: "intruder",
          clusterName: "site-x",
          clusterFsid: "00000000-0000-4000-8000-000000000000",
          version: "0",
          transferAddress: "127.0.0.1:1",
          capacity: 1,
          leases: [],
          librbdVersion: "",
          defaultBackupPool: "backups",
        },
      },
    };
    await done;
  })();
  try {
    for await (const _ of sc.session(messages, {
      signal,
      ...(token ? { metadata: Metadata({ authorization: `Bearer ${token}` }) } : {}),
    }))
      return "ok";
    return "ok";
  } catch (e) {
    if (signal.aborted) return "no answer";
    return e instanceof ClientError ? e.code : Status.UNKNOWN;
  } finally {
    answered();
    ch.close();
  }
}

describe("coordinator: authentication", () => {
  let coord: CoordinatorProcess;
  let foreign: string;
  const own = labTls("test-client");
  before(async () => {
    coord = await startCoordinator({ tokens: [{ role: "admin", token: TOKEN }], shutdownGraceSeconds: 3 });
    foreign = tempDir("rbdbackup-foreign-ca-");
    execFileSync(path.join(repoRoot, "deploy/tls/gen-certs.sh"), [foreign, "intruder"], { stdio: "ignore" });
  });
  after(async () => {
    await coord?.stop();
  });

  it("a client certificate from the deployment's CA is enough", async () => {
    assert.equal(await code(coord.client.listAgents({})), "ok");
  });

  it("no credential → UNAUTHENTICATED; a good token → ok; a wrong token → UNAUTHENTICATED", async () => {
    const none = apiClient(coord.address, { ca: own.ca as string });
    const good = apiClient(coord.address, { ca: own.ca as string }, TOKEN);
    const bad = apiClient(coord.address, { ca: own.ca as string }, "not-the-token-at-all-xxxx");
    try {
      assert.equal(await code(none.client.listAgents({})), Status.UNAUTHENTICATED);
      const err = await none.client.listBackups({} as never).catch((e: ClientError) => e);
      assert.ok(err instanceof ClientError);
      assert.match(err.details, /client certificate|bearer token/);
      assert.equal(await code(good.client.listAgents({})), "ok");
      assert.equal(await code(bad.client.listAgents({})), Status.UNAUTHENTICATED);
    } finally {
      for (const c of [none, good, bad]) c.channel.close();
    }
  });

  it("a certificate from another CA is refused", async () => {
    const intruder = {
      ca: own.ca,
      cert: path.join(foreign, "intruder.pem"),
      key: path.join(foreign, "intruder.key"),
    };
    const c = apiClient(coord.address, intruder);
    try {
      assert.equal(await code(c.client.listAgents({})), Status.UNAUTHENTICATED);
    } finally {
      c.channel.close();
    }
    // Nor may it open an agent session, and a token does not make an agent either.
    const ca = readFileSync(own.ca as string);
    for (const [creds, token] of [
      [ChannelCredentials.createSsl(ca, readFileSync(intruder.key), readFileSync(intruder.cert)), undefined],
      [ChannelCredentials.createSsl(ca), TOKEN],
    ] as const) {
      assert.equal(
        await sessionStatus(coord.address, creds, token),
        Status.UNAUTHENTICATED,
        token ? "a token cannot open an agent session" : "a foreign certificate cannot open an agent session",
      );
    }
    // A client that does not trust our CA cannot even complete the handshake.
    const distrust = apiClient(coord.address, { ca: path.join(foreign, "ca.pem") }, TOKEN);
    try {
      assert.equal(await code(distrust.client.listAgents({})), Status.UNAVAILABLE);
    } finally {
      distrust.channel.close();
    }
    const agents = await coord.client.listAgents({});
    assert.ok(!agents.agents.some((a) => a.agentId === "intruder"), "the intruder never registered");
  });

  it("server reflection lists the public API (to an authenticated client)", async () => {
    const creds = ChannelCredentials.createSsl(
      readFileSync(own.ca as string),
      readFileSync(own.key as string),
      readFileSync(own.cert as string),
    );
    const rc = new ServerReflectionClient(coord.address, creds, tlsChannelOptions(coord.address, own));
    try {
      const names = await new Promise<string[]>((resolve, reject) => {
        const call = rc.serverReflectionInfo({ deadline: Date.now() + 10_000 });
        call.on("data", (r: ServerReflectionResponse) => {
          resolve(
            r
              .getListServicesResponse()
              ?.getServiceList()
              .map((x) => x.getName()) ?? [],
          );
          call.end();
        });
        call.on("error", reject);
        call.write(new ServerReflectionRequest().setListServices(""));
      });
      assert.ok(names.includes("rbdbackup.v1.BackupService"), names.join(","));
      assert.ok(names.includes("grpc.health.v1.Health"));
    } finally {
      rc.close();
    }
  });

  it("health: SERVING, then NOT_SERVING while draining on SIGTERM", async () => {
    const ch = createChannel(
      coord.address,
      ChannelCredentials.createSsl(readFileSync(own.ca as string)),
      tlsChannelOptions(coord.address, own),
    );
    const health = createClient(HealthDefinition, ch);
    try {
      // Health needs no credential (it tells nothing but the serving state).
      assert.equal((await health.check({ service: "" })).status, 1 /* SERVING */);
      coord.proc.kill("SIGTERM");
      let sawNotServing = false;
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        try {
          if ((await health.check({ service: "" })).status === 2 /* NOT_SERVING */) {
            sawNotServing = true;
            break;
          }
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(sawNotServing, "health reported NOT_SERVING while draining");
      assert.equal(await exited(coord.proc, "the draining coordinator"), 0, "a drained coordinator exits 0");
    } finally {
      ch.close();
    }
  });
});
