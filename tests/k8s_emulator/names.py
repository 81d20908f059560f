"""Name and label syntax, with the wording of k8s.io/apimachinery/pkg/util/validation."""

from __future__ import annotations

import re
import secrets

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_IANA = r"[-a-z0-9]+"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"


def _full(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _full(_LABEL, value):
        errs.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric "
            "characters or '-', and must start and end with an alphanumeric character "
            f"(e.g. 'my-name',  or '123-abc', regex used for validation is '{_LABEL}')"
        )
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _full(_SUBDOMAIN, value):
        errs.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'example.com', regex used for validation is "
            f"'{_SUBDOMAIN}')"
        )
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _full(_DNS1035, value):
        errs.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or "
            "'-', start with an alphabetic character, and end with an alphanumeric "
            f"character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
            f"'{_DNS1035}')"
        )
    return errs


def path_segment(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


NAME_RULES = {
    "subdomain": dns1123_subdomain,
    "label": dns1123_label,
    "dns1035": dns1035_label,
    "path": path_segment,
}


def qualified_name(value: str) -> list[str]:
    """Label and annotation keys: optional DNS-subdomain prefix, '/', then a 63-char name."""
    prefix, sep, name = value.rpartition("/")
    errs = []
    if sep:
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + e for e in dns1123_subdomain(prefix))
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if name and not _full(_QUALIFIED, name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyName',  or "
            f"'my.name',  or '123-abc', regex used for validation is '{_QUALIFIED}')"
        )
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _full(_LABEL_VALUE, value):
        errs.append(
            "a valid label must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric "
            f"character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
            f"validation is '{_LABEL_VALUE}')"
        )
    return errs


def port_name(value: str) -> list[str]:
    """IANA_SVC_NAME: what container and service port names must be."""
    errs = []
    if len(value) > 15:
        errs.append("must be no more than 15 characters")
    if not _full(_IANA, value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not re.search("[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def config_key(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _full(_CONFIG_KEY, value):
        errs.append(
            "a valid config key must consist of alphanumeric characters, '-', '_' or "
            f"'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
            f"validation is '{_CONFIG_KEY}')"
        )
    return errs


_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what utilrand.String draws from


def random_suffix(n: int = 5) -> str:
    """The suffix generateName gets, as the real name generator makes it."""
    return "".join(secrets.choice(_NAME_CHARS) for _ in range(n))
