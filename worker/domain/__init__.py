"""Domain values shared by every worker component: enums, identifiers, money."""
