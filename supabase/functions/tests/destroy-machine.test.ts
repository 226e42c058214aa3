// destroy-machine: request checks and the answer for a user without a machine.
import assert from "node:assert/strict";
import { handler } from "../destroy-machine/handler.ts";
import { createUser, deleteUser, env, json, post, stackTest } from "./helpers.ts";

const URL = "http://local/destroy-machine";

stackTest("destroy-machine: 404 without a machine, 400 for a bad reason, 403 for someone else's", async () => {
  const [alice, bob] = [await createUser(), await createUser()];
  try {
    const none = await handler(post(URL, {}, alice.jwt));
    const badReason = await handler(post(URL, { userId: alice.id, reason: "whim" }, env("SUPABASE_SERVICE_ROLE_KEY")));
    const other = await handler(post(URL, { userId: bob.id }, alice.jwt));
    // The body is judged before the caller's right to the user it names.
    const otherBadReason = await handler(post(URL, { userId: bob.id, reason: "whim" }, alice.jwt));

    assert.deepEqual([none.status, (await json(none)).error.code], [404, "machine_not_found"]);
    assert.deepEqual([badReason.status, (await json(badReason)).error.code], [400, "invalid_body"]);
    assert.deepEqual([other.status, (await json(other)).error.code], [403, "forbidden"]);
    const refused = (await json(otherBadReason)).error;
    assert.deepEqual([otherBadReason.status, refused.code], [400, "invalid_body"]);
    assert.match(refused.message, /^reason must be one of/);
  } finally {
    await deleteUser(alice);
    await deleteUser(bob);
  }
});
