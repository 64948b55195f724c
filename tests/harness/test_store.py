"""A model directory written by save_pretrained (not our zoo) loads through the same loader."""

import numpy as np
import torch

from harness.features.extractor import FeatureExtractor
from harness.zoo.store import ModelHandle, cached_model_dir, is_cached, load_model


def save_gpt2_with_bpe(path):
    """A GPT-2 model with a byte-level BPE tokenizer trained here, as a real HF checkpoint looks."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["1 + 2 = 3. Alice: True", "4 + 4 = 9. Bob: False"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")  # no pad token, like GPT-2
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_real_hf_directory_loads_and_extracts(tmp_path):
    save_gpt2_with_bpe(tmp_path)
    model, tokenizer = load_model(tmp_path)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert not model.training
    prompts = ["1 + 2 = 3. Alice:", "40 + 4 = 44. Bob:", "4 + 4 = 9. Alice:"]
    features = FeatureExtractor(ModelHandle(tmp_path), progress=False, use_cache=False).last_token(prompts)
    assert features.hidden.shape == (3, 3, 32)
    # left padding must not change the answer-position features
    alone = FeatureExtractor(ModelHandle(tmp_path), progress=False, use_cache=False).last_token(prompts[1:2])
    np.testing.assert_allclose(features.hidden[:, 1], alone.hidden[:, 0], atol=1e-4)


def test_cached_model_dir_builds_once(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        save_gpt2_with_bpe(tmp)

    key = {"what": "test-model", "n": 1}
    assert not is_cached(key)
    first = cached_model_dir(key, build)
    second = cached_model_dir(key, build)
    assert first == second and len(calls) == 1 and is_cached(key)
    assert (first / "key.json").exists() and load_model(first)[0] is not None


def test_configure_process_gives_numpy_and_scipy_blas_the_torch_thread_count(monkeypatch):
    """A record must not depend on the core count: a covariance summed on two BLAS threads
    differs in its last bits from one summed on one."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from harness.zoo.store import configure_process

    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the caller's limits afterwards
        monkeypatch.delenv("HARNESS_TORCH_THREADS", raising=False)
        configure_process("cpu")
        blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
        assert blas and all(info["num_threads"] == 1 for info in blas)
        monkeypatch.setenv("HARNESS_TORCH_THREADS", "2")
        configure_process("cpu")
        assert torch.get_num_threads() == 2
        assert all(info["num_threads"] == 2 for info in threadpool_info() if info["user_api"] == "blas")
    torch.set_num_threads(before)
