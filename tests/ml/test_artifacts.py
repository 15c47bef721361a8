import numpy as np
import pytest

from recommender.ml.artifacts import ArtifactChecksumError, dumps, loads, sha256_hex

UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)
    return "unpickled"


class Tripwire:
    """Unpickling this object runs ``record_unpickling``."""

    def __reduce__(self):
        return (record_unpickling, ())


@pytest.fixture(autouse=True)
def _clear():
    UNPICKLED.clear()


def test_round_trip_with_the_right_checksum():
    obj = {"weights": np.arange(5, dtype=np.float32), "name": "x"}
    data = dumps(obj)

    loaded = loads(data, expected_sha256=sha256_hex(data))

    assert loaded["name"] == "x"
    assert np.array_equal(loaded["weights"], obj["weights"])
    assert loaded["weights"].dtype == np.float32


def test_the_tripwire_fires_when_loaded_legitimately():
    data = dumps(Tripwire())

    assert loads(data, expected_sha256=sha256_hex(data)) == "unpickled"
    assert UNPICKLED == [True]


def test_checksum_mismatch_is_refused_before_unpickling():
    data = dumps(Tripwire())

    with pytest.raises(ArtifactChecksumError):
        loads(data, expected_sha256="0" * 64)
    assert UNPICKLED == []


def test_tampered_bytes_are_refused_before_unpickling():
    data = dumps(Tripwire())
    expected = sha256_hex(data)
    tampered = data[:-1] + bytes([data[-1] ^ 1])

    with pytest.raises(ArtifactChecksumError):
        loads(tampered, expected_sha256=expected)
    with pytest.raises(ArtifactChecksumError):
        loads(data[:-10], expected_sha256=expected)
    with pytest.raises(ArtifactChecksumError):
        loads(data, expected_sha256="")
    assert UNPICKLED == []
