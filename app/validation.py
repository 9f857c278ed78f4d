"""Pydantic's validation errors told as one sentence a person can act on.

A request that fails validation gets a 422 whose `detail` names the most useful problem, where
it is and what to send instead ("Unknown field dataset: did you mean dataset_id?"), and whose
`errors` list every problem found (capped) by `loc`, `msg` and `type`. Each `loc` is a path
into the request as sent: the labels pydantic adds for the branches of a union (`config`,
`conv`, `adam`) are dropped, which takes the request model's types, walked along the path.

Suggestions ("did you mean") come from the fields the model has at that place (or one level
further down: `training.lr` is `training.optimizer.learning_rate`) and from the values an enum
or a tag accepts: the name whose initials are the word (`lr`), one the word begins or ends
(`dataset`, `lenet`), or the closest spelling (difflib).
"""

import difflib
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

MAX_REPORTED_ERRORS = 10
SOURCES = {"body", "query", "path", "header", "cookie"}
CHOICE_ERRORS = {"enum", "literal_error", "union_tag_invalid"}


def _members(tp: Any) -> list[Any]:
    """The types a union (or Optional) annotation allows, None left out; [tp] otherwise."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in get_args(tp) if m is not type(None)]
    return [tp]


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _labels(member: Any) -> set[str]:
    """The names pydantic may give a union member in a `loc`: its tag, class name, or the
    literal values of its discriminator field."""
    names = {str(m.tag) for m in getattr(member, "__metadata__", ()) if hasattr(m, "tag")}
    inner = _strip(member)
    names.add(getattr(inner, "__name__", ""))
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        for field in inner.model_fields.values():
            if get_origin(_strip(field.annotation)) is Literal:
                names.update(str(v) for v in get_args(_strip(field.annotation)))
    return names


def _branch(tp: Any, label: str | int) -> Any:
    """The member of union `tp` that pydantic names `label` in a `loc` (None if unknown)."""
    for member in _members(tp):
        name = getattr(_strip(member), "__name__", "")
        if str(label) in _labels(member) or f"[{name}]" in str(label):
            return member
    return None


def _child(tp: Any, part: str | int) -> Any:
    """The type of field or item `part` of `tp` (None if the types do not say)."""
    model = _model_of(tp)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field else None
    members = _members(tp)
    inner = _strip(members[0]) if len(members) == 1 else None
    args = get_args(inner)
    if get_origin(inner) is list and args:
        return args[0]
    if get_origin(inner) is tuple and args and isinstance(part, int):
        return args[0] if args[-1] is Ellipsis else args[part] if part < len(args) else None
    if get_origin(inner) is dict and len(args) == 2:
        return args[1]
    return None


def _model_of(tp: Any) -> type[BaseModel] | None:
    members = _members(tp)
    inner = _strip(members[0]) if len(members) == 1 else None
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def walk(root: Any, loc: tuple) -> tuple[list[str | int], type[BaseModel] | None]:
    """`loc` (after its source, e.g. "body") without union labels, and the model whose field
    its last part names (None when the types do not say)."""
    path: list[str | int] = []
    tp, parent = root, None
    for part in loc:
        if tp is not None and len(_members(tp)) > 1:
            tp = _branch(tp, part)  # pydantic's label for the union member: not in the request
            continue
        parent = _model_of(tp) if tp is not None else None
        path.append(part)
        tp = _child(tp, part) if tp is not None else None
    return path, parent


def closest(word: str, candidates: list[str]) -> str | None:
    """The candidate `word` most likely meant: by initials, by prefix, then by spelling."""
    word = word.lower()
    for candidate in candidates:
        parts = candidate.lower().split("_")
        if len(parts) > 1 and word == "".join(p[0] for p in parts if p):
            return candidate
    if len(word) >= 3:
        prefixed = [
            c for c in candidates if c.lower().startswith(word) or word.startswith(c.lower())
        ]
        if prefixed:
            return min(prefixed, key=len)
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def _field_suggestion(name: str, parent: type[BaseModel]) -> tuple[str, ...] | None:
    """The path (relative to `parent`) of the field `name` probably meant: one of `parent`'s
    fields, else a field of a model one of them holds."""
    own = [n for n in parent.model_fields if n != name]
    found = closest(name, own)
    if found:
        return (found,)
    for field_name, field in parent.model_fields.items():
        for member in _members(field.annotation):
            model = _model_of(member)
            if model is not None:
                found = closest(name, list(model.model_fields))
                if found:
                    return (field_name, found)
    return None


def _cut(part: str | int, length: int = 60) -> str | int:
    """A path part as sent (a key may be any string), cut to `length` characters."""
    if isinstance(part, int):
        return part
    text = str(part)
    return text if len(text) <= length else text[: length - 3] + "..."


def render(path: list[str | int]) -> str:
    """A path as people write it: `architecture.layers[0].filters`."""
    text = ""
    for part in map(_cut, path):
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _choices(err: dict) -> list[str]:
    ctx = err.get("ctx") or {}
    expected = ctx.get("expected_tags") or ctx.get("expected") or ""
    return re.findall(r"'([^']*)'", str(expected))


JSON_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    dict: "an object",
    list: "a list",
}


def _shown(value: Any) -> str:
    """A short, safe rendering of a value the client sent: a string itself (cut), else its
    JSON kind."""
    if not isinstance(value, str):
        return JSON_KINDS.get(type(value), "null")
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _rank(err: dict) -> int:
    """Which problem the sentence tells first: a wrong name, then a wrong choice, a missing
    field, a wrong value, and last a wrong type (often another problem's echo in a union)."""
    kind = str(err.get("type", ""))
    if kind == "extra_forbidden":
        return 0
    if kind in CHOICE_ERRORS and isinstance(err.get("input"), str | dict):
        return 1
    if kind == "missing":
        return 2
    return 4 if kind.endswith("_type") else 3


class Explained:
    """One error with its location cleaned and its message made specific."""

    def __init__(self, err: dict, root: Any) -> None:
        loc = tuple(err.get("loc", ()))
        self.source = str(loc[0]) if loc and loc[0] in SOURCES else None
        rest = loc[1:] if self.source else loc
        self.path, parent = walk(root, rest) if root is not None else (list(rest), None)
        self.type = str(err.get("type", ""))
        self.msg = str(err.get("msg", ""))
        self.rank = _rank(err)
        where = self.where()
        if self.type == "extra_forbidden" and self.path:
            name = str(self.path[-1])
            found = _field_suggestion(name, parent) if parent is not None else None
            if found:
                meant = render([*self.path[:-1], *found])
                self.msg += f"; did you mean {'.'.join(found)}?"
                self.sentence = f"Unknown field {where}: did you mean {meant}?"
            elif parent is not None:
                fields = ", ".join(parent.model_fields)
                self.sentence = f"Unknown field {where}: the fields here are {fields}"
            else:
                self.sentence = f"Unknown field {where}: remove it"
        elif self.type in CHOICE_ERRORS:
            choices = _choices(err)
            sent = err.get("input")
            if self.type == "union_tag_invalid":
                sent = (err.get("ctx") or {}).get("tag")
                field = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
                where = render([*self.path, field]) if field.isidentifier() else where
            meant = closest(str(sent), choices) if isinstance(sent, str) else None
            hint = f": did you mean {meant!r}?" if meant else ""
            self.msg += hint.replace(":", ";", 1)
            self.sentence = f"{where} is {_shown(sent)}, not one of {', '.join(choices)}{hint}"
        elif self.type == "missing":
            field = parent.model_fields.get(str(self.path[-1])) if parent and self.path else None
            about = f" ({field.description.rstrip('.')})" if field and field.description else ""
            self.sentence = f"Missing field {where}{about}: add it"
        else:
            self.sentence = f"{where}: {self.msg[:1].lower()}{self.msg[1:]}"

    def where(self) -> str:
        if self.source in (None, "body"):
            return render(self.path) or "the body"
        return f"{self.source} parameter {render(self.path)}"

    def issue(self) -> dict:
        loc = [self.source, *self.path] if self.source else list(self.path)
        return {
            "loc": [_cut(part, 100) for part in loc[:20]],
            "msg": self.msg[:500],
            "type": self.type[:100],
        }


def explain(errors: list[dict], root: Any = None) -> tuple[str, list[dict]]:
    """The sentence and the capped issue list for pydantic `errors` of a request validated
    against `root` (the body's type; None when unknown)."""
    explained = [Explained(err, root) for err in errors[: 4 * MAX_REPORTED_ERRORS]]
    if not explained:
        return "the request is invalid", []
    sentence = min(explained, key=lambda e: e.rank).sentence
    if len(errors) > 1:
        sentence += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in errors)"
    issues = [e.issue() for e in explained[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        issues.append(
            {
                "loc": [],
                "msg": f"and {len(errors) - MAX_REPORTED_ERRORS} more errors; fix these first",
                "type": "too_many_errors",
            }
        )
    return sentence, issues
