from mmimdb_dist.data.sources.mmimdb.genres import (
    DROPPED_GENRES,
    GENRES,
    NUM_GENRES,
    canonical_genre,
    map_genres,
    multi_hot,
)


def test_genre_list_is_the_benchmark_list():
    assert NUM_GENRES == 23
    assert GENRES[:3] == ("Drama", "Comedy", "Romance")
    assert GENRES[-1] == "Film-Noir"
    assert not set(GENRES) & DROPPED_GENRES
    assert {"Adult", "News", "Reality-TV", "Talk-Show"} == DROPPED_GENRES


def test_mapping_drops_sorts_and_reports_unknown():
    kept, unknown = map_genres(["Horror", "drama", "Adult", "sci-fi", "Talk-Show", "Polka", "Drama"])
    assert kept == ["Drama", "Horror", "Sci-Fi"]  # frequency order, deduplicated
    assert unknown == ["Polka"]
    assert canonical_genre(" Film Noir ") == "Film-Noir"


def test_multi_hot_uses_frequency_order():
    vec = multi_hot(["Film-Noir", "Drama"])
    assert len(vec) == 23
    assert vec[0] == 1
    assert vec[22] == 1
    assert sum(vec) == 2
