"""`--help` of the entry points: every flag of the entry point, under headings, with its default.

absl's own `--help` lists only flags defined in the `__main__` module (ours
live in train.flags), ungrouped. `install` replaces `--help`/`--helpshort` by
`GroupedHelpFlag`, which prints the entry point's docstring, then its flags
under the headings of `train.flags.HELP_GROUPS`, each with its help text and
default; a default that a per-dataset preset sets is shown per dataset, or for
the `--dataset` given before `--help`. `--helpfull` keeps absl's full listing.
"""

import sys

from absl import app
from absl import flags

HELPFULL_NOTE = "--helpfull also lists absl's, TensorFlow's and tfds' own flags"


def _format_default(flag):
    value = flag.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) and not value else str(value)


def _default_note(flag, preset_names, dataset):
    """`(default: ...)` of `flag`, or "" for an unset default whose help text already says what happens."""
    from train import presets  # pylint: disable=import-outside-toplevel

    if flag.name in preset_names and flag.default is None:
        try:
            return f"(default: {presets.describe_default(flag.name, dataset)})"
        except ValueError:  # an unknown --dataset before --help: show every dataset's
            return f"(default: {presets.describe_default(flag.name)})"
    if flag.default is None:
        return ""
    return f"(default: {_format_default(flag)})"


def render_help(flag_values, names, doc, groups, preset_names=()):
    """The grouped help text.

    Args:
        flag_values: The `FlagValues` holding the flags (`--dataset`, if already
            parsed, selects the preset shown).
        names: The entry point's flag names.
        doc: Text shown first (the entry point's docstring).
        groups: ((heading, flag names), ...); flags of `names` in no group are shown under "Other".
        preset_names: Flags whose unset default comes from the dataset's preset.
    """
    names = set(names)
    dataset = None
    if "dataset" in flag_values and flag_values["dataset"].present:
        dataset = flag_values["dataset"].value
    listed = {n for _, group in groups for n in group}
    sections = [(heading, [n for n in group if n in names]) for heading, group in groups]
    sections.append(("Other", sorted(names - listed)))
    lines = [doc.strip(), "", f"Flags (a flag's default in parentheses; {HELPFULL_NOTE}):"]
    for heading, group in sections:
        if not group:
            continue
        lines += ["", f"{heading}:"]
        for name in group:
            flag = flag_values[name]
            prefix = f"--[no]{name}" if flag.boolean else f"--{name}"
            text = " ".join(part for part in (flag.help, _default_note(flag, preset_names, dataset)) if part)
            lines.append(flags.text_wrap(f"{prefix}: {text}", indent="      ", firstline_indent="  "))
    lines += [
        "",
        "--flagfile=FILE reads flags from FILE, one per line (a run's flags.txt replays it); "
        "later flags override it.",
    ]
    return "\n".join(lines) + "\n"


class GroupedHelpFlag(flags.BooleanFlag):
    """`--help` that prints `render()` to stdout and exits 0."""

    def __init__(self, render, name="help", short_name="?"):
        super().__init__(name, False, "show this help", short_name=short_name, allow_hide_cpp=True)
        self.allow_override = True  # replaces absl's --help
        self._render = render

    def parse(self, argument):
        super().parse(argument)
        if self.value:
            sys.stdout.write(self._render())
            sys.stdout.flush()
            sys.exit(0)


def install(doc, names, groups, preset_names=(), flag_values=flags.FLAGS):
    """Makes `--help` and `--helpshort` print the grouped help of `names` (call before `app.run`)."""
    app.define_help_flags()  # absl's (idempotent: app.run will not define them again), then ours over them

    def render():
        return render_help(flag_values, names, doc, groups, preset_names)

    flags.DEFINE_flag(GroupedHelpFlag(render), flag_values)
    flags.DEFINE_flag(GroupedHelpFlag(render, "helpshort", None), flag_values)
