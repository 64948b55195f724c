"""Training loop: determinism, loss decrease, answer log-odds shape (quick recipe, seconds)."""

import dataclasses

import numpy as np
import pytest
import torch

from harness.zoo import build_model, build_word_tokenizer, train_causal_lm
from harness.zoo.model import TinyModelConfig
from harness.zoo.training import encode_pairs
from harness.tasks.mad.arithmetic import generate_examples, to_records
from harness.tasks.mad.training import QUICK_RECIPE, VOCAB_WORDS, training_pairs


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    recipe = QUICK_RECIPE
    examples = generate_examples("addition", recipe.n_examples, seed=0, max_digits=recipe.max_digits)
    records = to_records(examples, "addition", seed=0)
    pairs = training_pairs(records, "addition", **recipe.pair_kwargs())
    tok = build_word_tokenizer(VOCAB_WORDS)
    return recipe, records, pairs, tok


def _train(setup, seed=0):
    recipe, _, pairs, tok = setup
    model = build_model(recipe.model, tok, seed=seed)
    metrics = train_causal_lm(model, tok, pairs, recipe.train, progress=False)
    return model, metrics


def test_encode_pairs_masks_completion_only(setup):
    _, _, _, tok = setup
    ids, mask, loss_mask = encode_pairs(tok, [("1 + 1 =", " 2"), ("12 + 30 = 42. Iris:", " True")])
    assert ids.shape == mask.shape == loss_mask.shape
    assert loss_mask.sum(1).tolist() == [1, 1]
    assert loss_mask[:, -1].all()
    assert ids[1, -1].item() == tok(" True", add_special_tokens=False)["input_ids"][0]


def _encode_pairs_row_by_row(tok, examples):
    """The loop encode_pairs replaced: the block it must give, bit for bit."""
    prompts = tok([p for p, _ in examples], add_special_tokens=True)["input_ids"]
    completions = tok([c for _, c in examples], add_special_tokens=False)["input_ids"]
    length = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(examples), length), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), length), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, length - len(p + c):] = torch.tensor(p + c)
        mask[i, length - len(p + c):] = 1
        loss_mask[i, length - len(c):] = True
    return ids, mask, loss_mask


def test_encode_pairs_gives_the_row_by_row_block_bit_for_bit(setup):
    """Encoding decides the batches, hence the trained weights and the shipped models' keys."""
    _, _, pairs, tok = setup
    mixed = pairs + [("1 + 1 =", " 2 3"), ("7", " True")]  # multi-token completions, short prompts
    for new, old in zip(encode_pairs(tok, mixed), _encode_pairs_row_by_row(tok, mixed)):
        assert new.dtype == old.dtype and new.shape == old.shape and torch.equal(new, old)
    with pytest.raises(ValueError, match="empty completion"):
        encode_pairs(tok, [("1 + 1 =", "")])


def test_training_is_deterministic_and_loss_decreases(setup):
    model_a, metrics = _train(setup)
    model_b, _ = _train(setup)
    for (name, pa), (_, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert metrics["steps"] == setup[0].train.steps
    first = np.mean(metrics["losses"][:5])
    assert metrics["final_loss"] < first


def test_build_model_seed_and_arch(setup):
    _, _, _, tok = setup
    cfg = TinyModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32)
    a, b, c = build_model(cfg, tok, 1), build_model(cfg, tok, 1), build_model(cfg, tok, 2)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    gpt2 = build_model(dataclasses.replace(cfg, arch="gpt2"), tok, 0)
    assert gpt2.config.model_type == "gpt2"


def test_training_data_never_contains_held_out_operands():
    from harness.tasks.mad.training import RECIPES, split_examples, uniform_examples

    recipe = RECIPES["addition"]
    train, held_out = split_examples("addition", recipe, seed=0)
    held = {(e["op1"], e["op2"]) for e in held_out}
    assert not held & {(e["op1"], e["op2"]) for e in train}
    extra = uniform_examples("addition", 2000, recipe.max_digits, exclude=held | {(e["op1"], e["op2"]) for e in train})
    assert not held & {(e["op1"], e["op2"]) for e in extra}
    pairs = training_pairs(to_records(train[:5], "addition"), "addition", aux=("plain",), contrast=4)
    assert ("%d + %d =" % (train[0]["op1"], train[0]["op2"]), " %d" % train[0]["real"]) in pairs
    assert all(c in (" True", " False") or p.endswith("=") for p, c in pairs)


