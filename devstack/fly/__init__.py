"""Fly Machines API stand-in: the subset TradeMind uses, each machine a local `python -m worker` process."""
