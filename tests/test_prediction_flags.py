"""prediction_process.py's -nc: one K for all three models, or one per attribute."""
import argparse

import pytest

from prediction_process import cluster_counts, parse_args


def test_one_k_applies_to_all_three_models():
    assert cluster_counts("10") == [10, 10, 10]
    assert parse_args([]).num_clusters == [10, 10, 10]


def test_three_ks_are_act_dom_val():
    assert parse_args(["-nc", "30,30,10"]).num_clusters == [30, 30, 10]


@pytest.mark.parametrize("text, message", [("30,30", "one K or three"), ("1", "at least 2"),
                                           ("a,b,c", "must be an integer")])
def test_bad_cluster_counts_are_refused(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        cluster_counts(text)
