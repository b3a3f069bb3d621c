import numpy as np
import pytest

from ddecomp.errors import UserError
from ddecomp.loading.curriculum import CURRICULA, Curriculum, resolve_curriculum


def test_registry_odds_match_the_paper_for_six_buckets():
    assert list(Curriculum("grow-p2").odds_for(6)) == [32, 16, 8, 4, 2, 1]
    assert list(Curriculum("grow-linear").odds_for(6)) == [6, 5, 4, 3, 2, 1]
    assert list(Curriculum("uniform").odds_for(6)) == [1] * 6
    assert list(Curriculum("shrink-p2").odds_for(6)) == [1, 2, 4, 8, 16, 32]
    assert Curriculum("natural").is_shuffle
    assert set(CURRICULA) == {"natural", "uniform", "grow-p2", "grow-linear", "shrink-p2"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("grow-p2", Curriculum("grow-p2")),
        (" natural ", Curriculum("natural")),
        ("32,16,8", Curriculum("custom", odds=(32.0, 16.0, 8.0))),
        ([3, 2, 1], Curriculum("custom", odds=(3.0, 2.0, 1.0))),
        ("5", Curriculum("custom", odds=(5.0,))),
    ],
)
def test_resolve(spec, expected):
    assert resolve_curriculum(spec) == expected


def test_custom_odds_must_match_bucket_count_and_be_positive():
    c = resolve_curriculum([4, 2, 1])
    assert list(c.odds_for(3)) == [4, 2, 1]
    with pytest.raises(UserError, match=r"has 3 odds .* dataset has 6 buckets"):
        c.odds_for(6)
    with pytest.raises(UserError, match="finite number > 0"):
        resolve_curriculum([1, 0, 1])
    with pytest.raises(UserError, match="unknown curriculum 'grow-p3'"):
        resolve_curriculum("grow-p3")
    with pytest.raises(UserError, match="neither a name nor"):
        resolve_curriculum("1,x")


def test_json_round_trip():
    for spec in ("grow-p2", [32.0, 16.0, 1.0]):
        c = resolve_curriculum(spec)
        assert resolve_curriculum(c.to_json()) == c
    assert np.all(Curriculum("grow-p2").odds_for(1) == [1])


def test_layout_weights_of_olmo_core_and_the_symmetric_layout():
    from ddecomp.loading.curriculum import layout_weights

    odds = Curriculum("grow-p2").odds_for(6)
    olmo, sym = layout_weights(odds, "olmo-layout"), layout_weights(odds, "symmetric-layout")
    assert olmo[2].tolist() == [8, 16, 32, 4, 2, 1]  # OLMo-core: after the peak, bucket 0's values
    assert sym[2].tolist() == [8, 16, 32, 16, 8, 4]  # decays by distance on both sides
    assert np.array_equal(olmo[0], sym[0])  # the top-ranked and the last bucket agree
    assert np.array_equal(olmo[5], sym[5])
    assert (np.argmax(olmo, axis=1) == np.arange(6)).all()  # bucket i peaks in sub-cycle i
    # ranks follow the odds, not the position: shrink-p2 peaks the longest bucket first
    shrink = layout_weights(Curriculum("shrink-p2").odds_for(6), "olmo-layout")
    assert (np.argmax(shrink, axis=1) == np.arange(5, -1, -1)).all()
