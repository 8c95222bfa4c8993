"""One cached instance per real model per test session. Treat them as read-only."""

import pytest


@pytest.fixture(scope="session")
def smollm2():
    from geomlens.models import load_model

    model = load_model("smollm2-135m", device="cpu")
    assert model.cfg.n_layers == 30 and model.cfg.d_vocab == 49152
    return model


@pytest.fixture(scope="session")
def gemma3():
    from geomlens.models import load_model

    model = load_model("gemma3-270m", device="cpu")
    assert model.cfg.n_layers == 18 and model.cfg.d_vocab == 262144
    return model


@pytest.fixture(scope="session")
def eval_texts():
    from geomlens.data import load_corpus

    ds = load_corpus(n_segments=1)
    return list(ds["text"])
