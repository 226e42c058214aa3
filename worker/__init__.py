"""The per-user trading worker (run as `python -m worker` on each user's Fly Machine)."""
