"""Ablation on smollm2-135m: text in (the model's own tokenizer) equals token ids in."""

import pandas as pd
import pytest

import geomlens
from geomlens.ablation import ablation_table, sweep_conditions

pytestmark = pytest.mark.integration

TEXTS = ["The capital of France is Paris.", "Once upon a time there was a small cat."]


def test_text_in_equals_token_in(smollm2):
    conditions = sweep_conditions([0])
    by_text, clean = ablation_table(smollm2, TEXTS, conditions, method="zero")
    by_ids, _ = ablation_table(smollm2, [smollm2.to_tokens(t)[0] for t in TEXTS], conditions, method="zero")
    pd.testing.assert_frame_equal(by_text, by_ids)
    assert clean["n_tokens"] == sum(len(smollm2.to_tokens(t)[0]) for t in TEXTS)
    result = geomlens.ablate(smollm2, TEXTS, sweep=True, layers=[0])
    pd.testing.assert_frame_equal(result.table, by_text)
    assert (result.table.delta_loss > 0).all()  # zeroing layer 0's attention or MLP hurts
    assert result.summary["model"] == "smollm2-135m"
