"""`weights_tied` / `tie_scale`: exact W_U = W_E^T (or W_E = c W_U^T), remembered until a
parameter changes."""

import math

import torch

from geomlens.models.weights import tie_scale, weights_tied


def test_weights_tied_follows_in_place_changes(tiny_model):
    model = tiny_model
    W_E, W_U = model.W_E, model.W_U
    expected = bool(torch.equal(W_U, W_E.T))
    assert weights_tied(model) is expected
    before = W_U.detach().clone()
    with torch.no_grad():
        W_U.copy_(W_E.T)
        assert weights_tied(model) is True  # the version counter moved: compared again
        W_U[0, 0] += 1.0
        assert weights_tied(model) is False
        W_U.copy_(before)
    assert weights_tied(model) is expected


def test_tie_scale_finds_an_exact_positive_multiple(tiny_model):
    model = tiny_model
    W_E, W_U = model.W_E, model.W_U
    before = W_U.detach().clone()
    c = torch.tensor(math.sqrt(model.cfg.d_model), dtype=torch.float32)
    with torch.no_grad():
        W_U.copy_(W_E.T)
        assert tie_scale(model) == 1.0
        W_E.copy_(W_U.T * c)  # Gemma: the embedding scale folded into W_E
        assert tie_scale(model) == float(c) and weights_tied(model) is False
        W_E[1, 2] += 1.0
        assert tie_scale(model) is None  # one value off: not a multiple
        W_E.copy_(-W_U.T)
        assert tie_scale(model) is None  # a negative multiple reverses distances: refused
        W_E.copy_(W_U.T)
        W_U.copy_(before)
