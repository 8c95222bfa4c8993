import pytest

from geomlens.errors import InputError
from geomlens.kv.layer_map import LayerMap, check_spec


@pytest.mark.parametrize("spec, source", [
    ("all", (0, 0, 0, 0, 0, 0)),
    ("none", (0, 1, 2, 3, 4, 5)),
    (">=3", (0, 1, 2, 0, 0, 0)),
    (">=1", (0, 0, 0, 0, 0, 0)),
    ("3,5", (0, 1, 2, 0, 4, 0)),
    ("2", (0, 1, 0, 3, 4, 5)),
    ("cla", (0, 0, 2, 2, 4, 4)),
    ("lckv", (5, 5, 5, 5, 5, 5)),
    ("0_0_0_0_0_0", (0, 0, 0, 0, 0, 0)),
    ("0_0_2_2_2_5", (0, 0, 2, 2, 2, 5)),
    (" ALL ", (0, 0, 0, 0, 0, 0)),
])
def test_parse(spec, source):
    lm = LayerMap.parse(spec, 6)
    assert lm.source == source
    assert lm.consumers == tuple(layer for layer, s in enumerate(source) if s != layer)
    assert lm.layer_types == "_".join(map(str, source))


def test_properties():
    lm = LayerMap.parse("all", 30)
    assert lm.sources == (0,) and lm.cache_reduction == 30 and lm.is_causal
    assert LayerMap.parse("cla", 6).cache_reduction == 2
    assert not LayerMap.parse("lckv", 6).is_causal
    assert LayerMap.none(3).consumers == () and LayerMap.own(3).consumers == (0, 1, 2)
    assert LayerMap.only(2, 4).source == (0, 1, 0, 3)
    assert LayerMap.only(3, 4, source=1).source == (0, 1, 2, 1)


def test_first_of_type_gemma():
    types = ["local"] * 5 + ["global"] + ["local"] * 5 + ["global"] + ["local"] * 5 + ["global"]
    lm = LayerMap.parse("first_of_type", 18, attn_types=types)
    assert lm.source == tuple(5 if t == "global" else 0 for t in types)
    assert lm.sources == (0, 5) and lm.cache_reduction == 9
    assert LayerMap.parse("first_of_type", 4).source == (0, 0, 0, 0)  # one type = "all"


@pytest.mark.parametrize("spec, n, message", [
    ("every", 4, "Bad layer spec"),
    (">=0", 4, "m must be in 1..3"),
    (">=4", 4, "m must be in 1..3"),
    ("0,2", 4, "use layers in 1..3"),
    ("4", 4, "use layers in 1..3"),
    ("2,2", 4, "repeats"),
    ("0_0_0", 4, "has 3 entries"),
    ("0_0_1_0", 4, "does not keep its own"),
    ("0_0_9_0", 4, "outside 0..3"),
    ("1,", 4, "Bad layer spec"),
])
def test_errors(spec, n, message):
    with pytest.raises(InputError, match=message) as info:
        LayerMap.parse(spec, n)
    assert "\n" not in str(info.value)


def test_first_of_type_length_mismatch():
    with pytest.raises(InputError, match="attn_types has 2 entries"):
        LayerMap.parse("first_of_type", 4, attn_types=["local", "global"])


def test_check_spec_needs_no_model():
    for spec in ("all", ">=12", "3,5,7", "0_0_2_2", "cla", "first_of_type", "lckv", "none"):
        check_spec(spec)
    with pytest.raises(InputError):
        check_spec(">= 3")
