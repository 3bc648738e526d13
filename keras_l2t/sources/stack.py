"""`SourceStack`: several frozen sources seen as one `Backbone`, each at its own input size.

L2T-ww pairs a source tap with a target tap; with several sources, a pair is
(source k, its tap m) → target tap n. A `SourceStack` puts the taps of its
members side by side: its tap i is tap `member_tap(i)[1]` of member
`member_tap(i)[0]`, so every transfer model (`L2TWW`, `HandCraftedTransfer`)
works on it unchanged, and each pair's meta-networks see their own source's
features. Each member gets the target's images resized (bilinearly) to the
member's own input size, and keeps its own input normalisation (inside its
network). A stack of one source is how a source of another input size than
the target's (e.g. DINOv2 at 224 into a 32×32 CNN) is used.
"""

import keras

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.errors import InputError


@keras.saving.register_keras_serializable(package="keras_l2t")
class SourceStack(Backbone):
    """Frozen sources side by side: taps of member 0, then member 1's, …; logits of the first classifier.

    Build one with `SourceStack.of(sources, image_size)`; the constructor is
    for deserialisation.

    Args:
        network: Functional model: images → [logits, member 0's taps, member 1's taps, ...].
        member_names: Per member, its name (unique; named in logs and tables).
        member_tap_counts: Per member, its number of taps.
        transfer_taps: Stack tap indices of the members' transfer taps.
        has_classifier: Whether some member has a classification head (its logits are the stack's).
    """

    def __init__(self, network, member_names, member_tap_counts, transfer_taps=None, has_classifier=True, **kwargs):
        super().__init__(network, transfer_taps=transfer_taps, has_classifier=has_classifier, **kwargs)
        self.member_names = tuple(member_names)
        self.member_tap_counts = tuple(int(c) for c in member_tap_counts)
        if sum(self.member_tap_counts) != len(network.outputs) - 1 or len(self.member_names) != len(
            self.member_tap_counts
        ):
            raise InputError("member_tap_counts must add up to the network's taps, one count per member name.")

    @classmethod
    def of(cls, sources, image_size, name=None):
        """Stacks `Backbone`s for a target that sees `image_size`×`image_size` images.

        A member built for another (fixed) size gets the images bilinearly
        resized to it; a fully convolutional member (size None) gets them as
        they are. Members with the same name are numbered (`name_1`, ...).
        """
        sources = list(sources)
        if not sources or not all(isinstance(s, Backbone) for s in sources):
            raise InputError("SourceStack.of needs one or more keras_l2t Backbones.")
        names = _unique_names([s.name for s in sources])
        inputs = keras.Input((image_size, image_size, 3), name="images")
        logits, first_output, taps, transfer_taps, counts = None, None, [], [], []
        for source, member_name in zip(sources, names):
            x = inputs
            height, width = source.image_shape[:2]
            if None not in (height, width) and (height, width) != (image_size, image_size):
                x = keras.layers.Resizing(height, width, interpolation="bilinear", name=f"{member_name}_resize")(x)
            member = keras.Model(source.network.inputs, source.network.outputs, name=member_name)
            member_logits, *member_taps = member(x)
            first_output = member_logits if first_output is None else first_output
            if logits is None and source.has_classifier:
                logits = member_logits
            transfer_taps += [len(taps) + t for t in source.transfer_taps]
            taps += member_taps
            counts.append(len(member_taps))
        has_classifier = logits is not None
        if logits is None:  # no member classifies: the first's pooled embedding stands in
            logits = first_output
        name = name or "_and_".join(names)
        network = keras.Model(inputs, [logits] + taps, name=f"{name}_stack")
        stack = cls(network, names, counts, transfer_taps=transfer_taps, has_classifier=has_classifier, name=name)
        stack.trainable = False
        return stack

    def member_tap(self, tap):
        """(member index, the member's own tap number) of stack tap `tap`."""
        for member, count in enumerate(self.member_tap_counts):
            if tap < count:
                return member, tap
            tap -= count
        raise InputError(f"Tap {tap} is beyond the stack's {sum(self.member_tap_counts)} taps.")

    def stack_tap(self, member, tap):
        """The stack tap index of member `member`'s tap `tap`."""
        if not 0 <= member < len(self.member_tap_counts):
            raise InputError(
                f"Source {member} out of range: the run has sources 0..{len(self.member_tap_counts) - 1} "
                f"({', '.join(self.member_names)})."
            )
        if not 0 <= tap < self.member_tap_counts[member]:
            raise InputError(
                f"Source tap {member}:{tap} out of range: {self.member_names[member]} has taps "
                f"0..{self.member_tap_counts[member] - 1}."
            )
        return sum(self.member_tap_counts[:member]) + tap

    def get_config(self):
        config = super().get_config()
        config.update({"member_names": list(self.member_names), "member_tap_counts": list(self.member_tap_counts)})
        return config


def _unique_names(names):
    seen, unique = {}, []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def pair_label(source, pair):
    """How logs name a pair: "m_n" for one source, "<source name>_m_n" (m the member's own tap) in a stack."""
    m, n = pair
    if isinstance(source, SourceStack) and len(source.member_names) > 1:
        member, tap = source.member_tap(m)
        return f"{source.member_names[member]}_{tap}_{n}"
    return f"{m}_{n}"


def pair_sources(source, pairs):
    """Per pair, the name of its source in a stack of several sources; None for one source."""
    if not isinstance(source, SourceStack) or len(source.member_names) < 2:
        return None
    return [source.member_names[source.member_tap(m)[0]] for m, _ in pairs]
