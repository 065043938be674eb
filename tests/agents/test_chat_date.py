"""Chat templates that read the clock (`strftime_now`, Llama 3.x and SmolLM3) render a pinned date.

transformers gives templates `strftime_now(fmt) = datetime.now().strftime(fmt)`, so a resume, replay or
retry on another day would see other prompt tokens. steprl renders them with `model.chat_date` instead.
The clock is faked by replacing `datetime` in transformers' chat-template module (where strftime_now
reads it).
"""

from __future__ import annotations

import datetime as dt
import pickle

import pytest
import transformers.utils.chat_template_utils as ctu

from steprl.agents.chat import make_turn_format
from steprl.agents.tokenizer import build_char_tokenizer

# Llama 3.1's date logic (date_string from strftime_now when not given) on Llama 3 headers.
LLAMA31 = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: ' + date_string + '\\n\\n' }}"
    "{%- for m in messages %}{%- if m.role == 'system' %}{{- m.content + '<|eot_id|>' }}{%- else %}"
    "{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# SmolLM3 style: strftime_now called unconditionally, here from inside a template macro, two formats.
SMOL = (
    "{%- macro header() -%}Knowledge Cutoff Date: June 2025\nToday Date: {{ strftime_now(\"%d %B %Y\") }}"
    " ({{ strftime_now('%A') }})\n{%- endmacro -%}"
    "{%- for m in messages -%}{%- if m.role == 'system' -%}<|sys|>{{ header() }}{{ m.content }}<|end|>\n"
    "{%- else -%}<|{{ m.role }}|>{{ m.content }}<|end|>\n{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
TEMPLATES = {
    "llama31": (LLAMA31, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "%d %b %Y"),
    "smollm3": (SMOL, ["<|sys|>", "<|user|>", "<|assistant|>", "<|end|>"], "%d %B %Y"),
}


def _tokenizer(name: str):
    template, specials, _ = TEMPLATES[name]
    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = template
    return tok


def _today_is(monkeypatch, day: dt.datetime) -> None:
    """Make transformers' strftime_now see `day` as now."""

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return day

    monkeypatch.setattr(ctu, "datetime", Clock)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_prompt_tokens_do_not_depend_on_today(monkeypatch, name):
    tok = _tokenizer(name)
    ids = []
    for today in (dt.datetime(2024, 9, 17, 9, 30), dt.datetime(2031, 12, 31, 23, 59)):
        _today_is(monkeypatch, today)
        assert today.strftime("%d %b %Y") in ctu._compile_jinja_template("{{ strftime_now('%d %b %Y') }}").render()
        fmt = make_turn_format(tok)
        ids.append((fmt.prompt_ids("sys", "q"), fmt.observation_ids("more", fmt.turn_ids("x"))))
        text = fmt.decode(ids[-1][0])
        assert today.strftime("%Y") not in text
    assert ids[0] == ids[1]
    pinned = dt.datetime(2026, 1, 1)  # the default model.chat_date
    assert "Today Date: " + pinned.strftime(TEMPLATES[name][2]) in text
    if name == "smollm3":
        assert f"({pinned.strftime('%A')})" in text


def test_configured_date_travels_with_the_tokenizer(monkeypatch, tmp_path):
    from steprl.agents.chat_date import chat_date_of, record_chat_date
    from steprl.agents.config import ModelConfig, TokenizerConfig
    from steprl.agents.policy import build_policy
    from steprl.agents.tokenizer import load_tokenizer

    _today_is(monkeypatch, dt.datetime(2030, 5, 6))
    tok = _tokenizer("llama31")
    tok.save_pretrained(str(tmp_path / "tok"))
    cfg = ModelConfig(layers=1, hidden=16, heads=2, kv_heads=2, intermediate=32, chat_date="2025-03-04")
    policy = build_policy(cfg, TokenizerConfig(path=str(tmp_path / "tok")), seed=0)
    ids = policy.turn_format.prompt_ids("sys", "q")
    assert "Today Date: 04 Mar 2025\n" in policy.turn_format.decode(ids)
    # a rollout worker gets the tokenizer pickled; a checkpoint saves it: both render the same date
    assert make_turn_format(pickle.loads(pickle.dumps(policy.tokenizer))).prompt_ids("sys", "q") == ids
    policy.tokenizer.save_pretrained(str(tmp_path / "ckpt"))
    assert chat_date_of(load_tokenizer(str(tmp_path / "ckpt"))) == "2025-03-04"
    assert make_turn_format(load_tokenizer(str(tmp_path / "ckpt"))).prompt_ids("sys", "q") == ids
    record_chat_date(tok, "2027-02-03")
    assert "Today Date: 03 Feb 2027\n" in make_turn_format(tok).decode(make_turn_format(tok).prompt_ids("s", "q"))


def test_templates_without_the_clock_render_as_before():
    from steprl.agents.chat_date import pin_chat_date

    template = TEMPLATES["llama31"][0].replace("strftime_now('%d %b %Y')", "'x'")
    assert pin_chat_date(template, "2025-03-04") == template


def test_bad_dates_and_unpinnable_templates_are_refused():
    from steprl.config import load_config
    from steprl.errors import ConfigError

    for bad in ("2026-13-01", "01/02/2026", "today"):
        with pytest.raises(ConfigError, match=r"model\.chat_date.*YYYY-MM-DD"):
            load_config("quickstart", [f"model.chat_date={bad}"])
    assert load_config("quickstart", ["model.chat_date=2024-02-29"]).model.chat_date == "2024-02-29"
    tok = build_char_tokenizer()
    tok.chat_template = "{% set f = '%Y' %}{{ strftime_now(f) }}{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(ValueError, match="strftime_now"):
        make_turn_format(tok)
