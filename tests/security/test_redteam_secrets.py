"""Red team, secrets: a share link whose query is the token itself (``?<token>``, no value).

``redact_url`` masked every query value but showed every query name, so a source like
``https://share.example.org/s/x.tgz?Zq8r...`` appeared whole in the Deployment's
``idds-vis/source`` annotation, in failure reasons and in logs; the API-server message
scrubber did not know that name was a secret either.
"""

from __future__ import annotations

import pytest

from idds_vis.deploy.kubernetes.objects import shown_source
from idds_vis.deploy.kubernetes.status import scrubber, source_secrets
from idds_vis.staging.redact import redact_url
from idds_vis.staging.sources import HttpSource

TOKEN = "Zq8rT0k3nSh4reL1nk9c41e07d2bAAAA"
SOURCES = [
    f"https://share.example.org/s/metrics.tgz?{TOKEN}",
    f"https://share.example.org/s/metrics.tgz?workloadid=12&{TOKEN}=",
    f"https://share.example.org/s/metrics.tgz?{TOKEN}{TOKEN}=1",  # no name is that long
]


@pytest.mark.parametrize("source", SOURCES)
def test_a_query_name_that_is_the_token_is_not_shown(source: str) -> None:
    for shown in (redact_url(source), shown_source(source), HttpSource(source).shown):
        assert TOKEN not in shown, shown
        assert shown.startswith("https://share.example.org/s/metrics.tgz?")


@pytest.mark.parametrize("source", SOURCES)
def test_the_api_servers_message_quoting_it_is_scrubbed(source: str) -> None:
    name = source.rsplit("&", 1)[-1].rsplit("?", 1)[-1].partition("=")[0]
    scrub = scrubber(source_secrets(source))
    shown = scrub(f'Invalid value: "{name}": rejected')  # the server quotes what it refused
    assert TOKEN not in shown, shown


def test_ordinary_names_and_ids_stay_readable() -> None:
    shown = redact_url("https://bigpanda.example.org/hpo/?workloadid=4242&X-Amz-Signature=abc")
    assert shown == "https://bigpanda.example.org/hpo/?workloadid=4242&X-Amz-Signature=***"
