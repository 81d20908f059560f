"""The permalink a workflow author puts in task parameters: ``<base>/t/<task name>/<tool>?ttl=``.

It is keyed by the task name because the task id is not known at submission. The name is quoted
with no safe characters: PanDA task names often end in "/" (``user.jdoe.train/``), and a raw "/"
would make the name and the tool ambiguous.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from idds_vis.domain.errors import InvalidRequest
from idds_vis.domain.expiry import format_duration, parse_duration
from idds_vis.domain.models import DEFAULT_TOOL

# The tools an idds-vis can start: one list, in the models (refused at submission rather than
# after the task has run).
from idds_vis.domain.models import TOOLS as TOOLS
from idds_vis.domain.models import check_tool as check_tool

PATH_MARK = "/t/"


class Permalink(NamedTuple):
    task_name: str
    tool: str
    ttl: timedelta | None  # None: the server's default
    # The task's userName: PanDA searches task names among one owner's tasks only.
    owner: str | None = None


def check_base_url(base_url: str) -> str:
    """An absolute http(s) URL with no query or fragment; returned without its trailing "/"."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(
            f"idds-vis base URL {base_url!r} must be an absolute http(s) URL, "
            "e.g. https://idds-vis.example.org"
        )
    if parts.query or parts.fragment:
        raise InvalidRequest(f"idds-vis base URL {base_url!r} must not have a query or fragment")
    return base_url.strip().rstrip("/")


def ttl_text(ttl: str | timedelta) -> str:
    """The TTL as written (checked), or a timedelta written the way people write durations."""
    value = parse_duration(ttl)
    return format_duration(value) if isinstance(ttl, timedelta) else str(ttl).strip()


def permalink_path(task_name: str, tool: str) -> str:
    if not task_name or not task_name.strip():
        raise InvalidRequest("the task has no name: the permalink is keyed by the task name")
    return f"{PATH_MARK}{quote(task_name, safe='')}/{check_tool(tool)}"


def permalink_url(
    base_url: str,
    task_name: str,
    tool: str = DEFAULT_TOOL,
    ttl: str | timedelta | None = None,
    owner: str | None = None,
) -> str:
    url = check_base_url(base_url) + permalink_path(task_name, tool)
    return url + permalink_query(None if ttl is None else ttl_text(ttl), owner)


def permalink_query(ttl: str | None, owner: str | None) -> str:
    query = [(k, v) for k, v in (("ttl", ttl), ("owner", owner)) if v]
    return ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)) if query else ""


def parse_permalink(url: str) -> Permalink:
    """Read a permalink back (the PanDA resolver finds it in the task parameters)."""
    parts = urlsplit(url.strip())
    quoted_name = tool = ""
    # The rightmost "/t/" followed by "<name>/<tool>": a task named "t" makes "/t/t/mlflow", and
    # the tool is the last segment, so a name whose "/" was left unquoted still reads whole.
    end = len(parts.path)
    while (at := parts.path.rfind(PATH_MARK, 0, end)) >= 0:
        end = at + len(PATH_MARK) - 1  # overlapping marks: "/t/t/" holds two
        quoted_name, slash, tool = parts.path[at + len(PATH_MARK) :].rpartition("/")
        if slash and quoted_name:
            break
        quoted_name = ""
    if not quoted_name or parts.scheme not in ("http", "https", ""):
        raise InvalidRequest(f"{url!r} is not an idds-vis permalink (…/t/<task name>/<tool>)")
    query = parse_qs(parts.query)
    ttls = query.get("ttl")
    ttl = parse_duration(ttls[-1]) if ttls else None
    owners = query.get("owner")
    return Permalink(unquote(quoted_name), check_tool(tool), ttl, owners[-1] if owners else None)
