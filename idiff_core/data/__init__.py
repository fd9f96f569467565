"""Obtaining the datasets and weights the paper configuration needs: downloads, archives, FFHQ, LFW, LDM."""


class DatasetError(RuntimeError):
    """A dataset is incomplete or holds bad files; the message names them and says how to fix it."""
