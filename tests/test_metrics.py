"""Metrics of eval.py against closed forms and handmade cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import special_ortho_group

from eval import (Judges, accuracy, cosine_score, frechet_distance, inception_score, judged,
                  kl_divergence, mean_pairwise_distance, multilabel_set_accuracy, recall_at_k,
                  spearman)
from model import Judge, heads_loss


def exact_samples(n, mean, cov, seed):
    """n samples (n, D) whose sample mean and (ddof=1) covariance are exactly mean and cov."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    cov_z = np.atleast_2d(np.cov(z, rowvar=False))                         # (D, D)
    z = z @ np.linalg.inv(np.linalg.cholesky(cov_z)).T                      # sample cov = I
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_sampled_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1 = np.array([0.0, 1.0, -1.0, 2.0])
    mu2 = np.array([0.5, 1.0, 0.0, 1.0])
    s1 = np.array([1.0, 2.0, 0.5, 1.0])
    s2 = np.array([1.5, 1.0, 0.5, 3.0])
    x = rng.normal(mu1, s1, (40000, 4))
    y = rng.normal(mu2, s2, (40000, 4))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)            # 2.25 + 5.25 = 7.5
    assert frechet_distance(x, y) == pytest.approx(expected, abs=0.1)


def test_frechet_distance_exact_for_commuting_covariances():
    rot = special_ortho_group.rvs(5, random_state=1)
    a = np.array([1.0, 4.0, 0.25, 2.0, 9.0])
    b = np.array([4.0, 1.0, 1.0, 2.0, 0.01])
    mu1 = np.arange(5.0)
    mu2 = np.arange(5.0)[::-1]
    x = exact_samples(50, mu1, rot @ np.diag(a) @ rot.T, seed=2)
    y = exact_samples(70, mu2, rot @ np.diag(b) @ rot.T, seed=3)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-8)
    fd_tensors = frechet_distance(torch.tensor(x, dtype=torch.float64), torch.tensor(y))
    assert fd_tensors == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_one_dimension_and_identical_sets():
    x = exact_samples(30, np.zeros(1), np.eye(1), seed=4)
    y = exact_samples(30, np.array([3.0]), np.array([[4.0]]), seed=5)
    assert frechet_distance(x, y) == pytest.approx(9.0 + 1.0, rel=1e-9)     # (0-3)^2 + (1-2)^2
    z = np.random.default_rng(6).standard_normal((200, 16))
    assert abs(frechet_distance(z, z.copy())) < 1e-6


def test_frechet_distance_few_samples_is_finite():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 32))                    # rank-deficient covariances
    y = rng.standard_normal((8, 32)) + 1
    fd = frechet_distance(x, y)
    assert np.isfinite(fd)
    assert fd > 0
    with pytest.raises(ValueError):
        frechet_distance(x[:1], y)


def test_accuracy_and_multilabel_set_accuracy():
    target = np.array([0, 1, 2, 2])
    assert accuracy(np.array([0, 1, 1, 2]), target) == 0.75
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5]])
    assert accuracy(logits, torch.tensor(target)) == 0.75
    probs = np.array([[0.9, 0.8, 0.1], [0.9, 0.2, 0.1], [0.6, 0.4, 0.7], [0.1, 0.1, 0.1]])
    multi = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0]])
    assert multilabel_set_accuracy(probs, multi) == 0.75                    # row 1 misses a member
    # only the empty set still matches
    assert multilabel_set_accuracy(probs, multi, threshold=0.95) == 0.25


def test_a_one_choice_judge_is_scored_on_its_argmax():
    """A judge trained with cross-entropy (multilabel=()) names one source whatever its sigmoids."""
    logits = {'sources': torch.tensor([[2.0, 1.0, -1.0], [-3.0, -2.0, -4.0]])}  # (2, 3)
    judges = object.__new__(Judges)                                     # no checkpoint to read
    judges.nets = {'audio': Judge('audio', heads=(('sources', 3),), multilabel=())}
    assert judges.source_sets('audio', logits).tolist() == [[True, False, False],
                                                            [False, True, False]]
    judges.nets['audio'].multilabel = ('sources',)
    assert judges.source_sets('audio', logits).tolist() == [[True, True, False],
                                                            [False, False, False]]



