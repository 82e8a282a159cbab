"""The text side of generation: the tokenizer an ONNX folder carries and a prompt's token ids."""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError, ConfigError


def load_tokenizer(onnx_dir: Path):
    from transformers import AutoTokenizer

    folder = Path(onnx_dir) / "tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        raise ArtifactError(f"{folder} is missing or incomplete: re-export the ONNX folder "
                            "(resq-export export --artifact ART --out ONNX_DIR)")
    return AutoTokenizer.from_pretrained(str(folder))


def prompt_ids(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat and not getattr(tokenizer, "chat_template", None):  # ignoring --chat would answer another question
        raise ConfigError("--chat: this model's tokenizer has no chat template (no \"chat_template\" in the ONNX "
                          "folder's tokenizer/tokenizer_config.json); leave out --chat to send the prompt as plain text")
    if chat:
        # rendered to text, then tokenised: apply_chat_template's tokenising return type differs across
        # transformers versions (a list, or a BatchEncoding)
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def stop_tokens(tokenizer) -> set[int]:
    """The ids that end a reply: the tokenizer's end-of-sequence token (a chat model's end-of-turn,
    e.g. SmolLM2's <|im_end|>, is its eos)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}
