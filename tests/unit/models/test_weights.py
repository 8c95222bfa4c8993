"""`weights_tied`: exact W_U = W_E^T, remembered until a parameter changes."""

import torch

from geomlens.models.weights import weights_tied


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
