"""The Kubernetes deployer: object builders; the kubernetes-asyncio client comes next."""
