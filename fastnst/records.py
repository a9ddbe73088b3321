"""A model file's training record with its repeated parts written once (model format 2, ``fastnst.checkpoint``).

A style trained in joint stages carries, in each stage's record, the record of
the merged file the stage started from, and that file carries every style's
whole history (``parts``): written out plainly the history grows about
fivefold a joint stage (0.05 → 0.8 MB of header in two stages, past the
loader's 16 MB bound in four). So a nested record that occurs more than once is
written once, in the ``records`` metadata, and referred to as ``{"$record": ID}``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

RECORD_REF = "$record"
SHARED_MIN_CHARS = 2_000  # a repeated nested record at least this long (as JSON) is written once
MAX_EXPANDED_CHARS = 64 * 2**20  # what a config may expand to: bounds a crafted file's nest of references


def share_records(config: dict) -> tuple[dict, dict]:
    """(``config`` with each nested record that occurs twice or more replaced by ``{"$record": ID}``, ID → record).

    Records are dicts of at least ``SHARED_MIN_CHARS`` characters as JSON; ID is
    the start of their SHA-256, so equal records share one entry. Values that are
    not JSON are written as their ``str`` (as the config always was).
    """
    config = json.loads(json.dumps(config, default=str))  # a fresh tree: each dict is its own object
    texts: dict[int, str] = {}  # id of a long dict → its JSON (keys sorted), serialised once

    def count(value) -> None:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if isinstance(value, dict) and len(text := json.dumps(value, sort_keys=True)) >= SHARED_MIN_CHARS:
            texts[id(value)] = text
        for child in children:
            count(child)

    def share(value):
        if isinstance(value, list):
            return [share(child) for child in value]
        if not isinstance(value, dict):
            return value
        shared, text = {key: share(child) for key, child in value.items()}, texts.get(id(value))
        if counts[text] < 2:
            return shared
        ident = hashlib.sha256(text.encode()).hexdigest()[:16]
        table[ident] = shared
        return {RECORD_REF: ident}

    count(config)
    counts, table = Counter(texts.values()), {}
    return share(config), table


def expand_records(config, table) -> dict:
    """``config`` with every ``{"$record": ID}`` replaced by ``table[ID]`` (expanded too); ``ValueError`` for a
    missing, circular or non-dict reference, or one that would expand past ``MAX_EXPANDED_CHARS``."""
    if not isinstance(table, dict):
        raise ValueError("records is not a map")
    done: dict[str, tuple[object, int]] = {}  # ID → (expanded record, its size as JSON, roughly)

    def expand(value, within: frozenset) -> tuple[object, int]:
        if isinstance(value, list):
            items = [expand(child, within) for child in value]
            return [item for item, _ in items], 2 + sum(size for _, size in items)
        if not isinstance(value, dict):
            return value, len(json.dumps(value))
        if set(value) == {RECORD_REF}:
            ident = value[RECORD_REF]
            if not isinstance(ident, str) or not isinstance(table.get(ident), dict) or ident in within:
                raise ValueError(f"record {ident!r} is missing, not a record, or contains itself")
            if ident not in done:
                done[ident] = expand(table[ident], within | {ident})
            return done[ident]
        items = {key: expand(child, within) for key, child in value.items()}
        size = 2 + sum(len(key) + 4 + child_size for key, (_, child_size) in items.items())
        if size > MAX_EXPANDED_CHARS:
            raise ValueError(f"the config would expand to over {MAX_EXPANDED_CHARS:,} characters")
        return {key: item for key, (item, _) in items.items()}, size

    return expand(config, frozenset())[0]
