"""``--print-config``: every run setting as a commented YAML file that ``--config`` reads back.

The comments are the descriptions of :class:`pipeline.config.Settings` (its docstring is the
one place where each setting is documented), so the example cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from typing import Any

import yaml

from pipeline.config import Settings

#: Example values shown for settings that have no default, so that the file is a template.
EXAMPLES: dict[str, Any] = {
    "images": "tiles/{tile}_{band}.fits",
    "masks": "masks/{tile}_{band}.fits",
    "weights": "weights/{tile}_{band}.fits",
    "catalog": "sources.parquet",
    "bands": ["g", "r", "i"],
    "where": "mag_r < 22 and flag == 0",
    "out": "run1",
    "workers": 4,
    "threads_per_worker": 2,
    "scheduler": "tcp://10.0.0.5:8786",
    "batch_size": 32,
    "known_lenses": "lenscat",
    "rescore": "run1",
}
#: Settings a run needs (without --demo); written active even where they have no default.
REQUIRED = ("images", "catalog", "out")
#: Settings that select another mode of run_survey.py; shown, but commented out.
MODES = ("rescore", "demo", "demo_objects", "demo_engine", "demo_lens_fraction", "seed")


def descriptions() -> dict[str, str]:
    """Setting name -> its description, from the ``Attributes:`` section of Settings' docstring."""
    doc = textwrap.dedent((Settings.__doc__ or "").split("Attributes:", 1)[-1])
    found: dict[str, str] = {}
    name = None
    for line in doc.splitlines():
        match = re.match(r"^(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            found[name] = match.group(2).strip()
        elif name and line.startswith("    "):
            found[name] += " " + line.strip()
        elif line.strip():
            name = None
    plain = {key: re.sub(r"(?::\w+:)?`+([^`]*)`+", r"\1", text) for key, text in found.items()}
    return plain


def _value_text(name: str, value: Any) -> str:
    text = yaml.safe_dump({name: value}, default_flow_style=True, sort_keys=False, width=10_000).strip()
    # safe_dump wraps a one-key mapping in braces in flow style; a block line reads better.
    return text[1:-1] if text.startswith("{") else text


def example_yaml(values: dict[str, Any] | None = None) -> str:
    """A commented YAML file of every setting.

    ``values`` (setting -> value, e.g. from a ``--config`` file and flags) replace the
    defaults; settings without a value or default appear commented out with an example.
    Loading the result with ``--config`` gives the same settings as the defaults plus
    ``values`` (plus the example images, catalog and out where none were given).
    """
    values = {key: value for key, value in (values or {}).items() if value is not None}
    about = descriptions()
    defaults = {field.name: field.default for field in dataclasses.fields(Settings) if field.name != "extra"}
    lines = [
        "# lensfinder run settings: run_survey.py --config THIS.yaml (or lensfinder run --config THIS.yaml)",
        "# Every key is also a flag (--threads-per-worker for threads_per_worker); flags given on the",
        "# command line win over this file, and this file over the defaults. Lines starting with '#'",
        "# are examples left out: remove the '# ' to use one. The resolved settings of a run are saved",
        "# as OUT/run.yaml.",
    ]
    for name, default in defaults.items():
        lines.append("")
        for paragraph in textwrap.wrap(about.get(name, name), width=92):
            lines.append(f"# {paragraph}")
        if name in values:
            lines.append(_value_text(name, values[name]))
        elif name in REQUIRED:
            lines.append(_value_text(name, EXAMPLES[name]))
        elif name in MODES or default is None:
            lines.append("# " + _value_text(name, EXAMPLES.get(name, default)))
        else:
            lines.append(_value_text(name, default))
    return "\n".join(lines) + "\n"
