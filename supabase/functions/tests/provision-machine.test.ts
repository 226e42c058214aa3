// provision-machine below the gateway (handler called directly) against the real stack and the Fly stand-in:
// callers and bodies, one machine per user, the token it mints working with PostgREST, and the API secret.
import assert from "node:assert/strict";
import { machineApiSecret, mintMachineToken } from "../_shared/machine_tokens.ts";
import { imageTag } from "../_shared/fly.ts";
import { machineTarget, targetUser } from "../_shared/machines.ts";
import { handler } from "../provision-machine/handler.ts";
import { createMachine, createUser, deleteUser, env, json, post, sql, stackTest, type TestUser } from "./helpers.ts";

const URL = "http://local/provision-machine";
const FLY = `${env("FLY_API_URL")}/apps/${env("FLY_APP_NAME")}/machines`;
const flyHeaders = { authorization: `Bearer ${env("FLY_API_TOKEN")}` };

async function withUser(tier: string, fn: (user: TestUser) => Promise<void>): Promise<void> {
  const user = await createUser(tier, "active");
  try {
    await fn(user);
  } finally {
    for (const row of await sql`select machine_id from public.fly_machines where user_id = ${user.id}`) {
      await (await fetch(`${FLY}/${row.machine_id}?force=true`, { method: "DELETE", headers: flyHeaders })).body?.cancel();
    }
    await deleteUser(user);
  }
}

Deno.test("machine tokens: ES256 trader_machine claims with the key's kid, an hour at most, unique per mint", async () => {
  const key = env("MACHINE_SIGNING_KEY");
  const claims = { userId: "u1", machineId: "m1", generation: 2, issuer: "http://x/functions/v1/machine-token", nowSecs: 1000 };
  const first = await mintMachineToken(key, { ...claims, ttlSecs: 60 });
  const second = await mintMachineToken(key, { ...claims, ttlSecs: 60 });
  const decode = (part: string) => JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));

  assert.notEqual(first, second);
  assert.deepEqual(decode(first.split(".")[0]), { alg: "ES256", kid: JSON.parse(key).kid, typ: "JWT" });
  assert.deepEqual({ ...decode(first.split(".")[1]), jti: undefined }, {
    iss: claims.issuer, aud: "authenticated", role: "trader_machine", sub: "u1", machine_id: "m1", machine_gen: 2,
    iat: 1000, exp: 1060, jti: undefined,
  });
  const long = decode((await mintMachineToken(key, { ...claims, ttlSecs: 90 * 86_400 })).split(".")[1]);
  assert.equal(long.exp - long.iat, 3600);
  await assert.rejects(mintMachineToken(JSON.stringify({ kty: "oct", k: "abc" }), claims), /ES256/);
});

Deno.test("machine API secrets: stable per user, different across users and keys", async () => {
  const key = env("MACHINE_SECRET_KEY");
  const a = await machineApiSecret(key, "user-a");

  assert.equal(a, await machineApiSecret(key, "user-a"));
  assert.notEqual(a, await machineApiSecret(key, "user-b"));
  assert.notEqual(a, await machineApiSecret(`${key}-rotated`, "user-a"));
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
});

Deno.test("machine URLs and image tags", () => {
  assert.deepEqual(machineTarget({ kind: "edge", baseUrl: null }, "app", "abc", "/health"), {
    url: "https://app.fly.dev/health",
    headers: { "fly-force-instance-id": "abc" },
  });
  assert.deepEqual(machineTarget({ kind: "edge", baseUrl: "http://127.0.0.1:1" }, "app", "abc", "prepare-shutdown"), {
    url: "http://127.0.0.1:1/prepare-shutdown",
    headers: { "fly-force-instance-id": "abc" },
  });
  // Inside Fly's private network: the machine's own address, no routing header.
  assert.deepEqual(machineTarget({ kind: "private", urlTemplate: "http://{machine_id}.vm.{app}.internal:8080/" }, "app", "abc", "/health"), {
    url: "http://abc.vm.app.internal:8080/health",
    headers: {},
  });
  assert.equal(imageTag("registry.fly.io/app:v42"), "v42");
  assert.equal(imageTag("localhost:5000/app"), "latest");
  assert.equal(imageTag("app:v1@sha256:abc"), "v1");
});

