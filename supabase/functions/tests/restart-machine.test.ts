// restart-machine: request checks (the restart itself runs against a real worker in tests/cli/test_console_machine.py).
import assert from "node:assert/strict";
import { handler } from "../restart-machine/handler.ts";
import { createMachine, createUser, deleteUser, env, json, post, sql, stackTest } from "./helpers.ts";

const URL = "http://local/restart-machine";

stackTest("restart-machine: 404 without a machine or when Fly has none, 409 while provisioning, 403 for someone else's, 400 extra fields", async () => {
  const [alice, bob] = [await createUser(), await createUser()];
  try {
    const none = await handler(post(URL, {}, alice.jwt));
    const other = await handler(post(URL, { userId: bob.id }, alice.jwt));
    const extra = await handler(post(URL, { userId: alice.id, image: "x" }, env("SUPABASE_SERVICE_ROLE_KEY")));
    await sql`insert into public.fly_machines (user_id, machine_id, status) values (${alice.id}, ${`pending-${crypto.randomUUID()}`}, 'provisioning')`;
    const pending = await handler(post(URL, {}, alice.jwt));
    // A live row whose machine Fly no longer has.
    await sql`delete from public.fly_machines where user_id = ${alice.id}`;
    await createMachine(alice);
    const gone = await handler(post(URL, {}, alice.jwt));
    const machine = await handler(post(URL, {}, await bob.machineJwt(await createMachine(bob))));

    assert.deepEqual([none.status, (await json(none)).error.code], [404, "machine_not_found"]);
    assert.deepEqual([other.status, (await json(other)).error.code], [403, "forbidden"]);
    assert.deepEqual([extra.status, (await json(extra)).error.code], [400, "invalid_body"]);
    assert.deepEqual([pending.status, (await json(pending)).error.code], [409, "machine_provisioning"]);
    assert.deepEqual([gone.status, (await json(gone)).error.code], [404, "machine_not_found"]);
    assert.deepEqual([machine.status, (await json(machine)).error.code], [403, "forbidden"]);
  } finally {
    await deleteUser(alice);
    await deleteUser(bob);
  }
});
