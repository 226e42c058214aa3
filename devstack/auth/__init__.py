"""The Supabase Auth (GoTrue) stand-in: its public API, signing keys and the auth schema it keeps."""