Deno.test("who may act for whom", () => {
  const uid = crypto.randomUUID();
  assert.equal(targetUser({ role: "service_role", userId: null, machineId: null }, uid, "provision"), uid);
  assert.equal(targetUser({ role: "authenticated", userId: uid, machineId: null }, undefined, "provision"), uid);
  assert.throws(() => targetUser({ role: "authenticated", userId: uid, machineId: null }, crypto.randomUUID(), "provision"), /only their own/);
  assert.throws(() => targetUser({ role: "service_role", userId: null, machineId: null }, undefined, "provision"), /userId is required/);
  assert.throws(() => targetUser({ role: "trader_machine", userId: uid, machineId: "m" }, undefined, "provision"), /may not provision/);
});

stackTest("provision-machine: the minted token is accepted by PostgREST for that machine's row only", () =>
  withUser("pro", async (user) => {
    const response = await handler(post(URL, {}, user.jwt));
    const body = await json(response);
    const machine = await (await fetch(`${FLY}/${body.machineId}`, { headers: flyHeaders })).json();
    const token = machine.config.env.MACHINE_TOKEN;
    const rpc = (status: string) =>
      fetch(`${env("SUPABASE_URL")}/rest/v1/rpc/record_machine_heartbeat`, {
        method: "POST",
        headers: { apikey: env("SUPABASE_ANON_KEY"), authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ status }),
      });

    const beat = await rpc("running");
    const [row] = await sql`select status, last_heartbeat is not null as beat from public.fly_machines where user_id = ${user.id}`;

    assert.equal(response.status, 201);
    assert.equal(beat.status, 200, `heartbeat with the minted token: ${await beat.clone().text()}`);
    await beat.body?.cancel();
    assert.deepEqual({ ...row }, { status: "running", beat: true });
    assert.equal(machine.config.env.MACHINE_API_SECRET, await machineApiSecret(env("MACHINE_SECRET_KEY"), user.id));
  }));

stackTest("provision-machine: a second call returns the same machine", () =>
  withUser("elite", async (user) => {
    const first = await json(await handler(post(URL, { userId: user.id }, env("SUPABASE_SERVICE_ROLE_KEY"))));
    const again = await handler(post(URL, { userId: user.id }, env("SUPABASE_SERVICE_ROLE_KEY")));
    const body = await json(again);

    assert.equal(again.status, 200);
    assert.equal(body.status, "existing");
    assert.equal(body.machineId, first.machineId);
    assert.equal(body.machine.memoryMb, 512);
  }));

stackTest("provision-machine: callers and bodies are checked before anything is created", () =>
  withUser("free", async (user) => {
    const ownMachine = await createMachine(user); // for a machine token that is live
    const cases: [Request, number, string][] = [
      [post(URL, {}, user.jwt), 403, "tier_not_eligible"],
      [post(URL, {}), 401, "missing_authorization"],
      [post(URL, { userId: "nope" }, env("SUPABASE_SERVICE_ROLE_KEY")), 400, "invalid_body"],
      [post(URL, "[]", user.jwt), 400, "invalid_body"],
      [post(URL, {}, await user.machineJwt(ownMachine)), 403, "forbidden"],
      [post(URL, { userId: crypto.randomUUID() }, user.jwt), 403, "forbidden"],
      // The body is judged before the caller's right to the user it names: invalid is 400 for anyone.
      [post(URL, { userId: crypto.randomUUID(), region: "aaa*" }, user.jwt), 400, "invalid_body"],
      [post(URL, { region: "aaa*" }, await user.machineJwt(ownMachine)), 400, "invalid_body"],
    ];
    for (const [request, status, code] of cases) {
      const response = await handler(request);
      const { error } = await json(response);
      assert.equal(response.status, status, code);
      assert.equal(error.code, code);
      if (status === 400) assert.match(error.message, /region|userId|body/);
    }
    const get = await handler(new Request(URL, { method: "GET" }));
    assert.equal(get.status, 405);
    await get.body?.cancel();
    const [{ count }] = await sql`
      select count(*)::int from public.fly_machines where user_id = ${user.id} and machine_id <> ${ownMachine}`;
    assert.equal(count, 0);
  }));
