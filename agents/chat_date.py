"""The date chat templates see: pinned (`model.chat_date`), so a prompt depends on the config, not on the day.

transformers gives chat templates `strftime_now(fmt)`, which is `datetime.now().strftime(fmt)`; Llama 3.x
and SmolLM3 templates put today's date into every prompt with it, so a resume, replay or retry on another
day would render other tokens. steprl renders such a template with a macro `strftime_now` defined in
front of it that returns the pinned date formatted with each format the template uses (a template-level
macro shadows the environment's global). The formats are read from the template's syntax tree: a call
whose format is not a string literal cannot be pinned and is refused. A template that never calls
`strftime_now` is rendered unchanged, as are templates without a clock.

The date travels with the tokenizer: `record_chat_date` stores it in the tokenizer's `init_kwargs`, which
pickling carries to rollout workers and `save_pretrained` writes to tokenizer_config.json, so every
renderer built from that tokenizer (in a worker, from a checkpoint) renders the same date.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from jinja2 import nodes

if TYPE_CHECKING:  # agents/config.py imports this module: config loading needs no transformers
    from transformers import PreTrainedTokenizerBase

DEFAULT_CHAT_DATE = "2026-01-01"
"""The date templates see when the config names none (fixed: never the day the run happens to run)."""
_KEY = "chat_date"


def chat_date_problem(text: object) -> str | None:
    """Why `text` is not a chat date (a `YYYY-MM-DD` calendar date), or None when it is one."""
    try:
        if isinstance(text, str) and len(text) == 10:
            dt.date.fromisoformat(text)
            return None
    except ValueError:
        pass
    return f"expected a calendar date YYYY-MM-DD (e.g. {DEFAULT_CHAT_DATE!r}), got {text!r}"


def record_chat_date(tokenizer: PreTrainedTokenizerBase, date: str) -> None:
    """Pin `date` for every renderer built from `tokenizer` (stored in its init_kwargs, see the module docstring)."""
    problem = chat_date_problem(date)
    if problem:
        raise ValueError(f"chat date: {problem}")
    tokenizer.init_kwargs[_KEY] = date


def chat_date_of(tokenizer: PreTrainedTokenizerBase) -> str:
    """The date recorded on `tokenizer` (`record_chat_date`), or DEFAULT_CHAT_DATE."""
    date = getattr(tokenizer, "init_kwargs", {}).get(_KEY, DEFAULT_CHAT_DATE)
    problem = chat_date_problem(date)
    if problem:
        raise ValueError(f"tokenizer's recorded chat_date: {problem}")
    return date


def strftime_formats(template: str) -> list[str]:
    """The formats `template` passes to `strftime_now`, in order of first use; ValueError for a non-literal one."""
    from transformers.utils.chat_template_utils import _compile_jinja_template  # the env templates render in

    tree = _compile_jinja_template(template).environment.parse(template)
    formats: list[str] = []
    called: set[int] = set()
    for call in tree.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "strftime_now"):
            continue
        called.add(id(call.node))
        args = call.args
        if call.kwargs or call.dyn_args or call.dyn_kwargs or len(args) != 1 or not (
                isinstance(args[0], nodes.Const) and isinstance(args[0].value, str)):
            raise ValueError("chat template calls strftime_now with a format that is not one string literal "
                             f"(line {call.lineno}); steprl pins the date (model.chat_date) and cannot render it")
        if args[0].value not in formats:
            formats.append(args[0].value)
    tested = {id(t.node) for t in tree.find_all(nodes.Test) if t.name == "defined"}
    for name in tree.find_all(nodes.Name):
        if name.name == "strftime_now" and id(name) not in called | tested:
            raise ValueError(f"chat template uses strftime_now other than by calling it (line {name.lineno}); "
                             "steprl pins the date (model.chat_date) and cannot render it")
    return formats


def pin_chat_date(template: str, date: str) -> str:
    """`template` with `strftime_now` returning `date` (midnight) in each of its formats; unchanged without any.

    The macro is followed by a newline because transformers renders with trim_blocks (the first
    newline after a block tag is dropped): the template's own first character is kept.
    """
    formats = strftime_formats(template)
    if not formats:
        return template
    day = dt.datetime.combine(dt.date.fromisoformat(date), dt.time())
    table = json.dumps({f: day.strftime(f) for f in formats})  # a JSON object is a Jinja dict literal
    return "{% macro strftime_now(format) %}{{ " + table + "[format] }}{% endmacro %}\n" + template
