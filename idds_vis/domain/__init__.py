"""Pure domain model: requests, instances, phases, naming, expiry policy, errors. No I/O."""
