"""Domain values shared by every worker component: enums mirroring Postgres, traders, signals, decisions,
intervals, money and the position ledger, orders and positions. Imports nothing above itself."""
