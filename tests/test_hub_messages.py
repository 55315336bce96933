"""Too-long input: one error, worded for Python callers, from every hub entry point."""

import pytest
import torch

from linformer_plugin.models import LinformerModel

pytestmark = pytest.mark.slow  # trains the session's tiny masked LM with fairseq-train


@pytest.fixture(scope="module")
def hub(trained_mlm, data_bin):
    save_dir, _ = trained_mlm
    return LinformerModel.from_pretrained(str(save_dir), "checkpoint_last.pt", data_bin).eval()


TOO_LONG = r"input of (\d+) tokens \(with <s> and </s>\) exceeds max_positions=64 of this model: pass at most 64"


def test_every_entry_point_gives_the_same_message(hub):
    hub.register_classification_head("two", num_classes=2)
    text = " ".join(["file"] * 80)
    calls = {
        "extract_features": lambda: hub.extract_features(hub.encode(text)),
        "predict": lambda: hub.predict("two", hub.encode(text)),
        "fill_mask": lambda: hub.fill_mask(text + " <mask>."),
        "extract_features (batch)": lambda: hub.extract_features(hub.encode_batch(["a file.", text])),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=TOO_LONG) as info:
            call()
        assert "extend_linformer_positions" in str(info.value) and "--" not in str(info.value), (name, info.value)
    assert hub.extract_features(torch.full((1, 64), 10, dtype=torch.long)).shape[:2] == (1, 64)
    assert len(hub.fill_mask(" ".join(["file"] * 10) + " <mask>.", topk=2)) == 2
