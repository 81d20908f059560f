"""The agent: intake from the ledger, pipeline workers, reaper and reconciler."""
