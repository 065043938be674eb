"""Renderers on a real byte-level BPE chat tokenizer (the Qwen2-style directory of conftest.py)."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

from steprl.agents.chat import ChatMLRenderer, Llama3Renderer, make_turn_format
from steprl.agents.render_chatml import parse_hermes_call
from steprl.agents.render_llama3 import parse_llama3_call
from steprl.envs.tools import get_tool
from steprl.rollout.backends.hf import GenerationBatch, stop_string_ends_in_last_token
from steprl.rollout.sampler import SamplingParams

SYSTEM, QUESTION = "Compute exactly.", "What is 12*7?"


def _fmt(qwen_dir):
    tok = AutoTokenizer.from_pretrained(qwen_dir)
    return tok, make_turn_format(tok)


def test_first_prompt_is_the_templates_own_rendering_with_tools(qwen_dir):
    tok, fmt = _fmt(qwen_dir)
    assert isinstance(fmt, ChatMLRenderer)
    spec = get_tool("calc").spec()
    ids = fmt.prompt_ids(SYSTEM, QUESTION, [spec])
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    ref = tok.apply_chat_template(msgs, tools=[{"type": "function", "function": spec}], tokenize=False,
                                  add_generation_prompt=True)
    assert fmt.decode(ids) == ref and '"name": "calc"' in ref


def test_tool_results_use_the_tool_role_and_turns_close_once(qwen_dir):
    tok, fmt = _fmt(qwen_dir)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    after_stop_string = fmt.observation_ids("<tool_response>84</tool_response>", fmt.turn_ids("x")[:-1])
    after_eot = fmt.observation_ids("<tool_response>84</tool_response>", fmt.turn_ids("x"))
    assert after_stop_string == [end] + after_eot
    assert fmt.decode(after_eot) == "\n<|im_start|>user\n<tool_response>\n84\n</tool_response><|im_end|>\n" \
                                    "<|im_start|>assistant\n"
    assert fmt.decode(fmt.observation_ids("no call", [end])).startswith("\n<|im_start|>user\nno call<|im_end|>")


def test_end_of_turn_and_bans(qwen_dir):
    tok, fmt = _fmt(qwen_dir)
    start, end, pad = (tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert fmt.stop_token_ids == (end,)
    assert set(fmt.banned_ids) == {start, pad}


def test_stop_string_ending_inside_a_token_ends_the_turn(qwen_dir):
    tok, fmt = _fmt(qwen_dir)
    ids = tok("<answer>84</answer>\n", add_special_tokens=False)["input_ids"]
    assert fmt.decode(ids[-1:]) == ">\n"  # Qwen2's split keeps the newline with the punctuation
    assert not fmt.decode(ids).endswith("</answer>")
    assert stop_string_ends_in_last_token(ids, ["</answer>"], fmt.decode)
    assert not stop_string_ends_in_last_token(ids[:-1], ["</answer>"], fmt.decode)


def test_generated_turns_never_hold_banned_or_inner_end_of_turn_tokens(qwen_dir):
    tok, fmt = _fmt(qwen_dir)
    model = Qwen2ForCausalLM.from_pretrained(qwen_dir).eval()
    with torch.no_grad():  # make the end-of-turn and the banned tokens likely, so the rules are exercised
        model.lm_head.bias = None
        model.lm_head.weight[list(fmt.banned_ids)] *= 0.0
        model.lm_head.weight[list(fmt.banned_ids)] += 5.0 * model.lm_head.weight.abs().max()
    prompt = fmt.prompt_ids(SYSTEM, QUESTION, [get_tool("calc").spec()])
    params = SamplingParams(banned=fmt.banned_ids, stop_token_ids=fmt.stop_token_ids)
    gen = GenerationBatch(model, [prompt] * 8, list(range(8)), params, tok.pad_token_id)
    res = gen.generate_turn([True] * 8, [0] * 8, [40] * 8, [("</answer>",)] * 8, fmt.decode)
    for r in res:
        assert not set(r.tokens) & set(fmt.banned_ids)
        assert all(t not in fmt.stop_token_ids for t in r.tokens[:-1])
        assert r.stop_reason == "length" or r.tokens[-1] in fmt.stop_token_ids or "</answer>" in fmt.decode(r.tokens)


def test_tool_call_parsers():
    assert parse_hermes_call('x<tool_call>\n{"name": "calc", "arguments": {"expression": "1+1"}}\n</tool_call>') == \
        {"name": "calc", "arguments": {"expression": "1+1"}}
    assert parse_hermes_call("<tool_call>not json</tool_call>") is None
    assert parse_llama3_call('<|python_tag|>{"name": "calc", "parameters": {"expression": "2"}}<|eom_id|>') == \
        {"name": "calc", "arguments": {"expression": "2"}}
    assert parse_llama3_call("hello") is None


LLAMA3 = (
    "{{- bos_token }}{%- if tools %}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- for t in tools %}{{- t | tojson }}{{- '\\n' }}{%- endfor %}{{- '<|eot_id|>' }}{%- endif %}"
    "{%- for m in messages %}{%- set role = 'ipython' if m.role == 'tool' else m.role %}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + m.content + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def test_llama3_family_is_chosen_and_renders_ipython_results():
    from steprl.agents.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = LLAMA3
    fmt = make_turn_format(tok)
    assert isinstance(fmt, Llama3Renderer)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert eot in fmt.stop_token_ids and tok.bos_token_id in fmt.banned_ids
    obs = fmt.decode(fmt.observation_ids("<result>84</result>", fmt.turn_ids("x")))
    assert obs == ("<|start_header_id|>ipython<|end_header_id|>\n\n84<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n")


SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's ChatML template: it takes `tools` and never renders them
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_a_template_that_drops_tools_gets_the_envs_tool_descriptions(qwen_dir):
    """SmolLM2's template ignores `tools`: the prompt then carries the env's own system text (tool schema and
    call syntax), never a tool-less prompt the model could not call a tool from."""
    import gymnasium as gym

    import steprl.envs  # noqa: F401  (registers steprl/* ids)
    from steprl.rollout.episode import prompt_args

    tok = AutoTokenizer.from_pretrained(qwen_dir)
    assert make_turn_format(tok).template_tools  # Qwen2.5's template writes the specs itself
    tok.chat_template = SMOLLM2_TEMPLATE
    fmt = make_turn_format(tok)
    assert isinstance(fmt, ChatMLRenderer) and not fmt.template_tools
    env = gym.make("steprl/Calculator-v0", format="hermes")
    obs, info = env.reset(seed=3)
    system, tools = prompt_args(info, fmt)
    assert tools is None and system == info["system"]
    text = fmt.decode(fmt.prompt_ids(system, obs, tools))
    assert '{"name": "calc"' in text and "<tool_call>" in text and text.endswith("<|im_start|>assistant\n")
