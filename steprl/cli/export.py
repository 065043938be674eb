"""`steprl export POLICY [--merge] [--out DIR]`: a trained policy as a directory transformers or peft loads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steprl.console import emit
from steprl.errors import SteprlError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    p = sub.add_parser("export", help="write a policy as a plain Hugging Face directory or a peft adapter",
                       description="POLICY is a run directory (its newest good checkpoint), a checkpoint or a "
                       "policy directory. A LoRA policy is written as a peft adapter directory (load it with "
                       "peft.PeftModel.from_pretrained onto the base its adapter_config.json names); with --merge, "
                       "or for a fully fine-tuned policy, as one save_pretrained directory with the weights merged "
                       "(AutoModelForCausalLM.from_pretrained loads it). The tokenizer is written beside either.")
    p.add_argument("policy", help="run directory, checkpoint directory or policy directory")
    p.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the weights (plain directory)")
    p.add_argument("--out", help="directory to create (default: RUN/export, or POLICY-export beside a checkpoint)")
    p.set_defaults(run=run)


def default_out(policy: Path, merge: bool) -> Path:
    """RUN/export[-merged] for a run directory, else POLICY-export[-merged] beside it."""
    name = "export-merged" if merge else "export"
    if (policy / "checkpoints").is_dir():
        return policy / name
    return policy.parent / f"{policy.name}-{name}"


def run(args: argparse.Namespace) -> int:
    """Check the arguments and the destination, load the policy, write it."""
    from steprl.run.files.checkpoint import resolve_policy_dir

    src = resolve_policy_dir(args.policy)
    out = Path(args.out) if args.out else default_out(Path(args.policy), args.merge)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SteprlError(f"--out {out}: already exists and is not an empty directory; name a new one")
    from steprl.agents.lora import is_lora, merged_copy, plain_base_model, save_adapter
    from steprl.agents.model_source import resolve_model_dir
    from steprl.agents.policy import load_policy

    policy = load_policy(src)
    out.mkdir(parents=True, exist_ok=True)
    if not is_lora(policy.model) or args.merge:
        merged_copy(policy.model).save_pretrained(str(out))
        policy.tokenizer.save_pretrained(str(out))
        emit(f"export: {out} (plain transformers directory: AutoModelForCausalLM.from_pretrained({str(out)!r}))")
        return 0
    base = policy.base
    if base is not None and base.path is not None:
        base_dir = resolve_model_dir(base.path).resolve()  # a GGUF source: its dequantized directory
    else:  # built from a config or cut from a teacher: nothing on disk to point at, so it goes beside the adapter
        base_dir = (out / "base").resolve()
        plain_base_model(policy.model).save_pretrained(str(base_dir))
        policy.tokenizer.save_pretrained(str(base_dir))
    save_adapter(policy.model, out)
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base_dir)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    policy.tokenizer.save_pretrained(str(out))
    emit(f"export: {out} (peft adapter on the base {base_dir}: PeftModel.from_pretrained("
         f"AutoModelForCausalLM.from_pretrained({str(base_dir)!r}), {str(out)!r}))")
    return 0