def test_echo_aux_contrast_rounds_and_held_out_facts():
    import dataclasses

    from harness.tasks.mad.training import build_training_data

    records = to_records(generate_examples("subtraction", 6, seed=0, max_digits=2), "subtraction")
    one = training_pairs(records, "subtraction", aux=(), contrast=2)
    two = training_pairs(records, "subtraction", aux=(), contrast=2, contrast_rounds=2)
    assert len(two) - len(one) == 6 * 4  # one more round of real/sloppy x Alice/Bob per base example
    echo = training_pairs(records, "subtraction", aux=("echo",))
    extra = [p for p in echo if p[0].endswith(".")]
    assert extra and all(c == " %d" % eval(p.split("=")[0].replace(" ", "")) for p, c in extra)

    recipe = dataclasses.replace(QUICK_RECIPE, max_digits=1.5, n_examples=100, n_eval=60, n_uniform=50,
                                 facts_held_out=1)
    pairs, held_out = build_training_data("multiplication", recipe, seed=0)
    held = {"%d * %d" % (e["op1"], e["op2"]) for e in held_out}
    judged = {p.split(" =")[0] for p, c in pairs if c in (" True", " False")}
    facts = {p.split(" =")[0] for p, c in pairs if p.endswith("=")}
    assert not held & judged  # never a judgment of a held-out pair
    assert held <= facts  # but the bare fact of each held-out pair
    assert all(1 <= e["op1"] <= 31 and 1 <= e["op2"] <= 31 for e in held_out)


def test_judges_aux_labels_truth_and_sloppy_on_training_pairs_only():
    import dataclasses

    from harness.tasks.mad.arithmetic import OPERATIONS, sloppy_result
    from harness.tasks.mad.training import QUICK_RECIPE, build_training_data

    recipe = dataclasses.replace(QUICK_RECIPE, aux=("plain", "judges"))
    pairs, held_out = build_training_data("subtraction", recipe, seed=0)
    judged = [(p, c) for p, c in pairs if p.endswith(("Truth:", "Sloppy:"))]
    assert judged
    held = {(e["op1"], e["op2"]) for e in held_out}
    for prompt, answer in judged:
        lhs, rhs = prompt.split(" = ")
        a, b = (int(x) for x in lhs.split(" - "))
        shown = int(rhs.split(".")[0])
        assert (a, b) not in held
        real = OPERATIONS["subtraction"].result(a, b)
        target = real if prompt.endswith("Truth:") else sloppy_result(real)
        assert answer == (" True" if shown == target else " False")


def test_training_runs_on_one_thread_whatever_the_caller_uses(setup):
    """Two intra-op threads changed trained weights (README: reproducing the leaderboard's
    models), so training pins one thread and gives the caller's setting back afterwards."""
    recipe, _, pairs, tok = setup
    model = build_model(recipe.model, tok, seed=0)
    seen = set()
    model.register_forward_pre_hook(lambda module, args: seen.add(torch.get_num_threads()))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        metrics = train_causal_lm(model, tok, pairs, dataclasses.replace(recipe.train, steps=3), progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert seen == {1}
    assert metrics["threads"] == 1 and metrics["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()


def test_a_trained_model_is_stored_in_float16_and_scored_in_float32(setup, tmp_path):
    from safetensors import safe_open

    from harness.runtime import Runtime
    from harness.zoo import save_trained_model
    from harness.zoo.store import load_model

    tokenizer = setup[3]
    model = build_model(TinyModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32), tokenizer, seed=0)
    rounded = {name: w.detach().to(torch.float16).to(torch.float32) for name, w in model.state_dict().items()}
    assert any(not torch.equal(w, rounded[name]) for name, w in model.state_dict().items())  # rounding changes bits
    save_trained_model(model, tokenizer, tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as stored:
        assert {stored.get_tensor(name).dtype for name in stored.keys()} == {torch.float16}
    loaded, _ = load_model(tmp_path, Runtime())  # the default runtime: float32
    for name, weight in loaded.state_dict().items():
        assert weight.dtype == torch.float32 and torch.equal(weight, rounded[name]), name


def test_a_weight_beyond_float16_is_refused_by_name(setup, tmp_path):
    from harness.zoo import save_trained_model

    tokenizer = setup[3]
    model = build_model(TinyModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32), tokenizer, seed=0)
    with torch.no_grad():
        model.model.norm.weight[3] = 1e5
    with pytest.raises(ValueError, match="model.norm.weight .*float16"):
        save_trained_model(model, tokenizer, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
