"""Which lease a row was produced under: the camera's latest token taken before the row's capture time."""
from pipeline.cluster.fencing import KEPT_PER_CAMERA, LeaseBook


def test_a_row_belongs_to_the_latest_lease_taken_before_it_was_captured():
    book = LeaseBook()
    book.took("cam-1", 7, 1_000)
    book.took("cam-1", 12, 5_000)  # lost in between, taken again later
    book.took("cam-2", 9, 2_000)
    assert book.token_for("cam-1", 999) is None  # before this instance ever held it
    assert [book.token_for("cam-1", t) for t in (1_000, 4_999, 5_000, 9_000)] == [7, 7, 12, 12]
    assert book.token_for("cam-2", 1_500) is None and book.token_for("cam-2", 2_500) == 9
    assert book.token_for("cam-3", 9_000) is None


def test_a_camera_taken_again_and_again_keeps_only_its_latest_tokens():
    book = LeaseBook()
    for token in range(1, 1001):
        book.took("cam-1", token, token * 100)
    assert book.token_for("cam-1", 1000 * 100) == 1000 and book.token_for("cam-1", 990 * 100 + 50) == 990
    assert book.token_for("cam-1", (1000 - KEPT_PER_CAMERA) * 100) is None  # forgotten: the database vouches
    assert len(book._taken["cam-1"]) == KEPT_PER_CAMERA


def test_after_the_clock_stepped_back_a_row_belongs_to_the_lease_taken_last_before_its_capture():
    """The host's clock ran ahead when cam-1 was taken with token 2; NTP stepped it back 6 s; cam-1 was lost and taken
    again (token 3). Rows it captures now are token 3's (the current lease), not the ended token 1's (refused)."""
    book = LeaseBook()
    book.took("cam-1", 1, 1_000)
    book.took("cam-1", 2, 9_000)
    book.took("cam-1", 3, 3_000)  # after the step back
    assert [book.token_for("cam-1", t) for t in (3_000, 4_000, 8_999, 9_500)] == [3, 3, 3, 3]
    assert book.token_for("cam-1", 2_000) == 1 and book.token_for("cam-1", 999) is None
