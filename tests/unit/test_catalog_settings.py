"""The catalog's settings: read from YAML, turned into the login, tool offers and limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from idds_vis.api.auth.config import auth_config
from idds_vis.api.auth.oidc import check_issuer_url, pkce_pair, s256
from idds_vis.api.catalog.setup import limits, offers
from idds_vis.domain.errors import InvalidRequest
from idds_vis.runtime.config import Settings, load_settings


def test_yaml_settings_become_login_offers_and_limits(tmp_path: Path) -> None:
    secret = tmp_path / "oidc.secret"
    secret.write_text("the-client-secret\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"""
oidc_issuer: https://iam.example.org/
oidc_client_id: idds-vis
oidc_client_secret_file: {secret}
oidc_audience: [https://idds-vis.example.org]
oidc_jwt_profile: wlcg
oidc_robot_clients: [idds-robot]
production_groups: [atlas/production]
tool_groups: {{mlflow: [atlas/ml-support]}}
tool_default_ttl: {{mlflow: 12h}}
tool_max_ttl: {{mlflow: 3d}}
quota_per_user: 3
quota_per_group: {{atlas/ml: 20}}
quota_total: 200
quota_user_ttl: 2d
session_lifetime: 8h
rate_limit: 30/minute
""")
    settings = load_settings(config)
    offer = offers(settings)["mlflow"]
    assert (offer.default_ttl, offer.max_ttl, offer.groups) == (
        timedelta(hours=12), timedelta(days=3), ("atlas/ml-support",))
    quota = limits(settings)
    assert (quota.per_user, dict(quota.per_group), quota.total, quota.user_ttl) == (
        3, {"atlas/ml": 20}, 200, timedelta(days=2))
    auth = auth_config(settings)
    assert auth.login and auth.reads_need_identity and not auth.public_task_json
    assert auth.oidc is not None and auth.oidc.client_secret == "the-client-secret"
    assert auth.oidc.audiences == ("https://idds-vis.example.org", "idds-vis")
    assert auth.session_lifetime == timedelta(hours=8) and auth.jwt_profile == "wlcg"
    assert "the-client-secret" in settings.secrets()  # kept out of every log line


def test_without_an_issuer_login_and_its_read_rule_are_off() -> None:
    auth = auth_config(Settings(auth_required_for_reads=True))
    assert not auth.login and not auth.reads_need_identity


def test_a_default_ttl_over_the_tools_maximum_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="default TTL 2d is over its maximum 1d"):
        offers(Settings(tool_default_ttl={"mlflow": timedelta(days=2)},
                        tool_max_ttl={"mlflow": timedelta(days=1)}))  # fmt: skip


@pytest.mark.parametrize("url", ["http://iam.example.org", "ftp://127.0.0.1/"])
def test_an_issuer_must_be_https_except_on_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="must be https"):
        check_issuer_url(url)
    check_issuer_url("http://127.0.0.1:8443")
    check_issuer_url("https://iam.example.org")


def test_pkce_pairs_follow_rfc_7636() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and challenge == s256(verifier)
    assert pkce_pair()[0] != verifier
    # RFC 7636 appendix B's example verifier and challenge.
    example = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(example) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
