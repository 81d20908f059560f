"""Settings are checked against their schema (issue 19): wrong values, unknown names and bad
files are one-line SettingsErrors naming the setting; the reference page lists every setting."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from idds_vis.runtime.config import Settings, SettingsError, field_infos, load_settings
from idds_vis.runtime.config_reference import render_markdown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workers: many", "workers: must be a valid integer"),
        ("workers: 0", "workers: must be greater than or equal to 1"),
        ("web_port: eighty", "web_port: must be a valid integer"),
        ("web_port: 99999", "web_port: must be less than or equal to 65535 (got 99999)"),
        ("web_prot: 8080", "unknown setting web_prot (did you mean web_port?)"),
        ("deployer: k8s", "deployer: must be 'local' or 'kubernetes'"),
        ("log_format: yaml", "log_format: must be 'json' or 'text'"),
        ("default_ttl: soon", "default_ttl: cannot read duration 'soon'"),
        ("tool_max_ttl: {mlflow: -1d}", "tool_max_ttl[mlflow]: "),
        ("public_task_json: maybe", "public_task_json: must be a valid boolean"),
        ("web_port: true", "web_port: must be a number, not true or false (got true)"),
        (
            "quota_per_group: {atlas: -1}",
            "quota_per_group[atlas]: must be greater than or equal to 0",
        ),
        ("workers: 4\n  bad: [", "not valid YAML at line 2"),
        ("- workers", "must be a mapping of settings"),
        ("ui_egress: 10.0.0.0/8", "ui_egress must be a list"),
        # The warm pool (an operator's first run, issue 18): each was accepted silently.
        ("ui_pool: {tensorboard: 1}", "ui_pool[tensorboard]: not a tool idds-vis serves"),
        ("ui_pool: {MLflow: 1}", "ui_pool[MLflow]: not a tool idds-vis serves (mlflow)"),
        ("ui_pool: {mlflow: 100000}", "ui_pool[mlflow]: must be less than or equal to 32"),
        ("ui_pool_max_age: 2s", "ui_pool_max_age: must be at least 1m"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert message.startswith(f"config {config}:")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope.yaml: cannot read it: No such file"):
        load_settings(tmp_path / "nope.yaml")


def test_a_secrets_wrong_value_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("stomp_password: [hunter2-secret]\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert "stomp_password" in str(caught.value) and "hunter2" not in str(caught.value)


def test_durations_keep_their_yaml_forms_and_dashes_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text("default-ttl: 30m\nmax_ttl: 7d\ntool_max_ttl: {mlflow: 3d}\n"
                      "quota_user_ttl: 90\nstate_dir: ~/vis\nweb_port: 0\n")  # fmt: skip
    settings = load_settings(config)
    assert settings.default_ttl == timedelta(minutes=30)
    assert settings.max_ttl == timedelta(days=7)
    assert settings.tool_max_ttl == {"mlflow": timedelta(days=3)}
    assert settings.quota_user_ttl == timedelta(seconds=90)
    assert settings.state_dir == Path("~/vis").expanduser() and settings.web_port == 0


def test_a_command_line_override_is_checked_too() -> None:
    with pytest.raises(SettingsError, match=r"^setting web_port: must be less than"):
        Settings().replace(web_port=99999)
    assert Settings().replace(web_port=8081, web_url=None).web_port == 8081


def test_every_setting_has_a_description_and_is_in_the_reference() -> None:
    page = render_markdown()
    infos = field_infos()
    for f in dataclasses.fields(Settings):
        assert infos[f.name].description, f"setting {f.name} has no description"
        if f.name != "extra":
            assert f"| `{f.name}` |" in page
    assert "| `workers` | integer | `4` | 1 to 256 |" in page
    assert "| `deployer` | string | `local` | `local`, `kubernetes` |" in page
    assert "| `default_ttl` | duration | `1d` |" in page
    assert "| `state_dir` | path | `~/.idds-vis` |" in page


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:pw-secret@db/vis", "database_url: unsupported ledger URL mysql://u:***@db/vis"),
        ("postgresql://u:pw-secret@db:port/vis", "database_url: not a database URL"),
    ],
)
def test_a_ledger_url_it_cannot_use_is_refused_without_its_password(
    url: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings().replace(database_url=url)
    assert expected in str(caught.value) and "pw-secret" not in str(caught.value)
    assert Settings(database_url="/var/lib/vis/ledger.db").database_url  # a bare path: SQLite
