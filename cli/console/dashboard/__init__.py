"""The live dashboard: a Textual app fed by Realtime and PostgREST as the signed-in user."""
