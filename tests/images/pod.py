"""A pod spec as ``podman run`` arguments: the security context, volumes and env, exactly.

Every field of the pod's and the container's security context is translated or refused: a
field added to the Deployment (idds_vis/deploy/kubernetes/objects.py, conf/deployment.yaml)
that has no translation here fails the image tests instead of being silently left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.k8s_emulator.kubelet import expand

Obj = dict[str, Any]

# Things podman cannot express that need no translation here: they add nothing to a container
# on a host with no service account token or Service env to inject.
_POD_NOTHING_TO_DO = {"automountServiceAccountToken": False, "enableServiceLinks": False}
_POD_IGNORED = {"serviceAccountName", "containers", "volumes", "securityContext",
                # The kubelet restarts a failed container (a standby pod's "Always"); a test
                # wants to see the failure instead.
                "restartPolicy"}  # fmt: skip


def quantity_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", text)
    if not match:
        raise ValueError(f"unsupported quantity {text!r}")
    units = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
    return int(match.group(1)) * units[match.group(2)]


def _security(pod_sc: Obj, sc: Obj) -> list[str]:
    pod_known = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
    known = {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot", "capabilities"}
    unknown = (set(pod_sc) - pod_known) | (set(sc) - known)
    if unknown:
        raise ValueError(f"no podman translation for securityContext field(s) {sorted(unknown)}")
    merged = {**pod_sc, **sc}
    args = []
    user = merged.get("runAsUser")
    if merged.get("runAsNonRoot"):
        # The kubelet refuses to start a non-root pod as uid 0; so does this translation.
        assert user not in (None, 0), "runAsNonRoot without a non-zero runAsUser"
    if user is not None:
        args += ["--user", f"{user}:{merged.get('runAsGroup', user)}"]
    if "fsGroup" in merged:
        args += ["--group-add", str(merged["fsGroup"])]
    seccomp = merged.get("seccompProfile", {"type": "RuntimeDefault"})
    # RuntimeDefault is the runtime's own profile: podman applies its default one.
    assert seccomp == {"type": "RuntimeDefault"}, seccomp
    if merged.get("readOnlyRootFilesystem"):
        # podman would add tmpfs on /tmp, /var/tmp and /run by itself; a pod gets none of them.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if merged.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    caps = merged.get("capabilities", {})
    if set(caps) - {"drop", "add"}:
        raise ValueError(f"unknown capabilities field(s) {sorted(caps)}")
    args += [f"--cap-drop={c}" for c in caps.get("drop", [])]
    args += [f"--cap-add={c}" for c in caps.get("add", [])]
    return args


def _volumes(pod: Obj, container: Obj, sources: dict[str, Path]) -> list[str]:
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    args = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            # An emptyDir is an empty directory every user may write to (0777), with exec; its
            # sizeLimit becomes the tmpfs size.
            size = quantity_bytes(volume["emptyDir"].get("sizeLimit", "1Gi"))
            args += ["--tmpfs", f"{path}:rw,exec,nosuid,nodev,mode=1777,size={size}"]
        elif mount["name"] in sources:
            mode = "ro" if mount.get("readOnly") else "rw"
            args += ["--volume", f"{sources[mount['name']]}:{path}:{mode}"]
        else:
            raise ValueError(f"volume {mount['name']!r} has no source given for the test")
    return args


def container_env(container: Obj, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The kubelet's environment: envFrom Secrets first, then env (values or secretKeyRefs)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])  # only secretRef is used
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            env[var["name"]] = expand(var["value"], env)
    return env


def container_argv(pod: Obj, secrets: dict[str, dict[str, str]] | None = None) -> list[str]:
    """command + args with the kubelet's ``$(VAR)`` expansion (the entrypoint if no command)."""
    (container,) = pod["containers"]
    env = container_env(container, secrets or {})
    return [expand(a, env) for a in [*container.get("command", []), *container.get("args", [])]]


def podman_run_args(
    pod: Obj,
    workdir: Path,
    sources: dict[str, Path] | None = None,
    secrets: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """``podman run`` options for the pod's one container (image and arguments not included).

    The environment goes in an env file (0600) in ``workdir``: Secret values stay off podman's
    command line, as they stay off the Pod object.
    """
    for name, value in _POD_NOTHING_TO_DO.items():
        assert pod.get(name, value) == value, f"{name}: {pod.get(name)!r} needs a translation"
    unknown = set(pod) - set(_POD_NOTHING_TO_DO) - _POD_IGNORED
    if unknown:
        raise ValueError(f"no podman translation for pod spec field(s) {sorted(unknown)}")
    (container,) = pod["containers"]
    args = _security(pod.get("securityContext", {}), container.get("securityContext", {}))
    args += _volumes(pod, container, sources or {})
    env_file = workdir / "container.env"
    env_file.touch(mode=0o600)
    env = container_env(container, secrets or {})
    assert all("\n" not in f"{k}{v}" for k, v in env.items()), "an env file holds one per line"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return [*args, "--env-file", str(env_file)]
