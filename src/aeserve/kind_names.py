"""Names the CLI's choices need — the kinds a bundle may be, the threshold methods, how a series
row's score comes from its windows — without the
manifest's records (``aeserve --help`` stays fast) or torch. ``aeserve.manifest`` re-exports them."""

__all__ = ["KNOWN_KINDS", "THRESHOLD_METHODS", "WINDOW_SCORES"]

#: every kind ``train/kinds.py`` registers; a test holds the two equal
KNOWN_KINDS = ("ae", "cae", "dae", "lvm", "vae")

#: how a threshold may be calibrated (``aeserve.thresholds``): a quantile at a target FPR, best F1, peaks over threshold
THRESHOLD_METHODS = ("quantile", "f1", "pot")

#: how a series row's score comes from the windows that contain it (``aeserve.serve.series_rows``)
WINDOW_SCORES = ("last", "mean", "max")
