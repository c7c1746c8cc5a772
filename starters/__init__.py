"""How work enters: the HTTP app, the CLI, schedules and the local stack."""
