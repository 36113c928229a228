"""The kinds a bundle may be, by name: all the CLI's ``--kind`` choices need, without the
manifest's records (``aeserve --help`` stays fast) or torch."""

__all__ = ["KNOWN_KINDS"]

#: every kind ``train/kinds.py`` registers; a test holds the two equal
KNOWN_KINDS = ("ae", "cae", "dae", "lvm", "vae")
