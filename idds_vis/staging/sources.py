"""What a source string names: a local path or an http(s) URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from idds_vis.staging.errors import UnsupportedSource
from idds_vis.staging.redact import redact_url


@dataclass(frozen=True)
class LocalSource:
    path: Path


@dataclass(frozen=True)
class HttpSource:
    url: str

    @property
    def shown(self) -> str:
        return redact_url(self.url)


Source = LocalSource | HttpSource


def parse_source(source: str) -> Source:
    text = source.strip()
    if not text:
        raise UnsupportedSource("no artefact source given")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return HttpSource(text)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UnsupportedSource(f"file URI names a remote host: {redact_url(text)}")
        return LocalSource(Path(unquote(parts.path)))
    # A one-letter "scheme" is a Windows drive; anything longer we do not speak.
    if scheme and len(scheme) > 1:
        raise UnsupportedSource(
            f"unsupported artefact source scheme '{scheme}' in {redact_url(text)}:"
            " expected a local path, file://, http:// or https://"
        )
    return LocalSource(Path(text).expanduser())


def describe(source: Source) -> str:
    return str(source.path) if isinstance(source, LocalSource) else source.shown
