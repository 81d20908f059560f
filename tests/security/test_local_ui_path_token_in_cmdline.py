"""Red team (a local Unix user on the agent's machine): a cold local UI is started with
``--prefix /vis/<path token>`` on its command line, which every user of the machine reads in
/proc/<pid>/cmdline (``ps -ef``). Without an issuer (login off), the path token is the only key
to a UI ("the random path is the capability"), so any local user opens every UI through the web
app; with login on it still hands the token to whoever can list processes. (A pool member gets
its prefix in the hand-over, not on its command line: the cold start should do likewise, e.g.
the prefix in the environment or in the 0600 instance directory.)

Suggested fix: give the cold UI its prefix as pool members get it, outside argv: in the
environment (``IDDS_VIS_UI_PREFIX``, 0600 in /proc like the proxy secret) or in a 0600 file
in the instance directory; the same for Kubernetes (the Deployment's ``--prefix`` arg and the
``idds-vis/public-url`` annotation name the path token to every reader of the namespace):
read it from the UI's Secret. Also worth stating in the threat model that hidepid=2 on /proc
is advisable on shared hosts.

"""

from __future__ import annotations

from pathlib import Path

from tests.security.test_ui_access_local import LocalSite, jane_with_her_ui, web  # noqa: F401


async def test_the_path_token_is_not_on_the_ui_processs_command_line(web: LocalSite) -> None:  # noqa: F811
    async with jane_with_her_ui(web) as (_jane, inst):
        assert inst.path_token is not None
        pid = inst.handle["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert Path(f"/proc/{pid}/cmdline").stat().st_mode & 0o004  # world-readable, as always
        assert inst.path_token not in cmdline, f"every local user reads: {cmdline[-160:]}"
