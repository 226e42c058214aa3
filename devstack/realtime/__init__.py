"""A local stand-in for Supabase Realtime: Phoenix channels over WebSocket, postgres_changes from the WAL."""
