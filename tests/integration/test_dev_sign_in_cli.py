"""Issue 19: ``idds-vis web`` with the development sign-in refuses a non-loopback address, in
one line and with a non-zero exit, through the real entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_web_refuses_the_dev_sign_in_on_a_non_loopback_address(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ndev_sign_in: true\n"
                      "web_host: 0.0.0.0\nweb_port: 0\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "idds_vis", "--config", str(config), "web"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "dev_sign_in needs a loopback web_host" in lines[0]
    assert "Traceback" not in done.stderr
