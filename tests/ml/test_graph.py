"""The like graph's matrices mean what ``LikeGraph`` says."""

import numpy as np

from recommender.ml.graph import USER_DAMPING, like_graph_build


def test_the_damped_hop_is_forward_with_each_likers_rows_damped():
    graph = like_graph_build(4, np.array([0, 0, 1, 2, 2]), np.array([1, 2, 2, 0, 1]))

    given = graph.likes_given.astype(np.float64)
    damping = np.where(given > 0, np.maximum(given, 1.0) ** -USER_DAMPING, 0.0)
    expected = damping[:, None] * graph.forward.toarray()
    assert np.allclose(graph.damped.toarray(), expected)
    assert np.allclose(graph.damped.toarray(), graph.backward.toarray().T)
    assert graph.damped.dtype == np.float32
