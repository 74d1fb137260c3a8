"""Torch module paths <-> Flax module paths: the naming styles ports use, tried in order, as one two-way mapping.

A torch path is dotted (``transformer.h.0.attn``); a Flax path is a tuple of scope names (Linen:
``("transformer", "h", "0", "attn")``, ``("h_0",)``, ``("layers_0",)``; NNX: list indices as ints). Both
are reduced to tokens and compared at three levels, strictest first, so a model whose names already
agree is never matched by a looser rule:

1. ``exact``: the torch path equals the Flax path joined with ``.`` (Linen's nested names, NNX's ``h.0``);
2. ``index``: a trailing ``_<digits>`` is a list index (``h_0`` is ``h.0``, ``layers_3`` is ``layers.3``, and
   torch's ``fc_2`` is ``fc.2`` on both sides alike, so it still matches Flax's ``fc_2``);
3. ``collapsed``: also a scope repeated right before itself is one scope (HF's Flax ResNet wraps torch's
   ``layer.0`` as ``layer/layer_0``);
4. ``sequential``: also a ``layers`` scope right before an index is dropped on both sides (``nnx.Sequential``
   keeps its children in ``layers``: torch's ``layer1.0.conv1`` is NNX's ``layer1/layers/0/conv1``).

A name at a looser level is used only when exactly one torch and one Flax path share it (a two-way
mapping); anything else is left unmatched for the caller to report. A user ``rule`` (a mapping of torch
prefixes to Flax prefixes, a list of ``(regex, replacement)`` pairs, or a function) rewrites torch paths
before the levels are tried.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

LEVELS = ("exact", "index", "collapsed", "sequential")
_INDEX = re.compile(r"^(.*[^_])_(\d+)$")

Rule = Mapping[str, str] | Sequence[tuple[str, str]] | Callable[[str], str] | None


def flax_name(path: Iterable) -> str:
    """A Flax module path as one string, ``/``-joined (``transformer/h/0/attn``)."""
    return "/".join(str(p) for p in path)


def _tokens(parts: Sequence[str], level: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in parts:
        if level != "exact":
            m = _INDEX.match(part)
            if m:
                out += [m.group(1), m.group(2)]
                continue
        out.append(part)
    if level in ("collapsed", "sequential"):
        out = [t for i, t in enumerate(out) if i + 1 >= len(out) or out[i + 1] != t]
    if level == "sequential":
        out = [t for i, t in enumerate(out) if not (t == "layers" and i + 1 < len(out) and out[i + 1].isdigit())]
    return tuple(out)


def apply_rule(torch_path: str, rule: Rule) -> str:
    """``torch_path`` rewritten by the user's rule (unchanged without one)."""
    if rule is None:
        return torch_path
    if callable(rule):
        out = rule(torch_path)
        if not isinstance(out, str):
            raise TypeError(f"names rule returned {type(out).__name__} for {torch_path!r}, expected a str")
        return out
    if isinstance(rule, Mapping):
        for old in sorted(rule, key=len, reverse=True):  # the longest prefix wins
            if torch_path == old or torch_path.startswith(old + "."):
                return rule[old] + torch_path[len(old):]
        return torch_path
    for pattern, repl in rule:
        torch_path = re.sub(pattern, repl, torch_path)
    return torch_path


def match(torch_paths: Sequence[str], flax_paths: Sequence[str], rule: Rule = None) -> dict[str, tuple[str, str]]:
    """``{torch path: (flax path, level)}`` for every torch path that maps one-to-one to a Flax path.

    ``flax_paths`` are ``/``-joined. A rule's output may use ``.`` or ``/``.
    """
    flax_parts = {f: tuple(f.split("/")) if f else () for f in flax_paths}
    renamed = {t: apply_rule(t, rule) for t in torch_paths}
    torch_parts = {t: tuple(re.split(r"[./]", r)) if r else () for t, r in renamed.items()}
    out: dict[str, tuple[str, str]] = {}
    taken: set[str] = set()
    for level in LEVELS:
        by_key: dict[tuple, list[str]] = {}
        for f, parts in flax_parts.items():
            if f not in taken:
                by_key.setdefault(_tokens(parts, level), []).append(f)
        t_by_key: dict[tuple, list[str]] = {}
        for t, parts in torch_parts.items():
            if t not in out:
                t_by_key.setdefault(_tokens(parts, level), []).append(t)
        for key, ts in t_by_key.items():
            fs = by_key.get(key, [])
            if len(ts) == 1 and len(fs) == 1:
                out[ts[0]] = (fs[0], level)
                taken.add(fs[0])
    return out


def ignored(name: str, ignore: Mapping[str, str]) -> str | None:
    """The reason ``name`` is ignored (a glob pattern of ``ignore`` matches it or a parent), else None."""
    parts = name.split(".")
    for pattern, reason in ignore.items():
        for i in range(len(parts), 0, -1):
            if fnmatch.fnmatchcase(".".join(parts[:i]), pattern):
                return reason
    return None
