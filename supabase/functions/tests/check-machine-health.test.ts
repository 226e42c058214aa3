// check-machine-health: scope by caller, and a machine row Fly does not know is reported, not skipped.
import assert from "node:assert/strict";
import { handler } from "../check-machine-health/handler.ts";
import { createMachine, createUser, deleteUser, env, json, post, stackTest } from "./helpers.ts";

const URL = "http://local/check-machine-health";

stackTest("check-machine-health: a row without a Fly machine is unhealthy and says why", async () => {
  const user = await createUser();
  try {
    const machineId = await createMachine(user);
    const response = await handler(post(URL, { userIds: [user.id] }, env("SUPABASE_SERVICE_ROLE_KEY")));
    const body = await json(response);

    assert.equal(response.status, 200);
    assert.equal(body.success, false);
    assert.deepEqual(body.summary, { total: 1, healthy: 0, unhealthy: 1 });
    assert.equal(body.machines[0].machineId, machineId);
    assert.equal(body.machines[0].state, "missing");
    assert.equal(body.machines[0].error, "the machine is not on Fly");
  } finally {
    await deleteUser(user);
  }
});

stackTest("check-machine-health: users see only their own; machines may not ask", async () => {
  const [alice, bob] = [await createUser(), await createUser()];
  try {
    const own = await json(await handler(post(URL, {}, alice.jwt)));
    const other = await handler(post(URL, { userIds: [bob.id] }, alice.jwt));
    const machine = await handler(post(URL, {}, await alice.machineJwt(await createMachine(alice))));

    assert.deepEqual(own.summary, { total: 0, healthy: 0, unhealthy: 0 });
    assert.equal(other.status, 403);
    assert.equal(machine.status, 403);
    await other.body?.cancel();
    await machine.body?.cancel();
  } finally {
    await deleteUser(alice);
    await deleteUser(bob);
  }
});
