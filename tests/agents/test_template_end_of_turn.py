"""The generic template renderer ends a turn with the template's own end-of-turn token, not with eos.

Gemma closes a turn with `<end_of_turn>` and Phi-3 with `<|end|>` while their eos is another token;
the end-of-turn token is read from the template (what closes the assistant turn of a rendered
conversation), so it can be sampled (a stop id, never banned) and demonstrations train it.
The tokenizers are steprl's character tokenizer plus the family's control tokens (no hub).
"""

from __future__ import annotations

import pytest

from steprl.agents.chat import ChatTemplateTurnFormat, make_turn_format
from steprl.agents.tokenizer import build_char_tokenizer, encode_text

# Gemma 3 style: the system prompt goes into the first user turn, assistant is "model", roles must alternate.
GEMMA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set first = messages[0]['content'] + '\n\n' -%}"
    "{%- set msgs = messages[1:] -%}{%- else -%}{%- set first = '' -%}{%- set msgs = messages -%}{%- endif -%}"
    "{%- for m in msgs -%}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
# Phi-3 style: `<|role|>\n...<|end|>\n`, eos only after a conversation without a generation prompt.
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
FAMILIES = {
    "gemma": (GEMMA, ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    "phi3": (PHI3, ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|end|>"),
}
TURNS = ["<call>calc 1+1</call>", "<answer>2</answer>"]
OBS = ["<result>2</result>"]


def _tokenizer(family: str):
    """The char tokenizer (eos `<eos>`) with the family's control tokens and chat template."""
    template, specials, _ = FAMILIES[family]
    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_end_of_turn_comes_from_the_template(family):
    tok = _tokenizer(family)
    fmt = make_turn_format(tok)
    assert type(fmt) is ChatTemplateTurnFormat
    eot = tok.convert_tokens_to_ids(FAMILIES[family][2])
    assert tok.eos_token == "<eos>" and tok.eos_token_id != eot
    assert fmt.eot_ids == [eot]
    assert fmt.stop_token_ids[0] == eot and eot not in fmt.banned_ids
    assert tok.eos_token_id in fmt.stop_token_ids  # eos still ends a turn when a model emits it
    assert tok.bos_token_id in fmt.banned_ids and tok.pad_token_id in fmt.banned_ids


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_demonstration_turns_end_with_the_end_of_turn_token(family):
    tok = _tokenizer(family)
    fmt = make_turn_format(tok)
    eot = tok.convert_tokens_to_ids(FAMILIES[family][2])
    ids, mask = fmt.encode_demo("sys", "q", TURNS, OBS)
    # token for token the template's own rendering of the conversation, then the last turn and its end-of-turn
    # (neither template has a tool role: the tool result "2" goes in a user message)
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": TURNS[0]}, {"role": "user", "content": "2"}]
    ref = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    assert ids[: len(ref)] == ref and ids[len(ref):] == encode_text(tok, TURNS[1]) + [eot]
    assert tok.eos_token_id not in ids  # no `<eos>` + markup
    spans, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            spans, cur = spans + [cur], []
    spans += [cur] if cur else []
    assert [s[-1] for s in spans] == [eot, eot]  # each agent turn ends with end-of-turn, trained (mask 1)
    assert all(eot not in s[:-1] for s in spans)
    # a turn the model ended itself is not closed twice; one cut by a stop string gets it appended (mask 0)
    assert fmt.observation_ids(OBS[0], fmt.turn_ids("x")) == fmt.observation_ids(OBS[0], fmt.turn_ids("x")[:-1])[1:]
    assert fmt.observation_ids(OBS[0], fmt.turn_ids("x")[:-1])[0] == eot
