"""A stand-in for Supabase's pg_net extension: the `net` schema's SQL interface and its background worker."""
