"""How work enters: the HTTP app, the CLI, schedules; the local tooling in `starters.local`."""
