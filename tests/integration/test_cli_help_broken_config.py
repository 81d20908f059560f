"""Issue 19: ``idds-vis <cmd> --help`` always works. With a broken settings file (or a missing
one) it printed the config error and exited 2 instead of the command's help; through the real
entry point (``python -m idds_vis``). Without ``--help`` the error still stops the command."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_operator_paths import cli


def test_help_works_with_a_broken_or_missing_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("web_prot: 8080\n")
    for config, command, flag in [(bad, "agent", "--help"), (bad, "request", "-h"),
                                  (tmp_path / "missing.yaml", "web", "--help")]:  # fmt: skip
        done = cli("--config", config, command, flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Usage: idds-vis {command} [OPTIONS]")
        assert "config" not in done.stderr
    refused = cli("--config", bad, "list")
    assert refused.returncode == 2 and "unknown setting web_prot" in refused.stderr