def test_judged_scores_the_two_source_rows_apart():
    """mix_recall counts the sources heard of two-source rows, mix_exact their exact sets."""
    heard = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1]]) * 10.0 - 5.0   # (4, 3)
    judges = object.__new__(Judges)                                     # no checkpoint to read
    judges.nets = {'audio': Judge('audio', heads=(('sources', 3),))}
    judges.logits = lambda modality, media: {'sources': media}
    labels = {'sources': np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1]])}
    out = judged(judges, 'audio', heard, labels, 'a2i.')
    assert out['a2i.source_acc'] == 0.5                                 # rows 0 and 1
    assert out['a2i.mix_recall'] == pytest.approx(4 / 6)                # 2 + 1 + 1 of 2 + 2 + 2
    assert out['a2i.mix_exact'] == pytest.approx(1 / 3)                 # row 1 of rows 1, 2, 3

def test_a_cross_entropy_head_takes_one_hot_rows_or_class_ids():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))        # (4, 5)
    ids = torch.tensor([0, 3, 1, 4])
    one_hot = F.one_hot(ids, 5).to(torch.uint8)                                    # as stored
    from_rows = heads_loss({'sources': logits}, {'sources': one_hot}, multilabel=())
    from_ids = heads_loss({'sources': logits}, {'sources': ids}, multilabel=())
    torch.testing.assert_close(from_rows, from_ids)
    torch.testing.assert_close(from_ids, F.cross_entropy(logits, ids))


def test_recall_at_k_handmade():
    # the long key wins under a dot product
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1], [100.0, 90.0]])
    key_labels = np.array([0, 1, 2, 3])
    queries = np.array([[1.0, 0.05], [0.1, 1.0], [-1.0, 0.0]])
    query_labels = np.array([0, 1, 1])
    recall = lambda labels, k: recall_at_k(queries, keys, labels, key_labels, k)
    assert recall(query_labels, 1) == pytest.approx(2 / 3)          # q2's nearest: key 2
    assert recall(query_labels, 2) == 1.0                           # q2's second: key 1
    q2_as_0 = np.array([0, 1, 0])
    assert recall(q2_as_0, 3) == pytest.approx(2 / 3)               # key 0 is q2's last
    assert recall(q2_as_0, 4) == 1.0
    from_tensors = recall_at_k(torch.tensor(queries), torch.tensor(keys), query_labels,
                               key_labels, 1)
    assert from_tensors == pytest.approx(2 / 3)


def test_spearman_monotone_and_reversed():
    x = np.random.default_rng(8).standard_normal(50)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)       # 1 - 6 * 2 / (4 * 15)


def test_inception_score_uniform_and_confident():
    n_classes = 5
    assert inception_score(np.zeros((100, n_classes))) == pytest.approx(1.0)
    one_hot = 100.0 * np.eye(n_classes)                                     # (5, 5) logits
    sorted_one_hot = one_hot[np.repeat(np.arange(n_classes), 200)]          # class-sorted (1000, 5)
    assert inception_score(sorted_one_hot, splits=1) == pytest.approx(n_classes, rel=1e-6)
    assert inception_score(sorted_one_hot, splits=10) > 0.95 * n_classes  # shuffled, then split
    one_class = one_hot[np.zeros(100, int)]                                 # (100, 5)
    assert inception_score(one_class, splits=1) == pytest.approx(1.0)


def test_kl_divergence():
    logits = np.random.default_rng(9).standard_normal((20, 7))
    assert abs(kl_divergence(logits, logits)) < 1e-12
    assert abs(kl_divergence(logits, logits + 3.0)) < 1e-12     # softmax ignores shifts
    p = np.log([[0.5, 0.5]])
    q = np.log([[0.9, 0.1]])
    assert kl_divergence(p, q) == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))
    assert kl_divergence(q, p) == pytest.approx(0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5))
    half_same = kl_divergence(np.vstack([p, p]), np.vstack([p, q]))
    assert half_same == pytest.approx(kl_divergence(p, q) / 2)


def test_mean_pairwise_distance_and_cosine_score():
    points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(points) == pytest.approx(10 / 3)
    with pytest.raises(ValueError):
        mean_pairwise_distance(np.ones((1, 3)))
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert cosine_score(a, 5 * a) == pytest.approx(100.0)
    assert cosine_score(a, -a) == pytest.approx(-100.0)
    b = np.array([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    assert cosine_score(a, b) == pytest.approx(100 * np.sqrt(0.5) / 3)
