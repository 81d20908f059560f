"""Label and field selectors with the grammar of k8s.io/apimachinery labels.Parse/fields.Parse.

No maintained PyPI library implements this grammar, so it is written here; the lexer follows
the Go one: identifiers are runs of anything but whitespace and the symbols `!=(),<>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .errors import bad_request

_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|<|>|[^\s!=(),<>]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !exists, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        if self.op == "notin":
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if self.op == "gt" else have < want


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise bad_request(f"unable to parse requirement: unexpected character at {pos}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _check(key: str, values: tuple[str, ...]) -> None:
    errs = names.qualified_name(key)
    if errs:
        raise bad_request(
            f"unable to parse requirement: values[0][{key}]: Invalid value: "
            f'"{key}": {"; ".join(errs)}'
        )
    for v in values:
        errs = names.label_value(v)
        if errs:
            raise bad_request(
                f"unable to parse requirement: values[0][{key}]: Invalid value: "
                f'"{v}": {"; ".join(errs)}'
            )


def parse_label_selector(text: str | None) -> LabelSelector:
    toks = _tokens(text or "")
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(toks):
            raise bad_request(f"unable to parse requirement: found '', in selector {text!r}")
        i += 1
        return toks[i - 1]

    def is_ident(t: str) -> bool:
        return t not in ("==", "!=", "=", "!", "(", ")", ",", "<", ">")

    while i < len(toks):
        tok = take()
        if tok == "!":
            key = take()
            _check(key, ())
            reqs.append(Requirement(key, "!exists"))
        elif not is_ident(tok):
            raise bad_request(f"unable to parse requirement: found '{tok}', expected: identifier")
        elif i >= len(toks) or toks[i] == ",":
            _check(tok, ())
            reqs.append(Requirement(tok, "exists"))
        else:
            op = take()
            if op in ("=", "==", "!="):
                value = toks[i] if i < len(toks) and is_ident(toks[i]) else ""
                i += 1 if value else 0
                _check(tok, (value,))
                reqs.append(Requirement(tok, "notin" if op == "!=" else "in", (value,)))
            elif op in ("in", "notin"):
                if take() != "(":
                    raise bad_request("unable to parse requirement: found '', expected: '('")
                values: list[str] = []
                expect_value = True
                while True:
                    t = take()
                    if t == ")":
                        if expect_value and values:
                            values.append("")
                        break
                    if t == ",":
                        if expect_value:
                            values.append("")
                        expect_value = True
                    elif is_ident(t) and expect_value:
                        values.append(t)
                        expect_value = False
                    else:
                        raise bad_request(f"unable to parse requirement: unexpected '{t}'")
                if not values:
                    raise bad_request(
                        "unable to parse requirement: for 'in', 'notin' "
                        "operators, values set can't be empty"
                    )
                _check(tok, tuple(values))
                reqs.append(Requirement(tok, op, tuple(values)))
            elif op in ("<", ">"):
                value = take()
                if not re.fullmatch(r"-?\d+", value):
                    raise bad_request(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, "
                        f"the value must be an integer: {value!r}"
                    )
                _check(tok, ())
                reqs.append(Requirement(tok, "gt" if op == ">" else "lt", (value,)))
            else:
                raise bad_request(
                    f"unable to parse requirement: found '{op}', expected: "
                    "'=', '!=', '==', 'in', notin'"
                )
        if i < len(toks):
            if toks[i] != ",":
                raise bad_request(f"unable to parse requirement: found '{toks[i]}', expected: ','")
            i += 1
            if i >= len(toks):
                raise bad_request("unable to parse requirement: found '', expected: identifier")
    return LabelSelector(tuple(reqs))


def selector_from_spec(spec: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels/matchExpressions) as a LabelSelector."""
    reqs = [Requirement(k, "in", (v,)) for k, v in ((spec or {}).get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in (spec or {}).get("matchExpressions") or []:
        reqs.append(
            Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        )
    return LabelSelector(tuple(reqs))


# Fields each registry lets a fieldSelector use (besides metadata.name/metadata.namespace).
_FIELDS: dict[str, tuple[str, ...]] = {
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "secrets": ("type",),
    "namespaces": ("status.phase",),
}


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    if path == "source":
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def parse_field_selector(text: str | None, plural: str) -> Callable[[Mapping[str, Any]], bool]:
    terms: list[tuple[str, bool, str]] = []
    allowed = ("metadata.name", "metadata.namespace", *_FIELDS.get(plural, ()))
    for raw in re.split(r"(?<!\\),", text or ""):
        if not raw.strip():
            continue
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", raw)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{raw}'")
        field, op, value = m.groups()
        if field not in allowed:
            raise bad_request(f"field label not supported: {field}")
        value = re.sub(r"\\(.)", r"\1", value)
        terms.append((field, op == "!=", value))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, f) == v) != negate for f, negate, v in terms)

    return matches
