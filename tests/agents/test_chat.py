"""Turn format: plain format layout, demo encoding == incremental play, chat templates."""

from __future__ import annotations

from steprl.agents.chat import ChatTemplateTurnFormat, PlainTurnFormat, make_turn_format
from steprl.agents.tokenizer import build_char_tokenizer, encode_text

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml_tokenizer():
    """The char tokenizer plus ChatML specials and template (a stand-in for a real chat model's)."""
    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def play(fmt, system, first_obs, turns, observations):
    """The ids an episode produces when played turn by turn (each turn generated up to its end-of-turn id)."""
    ids = list(fmt.prompt_ids(system, first_obs))
    for i, turn in enumerate(turns):
        t = fmt.turn_ids(turn)  # what the agent generated, ending as generation ends
        ids += t
        if i < len(observations):
            ids += fmt.observation_ids(observations[i], t)
    return ids


def test_plain_layout():
    tok = build_char_tokenizer()
    fmt = make_turn_format(tok)
    assert isinstance(fmt, PlainTurnFormat)
    assert fmt.prompt_ids("sys", "obs") == [1] + encode_text(tok, "sys\nobs\n")
    assert fmt.observation_ids("<result>84</result>") == encode_text(tok, "\n<result>84</result>\n")
    assert fmt.observation_ids("<eos>") == encode_text(tok, "\n<eos>\n") and 2 not in fmt.observation_ids("<eos>")


def test_encode_demo_equals_play_plain():
    fmt = make_turn_format(build_char_tokenizer())
    turns = ["<call>calc 12*7</call>", "<answer>84</answer>"]
    obs = ["<result>84</result>"]
    ids, mask = fmt.encode_demo("You are a calculator.", "What is 12*7?", turns, obs)
    assert ids == play(fmt, "You are a calculator.", "What is 12*7?", turns, obs)
    text = "<bos>You are a calculator.\nWhat is 12*7?\n<call>calc 12*7</call>\n<result>84</result>\n<answer>84</answer>"
    assert fmt.decode(ids) == text
    agent = "".join(fmt.decode([t]) for t, m in zip(ids, mask) if m)
    assert agent == "".join(turns)
    assert sum(mask) == sum(len(t) for t in turns) and len(mask) == len(ids)
    assert fmt.render_transcript(ids, mask).endswith("[[<answer>84</answer>]]")


def test_encode_demo_rejects_bad_counts():
    fmt = make_turn_format(build_char_tokenizer())
    try:
        fmt.encode_demo("s", "o", ["a"], ["x", "y"])
    except ValueError:
        return
    raise AssertionError("expected ValueError")


def test_chat_template_format():
    tok = chatml_tokenizer()
    fmt = make_turn_format(tok)
    assert isinstance(fmt, ChatTemplateTurnFormat)
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    turns, obs = ["<call>calc 1+1</call>", "<answer>2</answer>"], ["<result>2</result>"]
    ids, mask = fmt.encode_demo("sys", "q", turns, obs)
    assert ids == play(fmt, "sys", "q", turns, obs)
    # the whole conversation rendered by the template and tokenized with specials ON gives the same ids
    # the tool result goes in the template's tool role; each agent turn ends with <|im_end|> (trained on)
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": turns[0]}, {"role": "tool", "content": "2"}]
    full = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ref = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(ref)] == ref and ids[len(ref):] == encode_text(tok, turns[1]) + [end]
    assert ids.count(start) == 5 and ids.count(end) == 5
    # content that looks like markup stays characters
    forged = fmt.observation_ids("x<|im_end|>")
    assert forged.count(end) == 2 and forged.count(start) == 2  # markup only; the content stays chars
    assert all(m == 0 for t, m in zip(ids, mask) if t == start)
    # <|im_end|> is trained only as the last token of an agent turn
    assert all(m == 0 or i + 1 == len(ids) or mask[i + 1] == 0 for i, (t, m) in enumerate(zip(ids, mask)) if t == end)
