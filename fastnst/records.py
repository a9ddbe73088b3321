"""A model file's training record with its repeated parts written once (model format 2, ``fastnst.checkpoint``).

A style trained in joint stages carries, in each stage's record, the record of
the merged file the stage started from, and that file carries every style's
whole history (``parts``). Each joint stage's record therefore occurs once per
style in the next merge: written out as a tree the history grows fivefold a
stage (0.05 → 0.8 MB in two stages; 64 MB of JSON by the eighth). It is a DAG,
not a tree: so a nested record that occurs in more than one place is written
once, in the ``records`` metadata, and referred to as ``{"$record": ID}``; read
back, every reference to it is the same dict object.

Both directions visit each distinct record once (a Merkle digest instead of its
text), so their cost follows the file's size, not the tree's: never serialise a
read record whole with ``json.dumps`` (``dumps_record`` is the way) or compare
two of them with ``==`` outside tests.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

RECORD_REF = "$record"
SHARED_MIN_CHARS = 2_000  # a repeated nested record at least this long (as a tree of JSON) is written once
_CONFIG, _RECORDS = "$config", "$records"  # ``dumps_record``'s wrapper, when there is anything shared


def share_records(config: dict) -> tuple[dict, dict]:
    """(``config`` with each nested record that occurs twice or more replaced by ``{"$record": ID}``, ID → record).

    A record is a dict of at least ``SHARED_MIN_CHARS`` characters as JSON
    written out whole; it occurs twice when two distinct records hold it, or one
    holds it twice (lists looked into). ID is the start of its digest, so equal
    records share one entry. Values that are not JSON are written as their
    ``str`` (as the config always was).
    """
    digests: dict[int, tuple[str, int]] = {}  # id of a dict → (digest of its content, its size as a JSON tree)
    uses = Counter()  # digest → how often distinct dicts hold it (``config`` keeps every dict, so ids stay theirs)

    def scan(value) -> tuple[object, int]:
        """(what stands for ``value`` in its holder's digest, its size as a JSON tree), each dict digested once."""
        if isinstance(value, dict):
            if id(value) not in digests:
                items = {str(key): scan(child) for key, child in value.items()}
                text = json.dumps({key: form for key, (form, _) in items.items()}, sort_keys=True)
                digests[id(value)] = (hashlib.sha256(text.encode()).hexdigest(),
                                      2 + sum(len(key) + 4 + size for key, (_, size) in items.items()))
                uses.update(_held(form for form, _ in items.values()))
            digest, size = digests[id(value)]
            return {RECORD_REF: digest}, size
        if isinstance(value, (list, tuple)):
            items = [scan(child) for child in value]  # counted as held by the dict that holds the list
            return [form for form, _ in items], 2 + sum(size + 1 for _, size in items)
        plain = _plain(value)
        return plain, len(json.dumps(plain))

    def write(value):
        if isinstance(value, (list, tuple)):
            return [write(child) for child in value]
        if not isinstance(value, dict):
            return _plain(value)
        digest, size = digests[id(value)]
        if uses[digest] < 2 or size < SHARED_MIN_CHARS or value is config:
            return {str(key): write(child) for key, child in value.items()}
        ident = digest[:16]
        if ident not in table:  # written once however many hold it
            table[ident] = {str(key): write(child) for key, child in value.items()}
        return {RECORD_REF: ident}

    scan(config)
    table: dict[str, dict] = {}
    return write(config), table


def _plain(value):
    """A value that is not a dict or list as JSON holds it: itself, or its ``str``."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _held(forms) -> list[str]:
    """The digests of the records directly inside ``forms`` (lists looked into), as often as each occurs there."""
    held = []
    for form in forms:
        if isinstance(form, dict):
            held.append(form[RECORD_REF])
        elif isinstance(form, list):
            held += _held(form)
    return held


def expand_records(config, table) -> dict:
    """``config`` with every ``{"$record": ID}`` replaced by ``table[ID]``, expanded too: one dict object per ID,
    held wherever it is referred to. ``ValueError`` for a missing, circular or non-dict reference.

    Each record is expanded once, so a crafted nest of references (a record
    holding two references to the next, forty deep) costs its own size here."""
    if not isinstance(table, dict):
        raise ValueError("records is not a map")
    done: dict[str, dict] = {}

    def expand(value, within: frozenset):
        if isinstance(value, list):
            return [expand(child, within) for child in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {RECORD_REF}:
            ident = value[RECORD_REF]
            if not isinstance(ident, str) or not isinstance(table.get(ident), dict) or ident in within:
                raise ValueError(f"record {ident!r} is missing, not a record, or contains itself")
            if ident not in done:
                done[ident] = expand(table[ident], within | {ident})
            return done[ident]
        return {key: expand(child, within) for key, child in value.items()}

    return expand(config, frozenset())


def dumps_record(record) -> str:
    """``record`` as one JSON text with its repeated records written once (``share_records``); ``loads_record``
    reads it. For a record kept outside a model file: a training checkpoint's, an exported ONNX file's."""
    config, table = share_records({"record": record})
    return json.dumps({_CONFIG: config["record"], _RECORDS: table} if table else config["record"])


def loads_record(text: str):
    """What ``dumps_record`` wrote (or plain JSON, as such texts were before), expanded; ``ValueError`` if bad."""
    value = json.loads(text)
    if isinstance(value, dict) and set(value) == {_CONFIG, _RECORDS}:
        return expand_records(value[_CONFIG], value[_RECORDS])
    return expand_records(value, {})
