"""aeserve.Detector: scikit-learn's estimator checks, pipelines and grid search, DataFrames and
mixed tables, and a saved bundle that scores as the estimator does."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import aeserve
from aeserve import Detector
from aeserve.train.detector import KIND_PARAMETERS
from aeserve.train.options import KIND_OPTIONS

from conftest import mixed_rows


def auroc(scores, labels) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(labels, scores)


@parametrize_with_checks([Detector(hidden=(16,), latent=2, epochs=5)])
def test_scikit_learn_estimator_checks(estimator, check):
    """Every check of scikit-learn's own suite (the array-API one skips itself without SCIPY_ARRAY_API)."""
    check(estimator)


def test_every_kind_option_is_a_constructor_parameter():
    options = {name for record in KIND_OPTIONS.values() for name in record.names()} - {"free_seed"}
    assert set(KIND_PARAMETERS) == options  # free_seed follows random_state
    assert options <= set(Detector().get_params())


def test_detector_ranks_anomalies_above_normal_rows_and_follows_both_conventions(cancer):
    detector = Detector(kind="vae", hidden=(32, 16), latent=4, epochs=150).fit(cancer["train"])
    test = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    labels = np.r_[np.zeros(len(cancer["test_normal"])), np.ones(len(cancer["anomalies"]))]
    assert auroc(-detector.score_samples(test), labels) > 0.9
    energies = detector.model_.energy(test)["energy"]
    np.testing.assert_array_equal(detector.score_samples(test), -energies.astype(np.float64))
    np.testing.assert_array_equal(detector.predict(test) == -1, energies > detector.threshold_)
    assert detector.threshold_ == detector.model_.threshold  # contamination "auto": the bundle's threshold
    # PyOD's attributes: training energies, 0/1 labels at the threshold, [normal, anomaly] probabilities
    assert detector.decision_scores_.shape == (len(cancer["train"]),)
    np.testing.assert_array_equal(detector.labels_, detector.decision_scores_ > detector.threshold_)
    proba = detector.predict_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, 0], detector.p_values(test))
    share = Detector(hidden=(32, 16), latent=4, epochs=20, contamination=0.1).fit(cancer["train"]).labels_.mean()
    assert share == pytest.approx(0.1, abs=0.01)  # PyOD's contamination: that share of training rows


def test_pipeline_grid_search_and_clone(cancer):
    from sklearn.base import clone
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), Detector(hidden=(16,), latent=2, epochs=10))
    x = np.concatenate([cancer["test_normal"], cancer["anomalies"][:60]])
    y = np.r_[np.ones(100), -np.ones(60)]  # scikit-learn's outlier labels: -1 anomaly
    search = GridSearchCV(pipeline, {"detector__latent": [2, 4]}, cv=StratifiedKFold(2, shuffle=True, random_state=0),
                          scoring=make_scorer(lambda t, s: auroc(-s, t == -1), response_method="decision_function"))
    search.fit(x, y)
    assert search.best_params_["detector__latent"] in (2, 4) and search.best_score_ > 0.7
    copy = clone(Detector(kind="ae", sparsity=0.5, epochs=3))
    assert copy.get_params()["sparsity"] == 0.5 and not hasattr(copy, "model_")


def test_dataframe_names_are_kept_and_checked(cancer):
    import pandas as pd

    frame = pd.DataFrame(cancer["train"], columns=cancer["names"])
    detector = Detector(hidden=(16,), latent=2, epochs=5).fit(frame)
    assert list(detector.feature_names_in_) == cancer["names"]
    test = pd.DataFrame(cancer["test_normal"], columns=cancer["names"])
    np.testing.assert_array_equal(detector.score_samples(test), detector.score_samples(cancer["test_normal"]))
    with pytest.raises(ValueError, match="feature names"):
        detector.score_samples(test[cancer["names"][::-1]])


def test_mixed_table_fit_and_saved_bundle_scores_as_the_estimator(tmp_path):
    """A DataFrame with text, booleans and missing cells trains a mixed model; save() writes a
    bundle whose torch backend gives the estimator's energies bit for bit and whose ONNX graphs
    agree within the export's tolerance; pickling carries the bundle's files."""
    train, test = mixed_rows(600, seed=0), mixed_rows(200, seed=1, anomalies=True)
    detector = Detector(hidden=(32,), latent=3, epochs=20).fit(train)
    assert detector.model_.encoding is not None and detector.n_features_in_ == train.shape[1]
    energies = -detector.score_samples(test)
    saved = detector.save(tmp_path / "mixed")
    np.testing.assert_array_equal(aeserve.load(saved, backend="torch").energy(test)["energy"], energies)
    np.testing.assert_allclose(aeserve.load(saved, backend="onnxruntime").energy(test)["energy"], energies,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(aeserve.InputError, match="already exists"):
        detector.save(tmp_path / "mixed")
    again = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(-again.score_samples(test), energies)


def test_log_columns_of_a_numeric_dataframe_make_a_mixed_model_and_an_array_cannot_name_them():
    """``log`` (names or 'auto') marks heavy-tailed numeric columns; a DataFrame of numbers alone
    then trains through the typed-table path, the transform recorded in the bundle."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": x, "amount": np.exp(2 + 1.5 * x + rng.normal(0, 0.2, 400))})
    detector = Detector(hidden=(16,), latent=2, epochs=5, log="auto").fit(frame)
    assert [c.transform for c in detector.model_.bundle.manifest.input.columns] == [None, "log"]
    plain = Detector(hidden=(16,), latent=2, epochs=5).fit(frame)
    assert plain.model_.encoding is None  # without log: the plain numeric path, as before
    with pytest.raises(ValueError, match="an array has no names"):
        Detector(epochs=1, log="auto").fit(frame.to_numpy())
