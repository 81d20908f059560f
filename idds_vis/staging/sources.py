"""What a source string names: a local path, an http(s) URL, an S3 object or prefix, a Rucio DID."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from idds_vis.domain.dids import Did, parse_did
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


@dataclass(frozen=True)
class S3Source:
    """``s3://bucket/key``: one archive object; ``s3://bucket/prefix/`` (or a key that is no
    object): every object under the prefix, as a tree."""

    bucket: str
    key: str

    @property
    def shown(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class RucioSource:
    """``rucio://scope:name`` (or ``rucio:scope:name``, or a bare name whose scope it implies):
    a file, dataset or container DID; a dataset or container stages every file of it."""

    did: Did

    @property
    def shown(self) -> str:
        return f"rucio://{self.did}"


Source = LocalSource | HttpSource | S3Source | RucioSource


def _s3(text: str) -> S3Source:
    # Not urlsplit: '?' and '#' are legal in S3 keys, and keys are taken verbatim (as aws does).
    rest = text[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket or "@" in bucket or ":" in bucket:
        raise UnsupportedSource(f"S3 source '{redact_url(text)}' must be s3://bucket/key-or-prefix")
    return S3Source(bucket, key)


def _rucio(text: str) -> RucioSource:
    rest = text.split(":", 1)[1]
    rest = rest[2:] if rest.startswith("//") else rest
    try:
        return RucioSource(parse_did(rest))
    except ValueError as exc:
        raise UnsupportedSource(str(exc)) from None


def parse_source(source: str) -> Source:
    text = source.strip()
    if not text:
        raise UnsupportedSource("no artefact source given")
    # Before urlsplit: 'scope:name' in a DID would read as a host and a port.
    if text[:6].lower() == "rucio:":
        return _rucio(text)
    if text[:5].lower() == "s3://":
        return _s3(text)
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
            " expected a local path, file://, http://, https://, s3:// or rucio://"
        )
    return LocalSource(Path(text).expanduser())


def describe(source: Source) -> str:
    return str(source.path) if isinstance(source, LocalSource) else source.shown
