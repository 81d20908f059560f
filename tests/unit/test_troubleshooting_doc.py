"""docs/troubleshooting.md shows a start-up settings error in both forms the commands write:
the JSON line of ``agent``/``web`` (their default log format) and the ``error: …`` text line;
the JSON example has the fields ``report_error`` writes and the same message as the text one."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

from idds_vis.runtime.logs import configure_logging, report_error

DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def test_settings_errors_are_shown_in_json_and_text_form() -> None:
    section = DOC.read_text().split("## Settings errors at start-up", 1)[1].split("\n## ", 1)[0]
    (json_block,) = re.findall(r"```json\n(.*?)\n\s*```", section, re.S)
    text_lines = re.findall(r"^\s*(error: config .*)$", section, re.M)
    example = json.loads(json_block.strip())
    assert example["message"] == text_lines[0].removeprefix("error: ")
    assert "`idds-vis agent` and `idds-vis web`" in section and "log_format: text" in section

    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging(json_lines=True, stream=stream)
        report_error(example["message"])
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    written = json.loads(stream.getvalue())
    assert set(written) == set(example) and written["logger"] == example["logger"]
    assert (written["level"], written["message"]) == ("ERROR", example["message"])
