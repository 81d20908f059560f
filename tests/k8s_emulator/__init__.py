"""An HTTP Kubernetes API emulator for testing the Kubernetes deployer without a cluster.

Strict where kube-apiserver is strict (schemas, names, conflicts, resourceVersions, watches,
garbage collection), with a Deployment controller that simulates pod outcomes on demand.
"""

from .emulator import KubeEmulator
from .errors import ApiError
from .faults import Fault, RequestInfo
from .podsim import Behaviour

__all__ = ["ApiError", "Behaviour", "Fault", "KubeEmulator", "RequestInfo"]
