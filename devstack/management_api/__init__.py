"""Supabase Management API stand-in: the function deploy endpoints the CLI uses with --use-api."""
