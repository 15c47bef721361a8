import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_library():
    """OpenMP/BLAS pools spin-wait; on a shared 2-core runner that turns seconds of
    gradient boosting into minutes. The library's results do not depend on it."""
    with threadpool_limits(limits=1):
        yield
