"""Configuration and wiring: the one place adapters are chosen and handed to the agent."""
