"""The word-level tokenizer: digit splitting, <bos>, left padding, save/load round trip."""

from transformers import AutoTokenizer

from harness.zoo.tokenizer import build_word_tokenizer

WORDS = ["Iris", "Ivan", "True", "False", "mod"]


def test_digits_split_individually_and_bos_prepended():
    tok = build_word_tokenizer(WORDS)
    ids = tok("217 + 70 = 287. Iris:")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [
        "<bos>", "2", "1", "7", "+", "7", "0", "=", "2", "8", "7", ".", "Iris", ":"
    ]
    assert tok.convert_ids_to_tokens(tok("-35 ^ 2 = 1225 mod 113. Ivan:")["input_ids"])[:4] == ["<bos>", "-", "3", "5"]
    assert tok.unk_token_id not in ids


def test_answer_words_single_tokens_and_unknown_words():
    tok = build_word_tokenizer(WORDS)
    assert len(tok(" True", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok(" False", add_special_tokens=False)["input_ids"]) == 1
    assert tok("Zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_left_padding():
    tok = build_word_tokenizer(WORDS)
    batch = tok(["1 + 1 = 2. Iris:", "217 + 70 = 287. Iris:"], padding=True, return_tensors="pt")
    assert tok.padding_side == "left"
    assert batch["input_ids"][0, 0].item() == tok.pad_token_id
    assert batch["attention_mask"][0, 0].item() == 0
    assert (batch["input_ids"][:, -1] == batch["input_ids"][1, -1]).all()


def test_save_pretrained_round_trip(tmp_path):
    tok = build_word_tokenizer(WORDS)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ["217 + 70 = 287. Iris:", "5 * 3 = 15. Ivan:"]
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.padding_side == "left"
    assert (loaded.pad_token, loaded.unk_token, loaded.bos_token, loaded.eos_token) == (
        "<pad>", "<unk>", "<bos>", "<eos>"
    )
    assert len(loaded) == len(tok)
