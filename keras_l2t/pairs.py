"""Pair specifications: which (source tap m, target tap n) pairs transfer knowledge.

Specs (over each backbone's `transfer_taps`):
- "all": every source tap × every target tap (the L2T-ww default; 16 pairs
  for ResNet-34 → ResNet-18, 15 for ResNet-32 → VGG-9-BN);
- "one_to_one": each source tap with the target tap of the nearest spatial
  size (ties: the deeper one); (m, m) for m = 1..4 at 224;
- "single": the deepest one-to-one pair ((4, 4) at 224);
- explicit "m-n,m-n,...": any taps, validated against both backbones.

With several sources (a `SourceStack`), "all" takes every transfer tap of
every source, "one_to_one" and "single" apply to each source, and an explicit
pair names its source by its position in the list: "k:m-n" (source k's tap m
to target tap n).
"""

import math

from keras_l2t.errors import InputError

PAIR_SPECS = ("all", "one_to_one", "single")


def _nearest_target_tap(source_size, target_taps, target_sizes):
    def distance(n):
        return (abs(math.log2(target_sizes[n] / source_size)), -n)

    return min(target_taps, key=distance)


def parse_pairs(spec, source, target):
    """Resolves a pair spec to a tuple of (m, n) tap-index pairs.

    Args:
        spec: "all", "one_to_one", "single", "m-n,..." or a sequence of (m, n).
        source: The source `Backbone`.
        target: The target `Backbone`.

    Raises:
        ValueError: on malformed specs or tap indices out of range, naming the
            valid indices.
    """
    source_sizes = [shape[0] for shape in source.feature_shapes]
    target_sizes = [shape[0] for shape in target.feature_shapes]
    if isinstance(spec, str) and spec in PAIR_SPECS:
        if spec == "all":
            return tuple((m, n) for m in source.transfer_taps for n in target.transfer_taps)
        one_to_one = tuple(
            (m, _nearest_target_tap(source_sizes[m], target.transfer_taps, target_sizes))
            for m in source.transfer_taps
        )
        if spec == "one_to_one":
            return one_to_one
        deepest = {}  # per source, its last one-to-one pair
        for m, n in one_to_one:
            deepest[_member(source, m)] = (m, n)
        return tuple(deepest.values())
    if isinstance(spec, str):
        pairs = [_parse_pair(item, spec, source) for item in spec.replace(" ", "").split(",")]
    else:
        pairs = [tuple(int(i) for i in pair) for pair in spec]
    if not pairs:
        raise InputError("At least one pair is needed.")
    for m, n in pairs:
        if not 0 <= m < len(source_sizes):
            raise InputError(f"Source tap {m} out of range: {source.name} has taps 0..{len(source_sizes) - 1}.")
        if not 0 <= n < len(target_sizes):
            raise InputError(f"Target tap {n} out of range: {target.name} has taps 0..{len(target_sizes) - 1}.")
    if len(set(pairs)) != len(pairs):
        raise InputError(f"Duplicate pairs in {spec!r}.")
    return tuple(pairs)


def _members(source):
    return len(getattr(source, "member_names", ())) or 1


def _member(source, m):
    return source.member_tap(m)[0] if _members(source) > 1 else 0


def _parse_pair(item, spec, source):
    """(stack tap m, target tap n) of one "m-n" or "k:m-n" item."""
    member, _, pair = item.rpartition(":")
    parts = pair.split("-")
    several = _members(source) > 1
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or (member and not member.isdigit()):
        form = "'k:m-n' (source k's tap m, target tap n)" if several else "'m-n' (source tap m, target tap n)"
        raise InputError(f"Malformed pair {item!r} in {spec!r}: use {form} separated by commas, or one of {PAIR_SPECS}.")
    m, n = int(parts[0]), int(parts[1])
    if several and not member:
        raise InputError(
            f"Pair {item!r} does not say which source: with {_members(source)} sources write 'k:m-n', k the "
            f"source's position in the list ({', '.join(f'{i}: {name}' for i, name in enumerate(source.member_names))})."
        )
    if member:
        if not several and int(member) != 0:
            raise InputError(f"Pair {item!r} names source {member}, but the run has one source (0).")
        if several:
            m = source.stack_tap(int(member), m)
    return m, n


def format_pairs(pairs, source=None):
    """The "m-n,..." string of a tuple of pairs ("k:m-n,..." when `source` stacks several sources)."""
    if source is not None and _members(source) > 1:
        return ",".join("{}:{}-{}".format(*source.member_tap(m), n) for m, n in pairs)
    return ",".join(f"{m}-{n}" for m, n in pairs)
