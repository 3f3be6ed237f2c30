"""Converters that make engine datasets (``data/folder_store.py``) from other sources: a diffworld run's
dataset or episodes recorded in ``play`` (``from_run``), a Gymnasium environment played by a random policy or
a diffworld agent (``from_gym``), and the official CS:GO HDF5 files (``from_csgo_hdf5``)."""
