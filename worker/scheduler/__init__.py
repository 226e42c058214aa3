"""The scheduler: APScheduler jobs per trader (`scheduler.SignalScheduler`), timer intervals (`intervals`)."""
