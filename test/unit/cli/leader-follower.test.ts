/**
 * The CLI follows the leader (src/cli/leader-follower.ts) among fake coordinators on loopback: a call a
 * standby refused with the leader trailer goes to the leader; a read moves past an unreachable address;
 * a mutating call is never sent again after an UNAVAILABLE without the trailer (it may have been done),
 * and an unreachable address is skipped before a mutating call is sent. Also the CLI binary itself with
 * `--coordinator standby,leader`.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { ChannelCredentials } from "@grpc/grpc-js";
import { ClientError, createChannel, createClient, ServerError, Status } from "nice-grpc";
import { connectionSettings } from "../../../src/cli/args";
import { LEADER_TRAILER, LeaderFollower } from "../../../src/cli/leader-follower";
import { BackupServiceDefinition, type Job } from "../../../src/gen/rbdbackup/v1/backup_service";
import { freePort } from "../../helpers/coordinator";
import { FakeApi } from "./fake-api";

const JOB = "0b5c9a1e-0000-4000-8000-000000000001";

function follower(addresses: string[]): LeaderFollower {
  return new LeaderFollower(addresses, (address) => {
    const channel = createChannel(address, ChannelCredentials.createInsecure());
    return { channel, client: createClient(BackupServiceDefinition, channel) };
  });
}

describe("following the leader", () => {
  const cleanup: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  async function coordinators() {
    const calls = { standby: [] as string[], leader: [] as string[] };
    const leader = new FakeApi({
      cancelJob: async (req) => {
        calls.leader.push("CancelJob");
        return { id: req.jobId } as Job;
      },
      getJob: async (req) => {
        calls.leader.push("GetJob");
        return { id: req.jobId } as Job;
      },
    });
    await leader.start();
    const standby = new FakeApi({
      cancelJob: async (_req, ctx) => {
        calls.standby.push("CancelJob");
        ctx.trailer.set(LEADER_TRAILER, leader.address);
        throw new ServerError(
          Status.UNAVAILABLE,
          `this coordinator is a standby; the leader is l at ${leader.address}`,
        );
      },
      getJob: async () => {
        calls.standby.push("GetJob");
        throw new ServerError(Status.UNAVAILABLE, "shutting down");
      },
    });
    await standby.start();
    cleanup.push(
      () => leader.stop(),
      () => standby.stop(),
    );
    return { leader, standby, calls };
  }

  it("a mutating call refused by a standby with the trailer goes to the named leader, once", async () => {
    const { leader, standby, calls } = await coordinators();
    const f = follower([standby.address, leader.address]);
    cleanup.push(() => f.close());
    const j = await f.client.cancelJob({ jobId: JOB });
    assert.equal(j.id, JOB);
    assert.deepEqual(calls, { standby: ["CancelJob"], leader: ["CancelJob"] });
    assert.equal(f.address, leader.address, "the next calls go to the leader");
    await f.client.cancelJob({ jobId: JOB });
    assert.deepEqual(calls.standby, ["CancelJob"]);
  });

  it("a read that fails UNAVAILABLE without the trailer goes to the next address", async () => {
    const { leader, standby, calls } = await coordinators();
    const f = follower([standby.address, leader.address]);
    cleanup.push(() => f.close());
    assert.equal((await f.client.getJob({ jobId: JOB })).id, JOB);
    assert.deepEqual(calls, { standby: ["GetJob"], leader: ["GetJob"] });
  });

  it("a mutating call that failed UNAVAILABLE without the trailer is not sent again", async () => {
    const calls: string[] = [];
    const flaky = new FakeApi({
      cancelJob: async () => {
        calls.push("CancelJob");
        throw new ServerError(Status.UNAVAILABLE, "lost mid-call");
      },
    });
    await flaky.start();
    const { leader } = await coordinators();
    cleanup.push(() => flaky.stop());
    const f = follower([flaky.address, leader.address]);
    cleanup.push(() => f.close());
    await assert.rejects(
      f.client.cancelJob({ jobId: JOB }),
      (e) => e instanceof ClientError && e.code === Status.UNAVAILABLE,
    );
    assert.deepEqual(calls, ["CancelJob"]);
  });

  it("an unreachable address is skipped before a mutating call is sent", async () => {
    const { leader, calls } = await coordinators();
    const dead = `127.0.0.1:${await freePort()}`;
    const f = follower([dead, leader.address]);
    cleanup.push(() => f.close());
    assert.equal((await f.client.cancelJob({ jobId: JOB })).id, JOB);
    assert.deepEqual(calls.leader, ["CancelJob"]);
  });

  it("every address unreachable: UNAVAILABLE", async () => {
    const f = follower([`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`]);
    cleanup.push(() => f.close());
    await assert.rejects(
      f.client.cancelJob({ jobId: JOB }),
      (e) => e instanceof ClientError && e.code === Status.UNAVAILABLE,
    );
    await assert.rejects(
      f.client.getJob({ jobId: JOB }),
      (e) => e instanceof ClientError && e.code === Status.UNAVAILABLE,
    );
  });

  it("--coordinator and RBDBACKUP_COORDINATOR take comma-separated lists", () => {
    assert.deepEqual(connectionSettings({ coordinator: "a:1,b:2" }, {}).addresses, ["a:1", "b:2"]);
    assert.deepEqual(connectionSettings({}, { RBDBACKUP_COORDINATOR: "a:1, b:2,a:1" }).addresses, ["a:1", "b:2"]);
    assert.equal(connectionSettings({ coordinator: "a:1" }, {}).addresses, undefined);
    assert.throws(() => connectionSettings({ coordinator: "a:1,nohost" }, {}), /--coordinator must be HOST:PORT/);
  });

  it("the CLI binary follows the leader: job cancel via --coordinator standby,leader", async () => {
    const { leader, standby, calls } = await coordinators();
    const r = await standby.cli(["--coordinator", `${standby.address},${leader.address}`, "job", "cancel", JOB]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(calls, { standby: ["CancelJob"], leader: ["CancelJob"] });
  });
});
