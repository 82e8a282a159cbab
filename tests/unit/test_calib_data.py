"""Tests for resq_export.calib.data and the packaged corpora (offline, no downloads)."""
from __future__ import annotations

import importlib.util
import json
import platform
import re
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_tokenizer

from resq_export.calib.data import (
    DataError,
    calibration_windows,
    default_calibration_path,
    default_eval_path,
    eval_windows,
    read_texts,
    tokenize_corpus,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


def split_topics(text: str) -> list[str]:
    """Split a packaged file into pydoc topics: each starts with a title underlined by '*'."""
    lines = text.split("\n")
    starts = [
        i
        for i in range(len(lines) - 1)
        if lines[i]
        and (i == 0 or lines[i - 1] == "")
        and len(lines[i + 1]) == len(lines[i])
        and set(lines[i + 1]) == {"*"}
    ]
    assert starts and starts[0] == 0, "file must start with a topic title"
    bounds = starts + [len(lines)]
    return ["\n".join(lines[a:b]).strip("\n") for a, b in zip(bounds, bounds[1:])]


def long_paragraphs(text: str, min_chars: int = 30) -> set[str]:
    out = set()
    for block in re.split(r"\n\s*\n", text):
        norm = " ".join(block.split())
        if len(norm) >= min_chars:
            out.add(norm)
    return out


def load_make_corpus():
    path = REPO_ROOT / "tools" / "make_corpus.py"
    spec = importlib.util.spec_from_file_location("_make_corpus_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- packaged corpora


def test_packaged_files_exist_and_are_nonempty():
    calib, evaluation = default_calibration_path(), default_eval_path()
    assert isinstance(calib, Path) and isinstance(evaluation, Path)
    assert calib.name == "calib_en.txt" and evaluation.name == "eval_en.txt"
    assert calib.parent == evaluation.parent
    assert (calib.parent / "README.md").is_file()
    calib_text = calib.read_text(encoding="utf-8")
    eval_text = evaluation.read_text(encoding="utf-8")
    assert len(calib_text) > 100_000 and len(eval_text) > 50_000
    assert len(calib_text) > len(eval_text)
    assert read_texts([calib]) == [calib_text]


def test_packaged_files_share_no_topic_or_paragraph():
    calib_text = default_calibration_path().read_text(encoding="utf-8")
    eval_text = default_eval_path().read_text(encoding="utf-8")
    calib_topics, eval_topics = split_topics(calib_text), split_topics(eval_text)
    assert len(calib_topics) >= 20 and len(eval_topics) >= 10

    calib_lines = set(calib_text.split("\n"))
    for doc in eval_topics:
        first_line = doc.split("\n", 1)[0]
        assert first_line not in calib_lines, f"eval topic {first_line!r} also in calibration"
    assert not {d.split("\n", 1)[0] for d in calib_topics} & {d.split("\n", 1)[0] for d in eval_topics}
    assert not long_paragraphs(calib_text) & long_paragraphs(eval_text)


def test_packaged_files_are_clean_text():
    for path in (default_calibration_path(), default_eval_path()):
        text = path.read_text(encoding="utf-8")
        assert "\r" not in text
        assert not re.search(r"[ \t]+\n", text), f"trailing whitespace in {path.name}"
        assert "\n\n\n" not in text
        assert text.endswith("\n") and not text.endswith("\n\n")


def test_packaged_files_match_generator():
    readme = (default_calibration_path().parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Generated with CPython (\d+\.\d+\.\d+)", readme)
    assert match, "README must record the CPython version"
    if platform.python_implementation() != "CPython" or platform.python_version() != match[1]:
        pytest.skip(f"files were generated with CPython {match[1]}, running {platform.python_version()}")
    import pydoc_data.topics

    make_corpus = load_make_corpus()
    split = make_corpus.split_topics(pydoc_data.topics.topics)
    assert not set(split.calib) & set(split.eval)
    assert split.render(split.calib) == default_calibration_path().read_text(encoding="utf-8")
    assert split.render(split.eval) == default_eval_path().read_text(encoding="utf-8")
    assert f"| {len(split.calib)} |" in readme and f"| {len(split.eval)} |" in readme


# ---------------------------------------------------------------- read_texts


def test_read_texts_plain_and_jsonl(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("First document.\n\nStill the first one.\n", encoding="utf-8")
    md = tmp_path / "b.md"
    md.write_text("Zweites Dokument – äöü.", encoding="utf-8")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        json.dumps({"text": "line one", "id": 1}) + "\n"
        "\n"
        + json.dumps({"text": "line two\nhas a newline"}) + "\n"
        + json.dumps({"text": "sep\u2028inside"}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    docs = read_texts([txt, str(md), jsonl])
    assert docs == [
        "First document.\n\nStill the first one.\n",
        "Zweites Dokument – äöü.",
        "line one",
        "line two\nhas a newline",
        "sep\u2028inside",
    ]


def test_read_texts_strips_bom_and_handles_crlf_jsonl(tmp_path):
    txt = tmp_path / "bom.txt"
    txt.write_bytes("\ufeffhello".encode("utf-8"))
    jsonl = tmp_path / "crlf.jsonl"
    jsonl.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    assert read_texts([txt, jsonl]) == ["hello", "a", "b"]


def _assert_data_error(paths, *fragments):
    with pytest.raises(DataError) as info:
        read_texts(paths)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


def test_read_texts_missing_file(tmp_path):
    _assert_data_error([tmp_path / "nope.txt"], "nope.txt", "not found")


def test_read_texts_directory(tmp_path):
    d = tmp_path / "corpus_dir"
    d.mkdir()
    _assert_data_error([d], "corpus_dir", "directory")


def test_read_texts_not_utf8(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    _assert_data_error([bad], "latin1.txt", "UTF-8")


def test_read_texts_invalid_json_line(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    _assert_data_error([bad], "broken.jsonl", "line 2", "invalid JSON")


@pytest.mark.parametrize(
    "line",
    ['{"content": "x"}', '{"text": 5}', '{"text": null}', '["text"]', '"just a string"'],
)
def test_read_texts_jsonl_without_string_text(tmp_path, line):
    bad = tmp_path / "fields.jsonl"
    bad.write_text('{"text": "ok"}\n\n' + line + "\n", encoding="utf-8")
    _assert_data_error([bad], "fields.jsonl", "line 3", '"text"')


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.txt", ""),
        ("blank.txt", "  \n\n\t\n"),
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
        ("emptytexts.jsonl", '{"text": ""}\n{"text": "  "}\n'),
    ],
)
def test_read_texts_no_text(tmp_path, name, content):
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    _assert_data_error([f], name, "no text")


def test_read_texts_empty_list():
    with pytest.raises(DataError, match="no text files"):
        read_texts([])


# ---------------------------------------------------------------- tokenize_corpus

TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Quantisation maps weights to a few bits.\n\n"
    "Rotations spread outliers; low-rank terms keep the important directions.\n"
) * 20


def test_tokenize_corpus_with_real_tokenizer():
    tokenizer = tiny_tokenizer(TRAINING_TEXT)
    texts = ["The quick brown fox.", "Weights to a few bits.\nRotations!"]
    tokens = tokenize_corpus(tokenizer, texts)
    assert tokens.dtype == torch.long and tokens.dim() == 1 and tokens.numel() > 0
    assert tokenizer.bos_token_id not in tokens.tolist()  # add_special_tokens=False
    assert tokens.tolist() == tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    # Byte-level BPE is lossless, so decoding shows how documents were joined.
    assert tokenizer.decode(tokens.tolist()) == "The quick brown fox.\n\nWeights to a few bits.\nRotations!"


def test_tokenize_corpus_no_tokens():
    tokenizer = tiny_tokenizer(TRAINING_TEXT)
    with pytest.raises(DataError, match="no tokens"):
        tokenize_corpus(tokenizer, [""])
    with pytest.raises(DataError, match="no tokens"):
        tokenize_corpus(tokenizer, [])


def test_packaged_corpus_end_to_end():
    tokenizer = tiny_tokenizer(TRAINING_TEXT, bos=False)
    tokens = tokenize_corpus(tokenizer, read_texts([default_eval_path()]))
    assert tokens.numel() > 10_000
    windows = calibration_windows(tokens, nsamples=8, seqlen=128, seed=0)
    assert windows.shape == (8, 128)
    assert eval_windows(tokens, seqlen=128).shape == (tokens.numel() // 128, 128)


# ---------------------------------------------------------------- calibration_windows


def _window_starts(tokens: torch.Tensor, windows: torch.Tensor, seqlen: int) -> list[int]:
    """Locate each window in the corpus, asserting it is an aligned slice of it."""
    starts = []
    for w in windows:
        (pos,) = (tokens == w[0]).nonzero(as_tuple=True)
        assert pos.numel() == 1
        start = int(pos)
        assert start % seqlen == 0
        assert torch.equal(w, tokens[start : start + seqlen])
        starts.append(start)
    return starts


def test_calibration_windows_deterministic_and_non_overlapping():
    g = torch.Generator().manual_seed(123)
    tokens = torch.randperm(10_000, generator=g)  # distinct ids make windows locatable
    seqlen, nsamples = 64, 20
    rng_before = torch.get_rng_state()
    a = calibration_windows(tokens, nsamples, seqlen, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before), "global RNG must not be used"
    b = calibration_windows(tokens, nsamples, seqlen, seed=0)
    c = calibration_windows(tokens, nsamples, seqlen, seed=1)
    assert a.shape == (nsamples, seqlen) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)

    for windows in (a, c):
        starts = _window_starts(tokens, windows, seqlen)
        assert starts == sorted(starts)
        assert len(set(starts)) == nsamples  # aligned + distinct => non-overlapping
        assert max(starts) + seqlen <= tokens.numel()


def test_calibration_windows_exact_fit_uses_every_slot():
    tokens = torch.arange(4 * 16, dtype=torch.int32)
    windows = calibration_windows(tokens, nsamples=4, seqlen=16, seed=7)
    assert windows.dtype == torch.long
    assert torch.equal(windows, torch.arange(64).reshape(4, 16))


def test_calibration_windows_too_few_tokens():
    tokens = torch.arange(1000)
    with pytest.raises(DataError) as info:
        calibration_windows(tokens, nsamples=8, seqlen=128, seed=0)
    message = str(info.value)
    assert "1000" in message and "1024" in message
    assert "--nsamples" in message and "--seqlen" in message and "--calib-data" in message


@pytest.mark.parametrize(("nsamples", "seqlen"), [(0, 16), (-1, 16), (4, 1), (4, 0)])
def test_calibration_windows_validates_arguments(nsamples, seqlen):
    with pytest.raises(DataError):
        calibration_windows(torch.arange(1000), nsamples, seqlen, seed=0)


def test_windows_reject_non_1d_tokens():
    with pytest.raises(DataError, match="1-D"):
        calibration_windows(torch.zeros(2, 100, dtype=torch.long), 1, 16, seed=0)
    with pytest.raises(DataError, match="1-D"):
        eval_windows(torch.zeros(2, 100, dtype=torch.long), 16)


# ---------------------------------------------------------------- eval_windows


def test_eval_windows_drops_tail():
    tokens = torch.arange(105)
    windows = eval_windows(tokens, seqlen=10)
    assert windows.shape == (10, 10) and windows.dtype == torch.long
    assert torch.equal(windows, torch.arange(100).reshape(10, 10))


def test_eval_windows_max_tokens():
    tokens = torch.arange(105)
    assert torch.equal(eval_windows(tokens, 10, max_tokens=35), torch.arange(30).reshape(3, 10))
    assert eval_windows(tokens, 10, max_tokens=40).shape == (4, 10)
    assert eval_windows(tokens, 10, max_tokens=10_000).shape == (10, 10)


def test_eval_windows_zero_windows():
    with pytest.raises(DataError, match="5 tokens"):
        eval_windows(torch.arange(5), seqlen=10)
    with pytest.raises(DataError, match="max_tokens"):
        eval_windows(torch.arange(105), seqlen=10, max_tokens=9)
    with pytest.raises(DataError):
        eval_windows(torch.arange(105), seqlen=1)


@pytest.mark.parametrize("name", ["calib_austen_en.txt", "calib_jargon_en.txt"])
def test_other_domain_calibration_files_are_clean_and_disjoint_from_eval(name):
    path = default_calibration_path().parent / name
    text = path.read_text(encoding="utf-8")
    assert len(text) > 200_000 and "\r" not in text and "\n\n\n" not in text
    assert not re.search(r"[ \t]+\n", text) and text.endswith("\n") and not text.endswith("\n\n")
    for other in (default_eval_path(), default_calibration_path()):
        assert not long_paragraphs(text) & long_paragraphs(other.read_text(encoding="utf-8"))
    assert name in (path.parent / "README.md").read_text(encoding="utf-8")
