// The service-role Supabase client (bypasses RLS: every query must filter by the caller's user id).
import { createClient, type SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import type { SupabaseEnv } from "./env.ts";

const clients = new Map<string, SupabaseClient>();

export function serviceClient(env: SupabaseEnv): SupabaseClient {
  const cacheKey = `${env.url}\u0000${env.serviceRoleKey}`;
  let client = clients.get(cacheKey);
  if (!client) {
    client = createClient(env.url, env.serviceRoleKey, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    });
    clients.set(cacheKey, client);
  }
  return client;
}
