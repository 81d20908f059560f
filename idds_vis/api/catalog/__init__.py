"""The self-service catalog: the tools on offer, starting, extending and stopping a task's
visualization for a signed-in person, within the quotas."""
