"""The hub interface on a checkpoint trained here: sentencepiece encode/decode, features, fill_mask,
predict, and padded batches that give each sentence its own result."""

import pytest
import torch

from linformer_plugin.hub_interface import LinformerHubInterface
from linformer_plugin.models import LinformerModel

SENTENCES = [
    "The module provides functions for working with files.",
    "Return a new list.",
    "This function raises a ValueError if the argument is not a valid string of digits.",
]


@pytest.fixture(scope="module")
def hub(trained_mlm, data_bin):
    save_dir, _ = trained_mlm
    return LinformerModel.from_pretrained(str(save_dir), "checkpoint_last.pt", data_bin).eval()


def test_from_pretrained_gives_the_hub_interface(hub):
    assert isinstance(hub, LinformerHubInterface)
    assert hub.model.encoder.sentence_encoder.layers[0].self_attn.compressed_dim == 16


def test_encode_decode_with_sentencepiece(hub):
    tokens = hub.encode(SENTENCES[0])
    d = hub.task.source_dictionary
    assert tokens[0] == d.bos() and tokens[-1] == d.eos()
    assert (tokens != d.unk()).float().mean() > 0.9  # the pieces are the dictionary's
    assert hub.decode(tokens) == SENTENCES[0]


def test_batch_of_mixed_lengths_matches_one_at_a_time(hub):
    batch = hub.encode_batch(SENTENCES)
    features = hub.extract_features(batch)
    for i, sentence in enumerate(SENTENCES):
        alone = hub.extract_features(hub.encode(sentence))[0]
        assert (features[i, : len(alone)] - alone).abs().max() < 1e-5


def test_predict_with_a_registered_head_batched_and_alone(hub):
    torch.manual_seed(0)
    hub.model.register_classification_head("probe", num_classes=3)
    hub.eval()
    batched = hub.predict("probe", hub.encode_batch(SENTENCES))
    assert batched.shape == (3, 3)
    torch.testing.assert_close(batched.exp().sum(-1), torch.ones(3))
    for i, sentence in enumerate(SENTENCES):
        torch.testing.assert_close(hub.predict("probe", hub.encode(sentence))[0], batched[i], atol=1e-5, rtol=0)


def test_fill_mask(hub):
    filled = hub.fill_mask("Return a new <mask>.", topk=3)
    assert len(filled) == 3
    assert all(isinstance(text, str) and 0 <= score <= 1 for text, score, _ in filled)


def test_too_long_input_is_a_clear_error(hub):
    tokens = torch.full((1, 65), 10, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds maximum length|exceeds max_positions"):
        hub.extract_features(tokens)


def test_missing_sentencepiece_model_is_a_clear_error(trained_mlm, tmp_path):
    save_dir, _ = trained_mlm
    with pytest.raises(FileNotFoundError, match="no sentencepiece model"):
        LinformerModel.from_pretrained(str(save_dir), "checkpoint_last.pt", str(tmp_path))


def test_checkpoint_and_dictionary_that_do_not_match(trained_mlm):
    """A model built for another dictionary refuses the checkpoint with a clear message."""
    from conftest import build_tiny_model

    save_dir, _ = trained_mlm
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)["model"]
    model, _ = build_tiny_model(max_positions=64, compressed_dim=16)  # a 55-entry dictionary
    with pytest.raises(ValueError, match="vocabulary has \\d+ entries but the data's dictionary has 55"):
        model.load_state_dict(state)
